//! Client → server commands: JSON text frames with an `action` field.
//!
//! The plain forms the first dashboards sent are accepted byte for byte:
//! `{"action":"subscribe","channels":["routing-metrics","alerts"]}`. Every command may
//! carry an `id` (a number or a string) that the server echoes in its reply or error,
//! so a client can match answers to questions. Unknown fields are ignored, so a newer
//! client can talk to an older server.
//!
//! [`decode_command`] parses in two passes: first only `action` and `id`, so that even
//! a command with broken fields gets an error carrying its `id`, and an unknown action
//! is told apart (`UNKNOWN_ACTION`) from a malformed known one (`BAD_REQUEST`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ErrorCode;

/// The longest string a command id may be, in bytes: ids are echoed in every reply, so a
/// long one would multiply what a command costs the server.
pub const MAX_COMMAND_ID_BYTES: usize = 64;

/// A command's correlation id, echoed in the reply: a number or a string of at most
/// [`MAX_COMMAND_ID_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(untagged)]
pub enum CommandId {
    Number(u64),
    Text(String),
}

// By hand rather than `#[serde(untagged)]`: untagged decoding buffers the input and
// costs a lot of code in the wasm client for two cases.
impl<'de> Deserialize<'de> for CommandId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CommandId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer or a string of at most 64 bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CommandId, E> {
                Ok(CommandId::Number(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CommandId, E> {
                u64::try_from(n)
                    .map(CommandId::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CommandId, E> {
                if s.len() > MAX_COMMAND_ID_BYTES {
                    return Err(E::invalid_length(s.len(), &self));
                }
                Ok(CommandId::Text(s.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Every command a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Command {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Publish(Publish),
    Ping(Ping),
    Refresh(Refresh),
}

impl Command {
    /// The actions this protocol version knows, as they appear on the wire.
    pub const ACTIONS: [&'static str; 5] = ["subscribe", "unsubscribe", "publish", "ping", "refresh"];

    /// The command's correlation id, if it has one.
    pub fn id(&self) -> Option<&CommandId> {
        match self {
            Command::Subscribe(c) => c.id.as_ref(),
            Command::Unsubscribe(c) => c.id.as_ref(),
            Command::Publish(c) => c.id.as_ref(),
            Command::Ping(c) => c.id.as_ref(),
            Command::Refresh(c) => c.id.as_ref(),
        }
    }
}

/// Subscribe to channels; with `since`, recover what was missed on each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Subscribe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub channels: Vec<String>,
    /// Channel → the last position the client saw there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub since: Option<BTreeMap<String, StreamPosition>>,
    /// How every channel of this command is delivered; absent, as today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub options: Option<SubscribeOptions>,
}

/// What a subscription asks of its delivery. Every field is optional and off by
/// default, so a client that sends none sees what clients always saw; an unknown field
/// is refused (BAD_REQUEST) rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscribeOptions {
    /// Mark the end of the subscription's snapshot with `snapshot-end`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub snapshot_end: bool,
    /// Only publications of these message types (at most
    /// [`MAX_FILTER_TYPES`](crate::filter::MAX_FILTER_TYPES)); see [`crate::filter`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub types: Option<Vec<String>>,
    /// Only keyed publications with these keys (at most
    /// [`MAX_FILTER_KEYS`](crate::filter::MAX_FILTER_KEYS)); unkeyed ones pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub keys: Option<Vec<String>>,
    /// At least this many milliseconds between two updates of one key (see
    /// [`crate::rate`]); the server grants an interval at least this and says which in
    /// `subscribed.minInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub min_interval: Option<u64>,
    /// Send keyed object values as field deltas against the previous value of the key
    /// this subscription was sent (see [`crate::delta`]); `subscribed.deltas` says
    /// whether they were granted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub deltas: bool,
}

impl SubscribeOptions {
    /// The filter these options ask for (`None`: everything), or why it is refused.
    pub fn filter(&self) -> Result<Option<crate::filter::Filter>, crate::filter::FilterError> {
        crate::filter::Filter::new(self.types.as_deref(), self.keys.as_deref())
    }

    /// The rate granted for `minInterval` under the node's floor (`None`: unthrottled),
    /// or why it is refused.
    pub fn rate(&self, floor_ms: u64) -> Result<Option<crate::rate::Rate>, crate::rate::RateError> {
        self.min_interval.map(|asked| crate::rate::Rate::grant(asked, floor_ms)).transpose()
    }
}

/// Stop receiving channels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Unsubscribe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub channels: Vec<String>,
}

/// Publish one message to a channel (needs a `publish` grant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Publish {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    #[serde(flatten)]
    pub publication: NewPublication,
}

/// Ask for a `pong`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Ping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
}

/// Replace the connection's token before it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Refresh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub token: String,
}

/// What a publication does to its channel's table of latest values per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// The key's new value (a publication without a key is a fact in a stream).
    #[default]
    Upsert,
    /// The key leaves the table: it is no longer in the snapshot, and subscribers get
    /// this publication (needs a key).
    Delete,
    /// Every key leaves the table (takes no key).
    Clear,
}

impl Op {
    pub fn is_upsert(&self) -> bool {
        *self == Op::Upsert
    }
}

/// A message to publish, as the `publish` command and `POST /api/publish` take it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct NewPublication {
    pub channel: String,
    /// The application's message type, e.g. `routing-decision`.
    #[serde(rename = "type")]
    pub kind: String,
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub data: Value,
    /// Publications with a key are conflated under backpressure and kept as the
    /// channel's latest value for that key (the snapshot a new subscriber gets first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub key: Option<String>,
    /// A key the publisher chooses (at most [`MAX_IDEMPOTENCY_KEY_BYTES`]) so that the
    /// same publication sent twice (resent after a lost link, retried after a timeout) is
    /// published once: within the server's idempotency window, a publish with a key it
    /// has seen on the channel is answered with the first one's seq and not published.
    #[serde(default, rename = "idempotencyKey", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub idempotency_key: Option<String>,
    /// `delete` (with a key) or `clear` (without one) change the channel's table of
    /// latest values; absent, the publication is an upsert.
    #[serde(default, skip_serializing_if = "Op::is_upsert")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Op>", optional))]
    pub op: Op,
}

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 64;

/// Prefixes of the idempotency keys the node's own sources publish with (`pg:` for the
/// outbox, `kafka:` for Kafka): a client may not use them, or it could publish ahead of
/// a source's event under that event's key and have the event recognised as a repeat.
pub const RESERVED_IDEMPOTENCY_PREFIXES: [&str; 2] = ["pg:", "kafka:"];

/// Whether `key` belongs to the node's own sources.
pub fn is_reserved_idempotency_key(key: &str) -> bool {
    RESERVED_IDEMPOTENCY_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

/// Where a client last was in a channel's stream.
///
/// On the wire either a bare seq (`17`) or `{"seq":17,"epoch":"…"}`. With an epoch, the
/// server recovers only from the same stream: after its history was lost the epoch
/// differs and the answer is `recovered: false`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(type = "number | { seq: number, epoch?: string }"))]
pub struct StreamPosition {
    pub seq: u64,
    pub epoch: Option<String>,
}

impl Serialize for StreamPosition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct WithEpoch<'a> {
            seq: u64,
            epoch: &'a str,
        }
        match &self.epoch {
            None => serializer.serialize_u64(self.seq),
            Some(epoch) => WithEpoch { seq: self.seq, epoch }.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StreamPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Seq(u64),
            WithEpoch { seq: u64, epoch: Option<String> },
        }
        match Wire::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("a stream position is a seq number or {\"seq\": number, \"epoch\": string}")
        })? {
            Wire::Seq(seq) => Ok(StreamPosition { seq, epoch: None }),
            Wire::WithEpoch { seq, epoch } => Ok(StreamPosition { seq, epoch }),
        }
    }
}

/// Encodes a `publish` command whose `data` is already JSON text, without building a
/// JSON tree: what a browser client does after the page's own `JSON.stringify`. The
/// result decodes exactly like the serde form of [`Command::Publish`].
///
/// `data_json` must be valid JSON (it is embedded as is).
pub fn encode_publish(channel: &str, kind: &str, data_json: &str, key: Option<&str>, op: Op) -> crate::EncodedMessage {
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    let mut command =
        format!(r#"{{"action":"publish","channel":{},"type":{},"data":{data_json}"#, quote(channel), quote(kind));
    if let Some(key) = key {
        command.push_str(&format!(r#","key":{}"#, quote(key)));
    }
    match op {
        Op::Upsert => {}
        Op::Delete => command.push_str(r#","op":"delete""#),
        Op::Clear => command.push_str(r#","op":"clear""#),
    }
    command.push('}');
    crate::EncodedMessage::from_json_object_text(command)
}

/// A `publish` command made by [`encode_publish`] (or the serde form of
/// [`Command::Publish`] without an id, which starts the same way) with its `id` and
/// `idempotencyKey` put in front, without re-encoding `data`: what a client sends, and
/// sends again after a lost link. `None` for text of another shape.
pub fn publish_with_id(command: &crate::EncodedMessage, id: u64, idempotency_key: &str) -> Option<String> {
    const HEAD: &str = r#"{"action":"publish","#;
    let rest = command.as_str().strip_prefix(HEAD)?;
    let quoted = serde_json::to_string(idempotency_key).ok()?;
    Some(format!(r#"{HEAD}"id":{id},"idempotencyKey":{quoted},{rest}"#))
}

/// A command that could not be decoded, with everything the `error` reply needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    /// The command's id, when it could be read.
    pub id: Option<CommandId>,
}

/// Decodes one text frame into a command. Never panics, whatever the input.
pub fn decode_command(text: &str) -> Result<Command, CommandError> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        action: Option<Cow<'a, str>>,
        #[serde(default)]
        id: Option<CommandId>,
    }

    let bad = |message: String, id: Option<CommandId>| CommandError { code: ErrorCode::BadRequest, message, id };
    let head: Head<'_> = match serde_json::from_str(text) {
        Ok(head) => head,
        Err(e) if e.is_syntax() || e.is_eof() => return Err(bad(format!("not valid JSON: {e}"), None)),
        Err(_) => return Err(bad(head_shape_error(text), None)),
    };
    let Some(action) = head.action else {
        return Err(bad("missing \"action\"".to_owned(), head.id));
    };
    if !Command::ACTIONS.contains(&action.as_ref()) {
        let shown: String = action.chars().take(64).collect();
        return Err(CommandError {
            code: ErrorCode::UnknownAction,
            message: format!("unknown action {shown:?}; expected one of {}", Command::ACTIONS.join(", ")),
            id: head.id,
        });
    }
    serde_json::from_str::<Command>(text).map_err(|e| bad(format!("invalid {action} command: {e}"), head.id))
}

/// Explains why valid JSON could not even yield `action` and `id`.
fn head_shape_error(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => match map.get("action") {
            Some(Value::String(_)) | None => {
                format!("\"id\" must be a non-negative integer or a string of at most {MAX_COMMAND_ID_BYTES} bytes")
            }
            Some(_) => "\"action\" must be a string".to_owned(),
        },
        Ok(_) => "a command must be a JSON object".to_owned(),
        Err(e) => format!("not valid JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_subscribe_and_unsubscribe_are_accepted_byte_for_byte() {
        let sub = decode_command(r#"{"action":"subscribe","channels":["routing-metrics","alerts"]}"#).unwrap();
        assert_eq!(
            sub,
            Command::Subscribe(Subscribe {
                id: None,
                channels: vec!["routing-metrics".into(), "alerts".into()],
                since: None,
                options: None,
            })
        );
        assert_eq!(
            serde_json::to_string(&sub).unwrap(),
            r#"{"action":"subscribe","channels":["routing-metrics","alerts"]}"#
        );

        let unsub = decode_command(r#"{"action":"unsubscribe","channels":["routing-metrics"]}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&unsub).unwrap(),
            r#"{"action":"unsubscribe","channels":["routing-metrics"]}"#
        );
    }

    #[test]
    fn seed_four_channel_subscribe_with_whitespace() {
        let text = "{\n  action: 'x' }";
        assert_eq!(decode_command(text).unwrap_err().code, ErrorCode::BadRequest);
        let text = concat!(
            r#"{ "action": "subscribe", "channels": "#,
            r#"["routing-metrics", "lp-performance", "exposure-updates", "alerts"] }"#,
        );
        let Command::Subscribe(sub) = decode_command(text).unwrap() else { panic!() };
        assert_eq!(sub.channels.len(), 4);
    }

    #[test]
    fn since_accepts_bare_seq_and_epoch_form() {
        let text = r#"{"action":"subscribe","id":7,"channels":["a","b"],"since":{"a":10,"b":{"seq":3,"epoch":"e1"}}}"#;
        let cmd = decode_command(text).unwrap();
        let Command::Subscribe(sub) = &cmd else { panic!() };
        let since = sub.since.as_ref().unwrap();
        assert_eq!(since["a"], StreamPosition { seq: 10, epoch: None });
        assert_eq!(since["b"], StreamPosition { seq: 3, epoch: Some("e1".into()) });
        assert_eq!(cmd.id(), Some(&CommandId::Number(7)));
        assert_eq!(serde_json::to_string(&cmd).unwrap(), text);
    }

    #[test]
    fn publish_ping_refresh() {
        let text = concat!(
            r#"{"action":"publish","id":"p1","channel":"lp-performance","type":"lp-metrics","#,
            r#""data":{"lpName":"OANDA"},"key":"OANDA"}"#,
        );
        let cmd = decode_command(text).unwrap();
        let Command::Publish(p) = &cmd else { panic!() };
        assert_eq!(p.publication.kind, "lp-metrics");
        assert_eq!(p.publication.key.as_deref(), Some("OANDA"));
        assert_eq!(serde_json::to_string(&cmd).unwrap(), text);
        assert_eq!(
            decode_command(r#"{"action":"ping","id":1}"#).unwrap(),
            Command::Ping(Ping { id: Some(CommandId::Number(1)) })
        );
        assert_eq!(
            decode_command(r#"{"action":"refresh","token":"t"}"#).unwrap(),
            Command::Refresh(Refresh { id: None, token: "t".into() })
        );
    }

    #[test]
    fn errors_are_typed_and_keep_the_id() {
        let cases: &[(&str, ErrorCode, Option<CommandId>)] = &[
            ("", ErrorCode::BadRequest, None),
            ("not json", ErrorCode::BadRequest, None),
            ("[1,2]", ErrorCode::BadRequest, None),
            ("42", ErrorCode::BadRequest, None),
            (r#"{"channels":[]}"#, ErrorCode::BadRequest, None),
            (r#"{"action":5}"#, ErrorCode::BadRequest, None),
            (r#"{"action":"subscribe","id":{"x":1}}"#, ErrorCode::BadRequest, None),
            (r#"{"action":"subscribe","id":-1}"#, ErrorCode::BadRequest, None),
            (
                r#"{"action":"ping","id":"0123456789012345678901234567890123456789012345678901234567890123X"}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (r#"{"action":"dance","id":3}"#, ErrorCode::UnknownAction, Some(CommandId::Number(3))),
            (
                r#"{"action":"subscribe","id":"s","channels":"alerts"}"#,
                ErrorCode::BadRequest,
                Some(CommandId::Text("s".into())),
            ),
            (r#"{"action":"subscribe","id":4}"#, ErrorCode::BadRequest, Some(CommandId::Number(4))),
            (r#"{"action":"subscribe","channels":["a"],"since":{"a":-1}}"#, ErrorCode::BadRequest, None),
            (
                r#"{"action":"subscribe","channels":["a"],"since":{"a":18446744073709551616}}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (r#"{"action":"publish","channel":"a","type":"t"}"#, ErrorCode::BadRequest, None),
            (r#"{"action":"refresh"}"#, ErrorCode::BadRequest, None),
        ];
        for (text, code, id) in cases {
            let err = decode_command(text).unwrap_err();
            assert_eq!(err.code, *code, "{text}: {err}");
            assert_eq!(&err.id, id, "{text}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let text = format!(
            r#"{{"action":"publish","channel":"a","type":"t","data":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(decode_command(&text).unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn encode_publish_matches_the_serde_form() {
        let encoded =
            encode_publish("lp#\"x\"", "lp-metrics", r#"{"b":1,"a":[true,null,1.5]}"#, Some("OANDA"), Op::Upsert);
        let decoded = decode_command(encoded.as_str()).unwrap();
        let expected = Command::Publish(Publish {
            id: None,
            publication: NewPublication {
                channel: "lp#\"x\"".into(),
                kind: "lp-metrics".into(),
                data: serde_json::json!({"b": 1, "a": [true, null, 1.5]}),
                key: Some("OANDA".into()),
                ..Default::default()
            },
        });
        assert_eq!(decoded, expected);
        assert_eq!(encoded.as_str(), serde_json::to_string(&expected).unwrap());
        let no_key = encode_publish("a", "t", "7", None, Op::Upsert);
        assert_eq!(no_key.as_str(), r#"{"action":"publish","channel":"a","type":"t","data":7}"#);
        for op in [Op::Delete, Op::Clear] {
            let key = (op == Op::Delete).then_some("k");
            let encoded = encode_publish("a", "t", "null", key, op);
            let publication = NewPublication {
                channel: "a".into(),
                kind: "t".into(),
                data: serde_json::Value::Null,
                key: key.map(Into::into),
                op,
                ..Default::default()
            };
            let serde_form = Command::Publish(Publish { id: None, publication });
            assert_eq!(encoded.as_str(), serde_json::to_string(&serde_form).unwrap(), "{op:?} as serde writes it");
        }
    }

    #[test]
    fn publish_with_id_adds_the_envelope_without_touching_data() {
        let command = encode_publish("orders", "order", r#"{"n":1}"#, Some("k"), Op::Upsert);
        let text = publish_with_id(&command, 7, "c0ffee-12").unwrap();
        let Command::Publish(publish) = decode_command(&text).unwrap() else { panic!() };
        assert_eq!(publish.id, Some(CommandId::Number(7)));
        assert_eq!(publish.publication.idempotency_key.as_deref(), Some("c0ffee-12"));
        assert_eq!(publish.publication.data, serde_json::json!({"n": 1}));
        assert_eq!(publish.publication.key.as_deref(), Some("k"));
        let serde_form =
            crate::EncodedMessage::encode(&Command::Publish(Publish { id: None, publication: publish.publication }))
                .unwrap();
        assert!(publish_with_id(&serde_form, 8, "k2").is_some(), "the serde form starts the same way");
        assert_eq!(
            publish_with_id(&crate::EncodedMessage::encode(&serde_json::json!({"a": 1})).unwrap(), 1, "k"),
            None
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let cmd = decode_command(r#"{"action":"ping","future":true}"#).unwrap();
        assert_eq!(cmd, Command::Ping(Ping { id: None }));
    }
}
