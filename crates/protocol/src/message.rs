//! Server → client messages.
//!
//! A frame is always a JSON array of messages (see [`crate::codec`]), and every message
//! has `type` and `timestamp`. Two families share the `type` field:
//!
//! - **Publications** carry the application's type (`routing-decision`, `alert`, …) plus
//!   `channel`, `seq` (per channel, +1 per publication) and `data`.
//! - **Control messages** use the reserved types in [`CONTROL_TYPES`]. An application may
//!   not publish with a reserved type, so a decoder can always tell the two apart by
//!   `type` alone.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::command::{CommandId, Op};
use crate::{ErrorCode, Timestamp};

/// The `type` values control messages use; publications may not use them.
pub const CONTROL_TYPES: [&str; 10] = [
    "connected",
    "subscribed",
    "unsubscribed",
    "published",
    "refreshed",
    "error",
    "pong",
    "heartbeat",
    "gap",
    "snapshot-end",
];

/// The type of the publication a node makes when a connection subscribes to a channel
/// configured for presence events (`data`: `{user, connection}`).
pub const PRESENCE_JOIN: &str = "presence.join";
/// The type of the publication a node makes when that subscription ends.
pub const PRESENCE_LEAVE: &str = "presence.leave";

/// Which control message a [`ControlFields`] holds: one per [`Control`] variant, so a
/// reader matches on the kind instead of string literals that could drift from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlKind {
    Connected,
    Subscribed,
    Unsubscribed,
    Published,
    Refreshed,
    Error,
    Pong,
    Heartbeat,
    Gap,
    #[serde(rename = "snapshot-end")]
    SnapshotEnd,
}

impl ControlKind {
    /// Every kind, in the order of [`CONTROL_TYPES`].
    pub const ALL: [ControlKind; 10] = [
        ControlKind::Connected,
        ControlKind::Subscribed,
        ControlKind::Unsubscribed,
        ControlKind::Published,
        ControlKind::Refreshed,
        ControlKind::Error,
        ControlKind::Pong,
        ControlKind::Heartbeat,
        ControlKind::Gap,
        ControlKind::SnapshotEnd,
    ];

    /// Its `type` on the wire.
    pub fn as_str(self) -> &'static str {
        CONTROL_TYPES[self as usize]
    }

    /// The kind a message `type` names, if it is a control type.
    pub fn parse(kind: &str) -> Option<ControlKind> {
        CONTROL_TYPES.iter().position(|t| *t == kind).map(|i| ControlKind::ALL[i])
    }
}

/// The longest application message type, in characters.
pub const MAX_TYPE_LEN: usize = 128;

/// Why an application message type is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageTypeError {
    #[error("message type must be 1..={MAX_TYPE_LEN} characters")]
    Length,
    #[error("message type {0:?} is reserved for the server's own messages")]
    Reserved(String),
    #[error("message type contains {0:?}; use A-Z a-z 0-9 - _ . : /")]
    BadCharacter(char),
}

/// Checks an application message type: 1..=128 characters from `A–Z a–z 0–9 - _ . : /`,
/// not one of the [`CONTROL_TYPES`].
pub fn validate_message_type(kind: &str) -> Result<(), MessageTypeError> {
    if kind.is_empty() || kind.len() > MAX_TYPE_LEN {
        return Err(MessageTypeError::Length);
    }
    if let Some(c) = kind.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))) {
        return Err(MessageTypeError::BadCharacter(c));
    }
    if CONTROL_TYPES.contains(&kind) {
        return Err(MessageTypeError::Reserved(kind.to_owned()));
    }
    Ok(())
}

/// A type a publisher may publish with: a valid type that is neither a control type
/// nor one of the server's presence types ([`PRESENCE_JOIN`], [`PRESENCE_LEAVE`]), so
/// no publisher can forge a join or a leave. (A subscription's type filter may name
/// presence types: [`validate_message_type`] accepts them.)
pub fn validate_published_type(kind: &str) -> Result<(), MessageTypeError> {
    validate_message_type(kind)?;
    if kind == PRESENCE_JOIN || kind == PRESENCE_LEAVE {
        return Err(MessageTypeError::Reserved(kind.to_owned()));
    }
    Ok(())
}

/// One message in a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(untagged)]
pub enum ServerMessage {
    Publication(Publication),
    Control(Control),
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(deserializer)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| D::Error::custom("a message needs a string \"type\""))?;
        if CONTROL_TYPES.contains(&kind) {
            Control::deserialize(value).map(ServerMessage::Control).map_err(D::Error::custom)
        } else {
            Publication::deserialize(value).map(ServerMessage::Publication).map_err(D::Error::custom)
        }
    }
}

/// A message published to a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Publication {
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Timestamp,
    pub channel: String,
    /// Position in the channel: +1 for every publication, starting at 1.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub key: Option<String>,
    /// `delete` or `clear`: the key (or every key) left the channel's table; absent for
    /// an upsert.
    #[serde(default, skip_serializing_if = "Op::is_upsert")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Op>", optional))]
    pub op: Op,
    /// True for the latest-value-per-key messages a fresh subscription gets first. Their
    /// seqs are not newer than the subscription's head and need not be contiguous.
    #[serde(default, skip_serializing_if = "is_false")]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub snapshot: bool,
    /// Present on a field delta (see [`crate::delta`]): `data` is a JSON merge patch
    /// against this key's value at seq `base`, which the subscriber was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub base: Option<u64>,
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub data: Value,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Protocol-level messages, tagged by a reserved `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    Connected(Connected),
    Subscribed(Subscribed),
    Unsubscribed(Unsubscribed),
    Published(Published),
    Refreshed(Refreshed),
    Error(ErrorMessage),
    Pong(Pong),
    Heartbeat(Heartbeat),
    Gap(GapNotice),
    #[serde(rename = "snapshot-end")]
    SnapshotEnd(SnapshotEnd),
}

/// The first message on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    pub timestamp: Timestamp,
    pub connection_id: String,
    pub user_id: String,
    /// The server's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: u32,
    /// The server sends something at least this often; silence for longer (plus a
    /// grace) means the link is dead.
    pub heartbeat_interval_ms: u64,
    /// When the token expires; `refresh` before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub expires_at: Option<Timestamp>,
    pub limits: Limits,
}

/// The limits a connection lives under, so a client can stay within them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_batch: u32,
    pub batch_interval_ms: u64,
    pub max_queued_batches: u32,
    pub max_channels: u32,
    pub max_message_bytes: u32,
    pub commands_per_second: u32,
    /// Most commands the rate limit accepts at once (its bucket, refilled at
    /// `commands_per_second`).
    pub command_burst: u32,
    /// Bytes the server queues for this client before it drops publications (and,
    /// when replies alone exceed it, closes with 4002).
    pub max_queued_bytes: u32,
    /// How long the server remembers a publish's `idempotencyKey`.
    pub idempotency_window_ms: u64,
}

/// A channel subscription took effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Subscribed {
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub channel: String,
    /// The channel's head seq when the subscription took effect: live messages follow
    /// from `seq + 1`.
    pub seq: u64,
    /// Identifies the channel's stream; it changes when history is lost.
    pub epoch: String,
    /// Present when the subscribe carried `since` for this channel: `true` when every
    /// missed publication follows (`since.seq + 1 ..= seq`), `false` when they are gone and the
    /// client must reload its state. Never a partial replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub recovered: Option<bool>,
    /// The interval granted to a subscription that asked for `options.minInterval`
    /// (milliseconds between two updates of one key; see [`crate::rate`]). Its seqs
    /// skip the values it did not get.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "minInterval")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub min_interval: Option<u64>,
    /// True when the subscription asked for `options.deltas` and gets them: keyed
    /// publications may then carry `base` (see [`crate::delta`]).
    #[serde(default, skip_serializing_if = "is_false")]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub deltas: bool,
}

/// A channel subscription ended: the answer to an `unsubscribe`, or, with `code`, the
/// server ending it (a refreshed token no longer grants the channel). A client must not
/// subscribe again by itself after a `code`: it would be refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Unsubscribed {
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub channel: String,
    /// Why the server ended the subscription; absent when the client asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub code: Option<ErrorCode>,
    /// A human explanation next to `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub message: Option<String>,
}

/// A `publish` command was accepted at this seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Published {
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub channel: String,
    pub seq: u64,
}

/// A `refresh` was accepted; the connection now lives until `expiresAt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Refreshed {
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub expires_at: Option<Timestamp>,
}

/// A command (or part of one) failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ErrorMessage {
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
    pub code: ErrorCode,
    /// For people; may change between versions. Switch on `code`.
    pub message: String,
    /// The channel the error is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "unknown"))]
    pub details: Option<Value>,
}

/// The answer to `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Pong {
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub id: Option<CommandId>,
}

/// Sent when a connection has been idle for the heartbeat interval, so browsers (which
/// cannot see WebSocket pings) can tell a quiet link from a dead one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Heartbeat {
    pub timestamp: Timestamp,
}

/// The snapshot that followed a `subscribed` is complete: every latest value of the
/// channel as of `seq` has been sent (none, when the channel holds none). Sent only to
/// subscriptions that asked for it (`options.snapshotEnd`), after a fresh start or a
/// start with `recovered: false`; a replay (`recovered: true`) has no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SnapshotEnd {
    pub timestamp: Timestamp,
    pub channel: String,
    /// The channel's head when the snapshot was taken (the `seq` of its `subscribed`).
    pub seq: u64,
}

/// The server dropped `from..=to` on `channel` for this client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct GapNotice {
    pub timestamp: Timestamp,
    pub channel: String,
    /// First missing seq.
    pub from: u64,
    /// Last missing seq (inclusive).
    pub to: u64,
    pub reason: GapReason,
}

/// Why messages were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum GapReason {
    /// Each dropped message had a key, and a newer message with the same key follows:
    /// nothing is lost for a client that keeps the latest value per key.
    Superseded,
    /// The client fell behind and the oldest messages were dropped: recover with `since`.
    Overflow,
}

/// Every field a control message may carry, flattened and borrowed.
///
/// A lean reader (the wasm client) decodes any control message into this one struct
/// instead of the tagged [`Control`] enum: one decoder instead of nine, which matters
/// for code size in the browser. Which fields are set depends on `type`; a test checks
/// that every control message reads back the same through this view.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlFields<'a> {
    #[serde(rename = "type")]
    pub kind: ControlKind,
    #[serde(default)]
    pub id: Option<CommandId>,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default, borrow)]
    pub channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub epoch: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub recovered: Option<bool>,
    #[serde(default)]
    pub min_interval: Option<u64>,
    #[serde(default)]
    pub deltas: bool,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub from: Option<u64>,
    #[serde(default)]
    pub to: Option<u64>,
    #[serde(default)]
    pub reason: Option<GapReason>,
    #[serde(default)]
    pub code: Option<ErrorCode>,
    #[serde(default, borrow)]
    pub message: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub limits: Option<AnnouncedLimits>,
}

/// The part of `connected`'s [`Limits`] a lean reader acts on, each field optional, so a
/// server that announces more limits, or fewer, is still understood.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncedLimits {
    #[serde(default)]
    pub commands_per_second: Option<u32>,
    #[serde(default)]
    pub command_burst: Option<u32>,
    #[serde(default)]
    pub max_message_bytes: Option<u32>,
    #[serde(default)]
    pub max_channels: Option<u32>,
    #[serde(default)]
    pub idempotency_window_ms: Option<u64>,
}

impl Control {
    /// The message's timestamp.
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Control::Connected(m) => m.timestamp,
            Control::Subscribed(m) => m.timestamp,
            Control::Unsubscribed(m) => m.timestamp,
            Control::Published(m) => m.timestamp,
            Control::Refreshed(m) => m.timestamp,
            Control::Error(m) => m.timestamp,
            Control::Pong(m) => m.timestamp,
            Control::Heartbeat(m) => m.timestamp,
            Control::Gap(m) => m.timestamp,
            Control::SnapshotEnd(m) => m.timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp::parse("2026-01-19T10:30:45.123456Z").unwrap()
    }

    #[test]
    fn reserved_and_invalid_types() {
        assert!(validate_message_type("routing-decision").is_ok());
        assert!(validate_message_type("optimization.iteration.completed").is_ok());
        assert_eq!(validate_message_type("gap"), Err(MessageTypeError::Reserved("gap".into())));
        assert!(validate_message_type(PRESENCE_JOIN).is_ok(), "a filter may name it");
        assert_eq!(validate_published_type(PRESENCE_LEAVE), Err(MessageTypeError::Reserved(PRESENCE_LEAVE.into())));
        assert!(validate_published_type("alert").is_ok());
        assert_eq!(validate_message_type(""), Err(MessageTypeError::Length));
        assert_eq!(validate_message_type(&"a".repeat(129)), Err(MessageTypeError::Length));
        assert_eq!(validate_message_type("a b"), Err(MessageTypeError::BadCharacter(' ')));
    }

    #[test]
    fn publication_exact_json() {
        let msg = ServerMessage::Publication(Publication {
            kind: "lp-metrics".into(),
            timestamp: ts(),
            channel: "lp-performance".into(),
            seq: 42,
            key: Some("OANDA".into()),
            op: Default::default(),
            snapshot: false,
            base: None,
            data: serde_json::json!({"lpName": "OANDA"}),
        });
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"type":"lp-metrics","timestamp":"2026-01-19T10:30:45.123456Z","channel":"lp-performance","#,
                r#""seq":42,"key":"OANDA","data":{"lpName":"OANDA"}}"#,
            )
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&json).unwrap(), msg);
    }

    #[test]
    fn control_exact_json() {
        let cases = [
            (
                Control::Connected(Connected {
                    timestamp: ts(),
                    connection_id: "c1".into(),
                    user_id: "alice".into(),
                    version: 1,
                    heartbeat_interval_ms: 25_000,
                    expires_at: None,
                    limits: Limits {
                        max_batch: 50,
                        batch_interval_ms: 16,
                        max_queued_batches: 10,
                        max_channels: 128,
                        max_message_bytes: 4096,
                        commands_per_second: 1000,
                        command_burst: 200,
                        max_queued_bytes: 1_048_576,
                        idempotency_window_ms: 120_000,
                    },
                }),
                concat!(
                    r#"{"type":"connected","timestamp":"2026-01-19T10:30:45.123456Z","connectionId":"c1","#,
                    r#""userId":"alice","version":1,"heartbeatIntervalMs":25000,"#,
                    r#""limits":{"maxBatch":50,"batchIntervalMs":16,"maxQueuedBatches":10,"maxChannels":128,"#,
                    r#""maxMessageBytes":4096,"commandsPerSecond":1000,"commandBurst":200,"#,
                    r#""maxQueuedBytes":1048576,"idempotencyWindowMs":120000}}"#,
                ),
            ),
            (
                Control::Subscribed(Subscribed {
                    timestamp: ts(),
                    id: Some(CommandId::Number(1)),
                    channel: "alerts".into(),
                    seq: 9,
                    epoch: "e".into(),
                    recovered: Some(true),
                    min_interval: None,
                    deltas: false,
                }),
                concat!(
                    r#"{"type":"subscribed","timestamp":"2026-01-19T10:30:45.123456Z","#,
                    r#""id":1,"channel":"alerts","seq":9,"epoch":"e","recovered":true}"#,
                ),
            ),
            (
                Control::Error(ErrorMessage {
                    timestamp: ts(),
                    id: None,
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                    channel: Some("trading#bob".into()),
                    details: None,
                }),
                concat!(
                    r#"{"type":"error","timestamp":"2026-01-19T10:30:45.123456Z","#,
                    r#""code":"FORBIDDEN","message":"no","channel":"trading#bob"}"#,
                ),
            ),
            (
                Control::Gap(GapNotice {
                    timestamp: ts(),
                    channel: "a".into(),
                    from: 3,
                    to: 7,
                    reason: GapReason::Overflow,
                }),
                concat!(
                    r#"{"type":"gap","timestamp":"2026-01-19T10:30:45.123456Z","#,
                    r#""channel":"a","from":3,"to":7,"reason":"overflow"}"#,
                ),
            ),
            (
                Control::Heartbeat(Heartbeat { timestamp: ts() }),
                r#"{"type":"heartbeat","timestamp":"2026-01-19T10:30:45.123456Z"}"#,
            ),
        ];
        for (control, expected) in cases {
            let msg = ServerMessage::Control(control);
            assert_eq!(serde_json::to_string(&msg).unwrap(), expected);
            assert_eq!(serde_json::from_str::<ServerMessage>(expected).unwrap(), msg);
        }
    }

    #[test]
    fn control_fields_read_every_control_message() {
        let ts = ts();
        let samples = [
            Control::Subscribed(Subscribed {
                timestamp: ts,
                id: None,
                channel: "c".into(),
                seq: 4,
                epoch: "e".into(),
                recovered: Some(false),
                min_interval: Some(250),
                deltas: true,
            }),
            Control::Gap(GapNotice {
                timestamp: ts,
                channel: "c".into(),
                from: 2,
                to: 3,
                reason: GapReason::Superseded,
            }),
            Control::Error(ErrorMessage {
                timestamp: ts,
                id: Some(CommandId::Number(1)),
                code: ErrorCode::TooManyChannels,
                message: "m".into(),
                channel: Some("c".into()),
                details: Some(serde_json::json!({"x": [1]})),
            }),
            Control::Refreshed(Refreshed { timestamp: ts, id: None, expires_at: Some(ts) }),
            Control::Published(Published { timestamp: ts, id: None, channel: "c".into(), seq: 9 }),
            Control::Unsubscribed(Unsubscribed {
                timestamp: ts,
                id: None,
                channel: "c".into(),
                code: None,
                message: None,
            }),
        ];
        for control in samples {
            let json = serde_json::to_string(&control).unwrap();
            let fields: ControlFields<'_> = serde_json::from_str(&json).unwrap();
            assert_eq!(fields.timestamp, Some(control.timestamp()));
            assert_eq!(
                Some(fields.kind),
                ControlKind::parse(serde_json::to_value(&control).unwrap()["type"].as_str().unwrap())
            );
            match &control {
                Control::Subscribed(m) => {
                    assert_eq!(
                        (fields.channel.as_deref(), fields.seq, fields.epoch.as_deref(), fields.recovered),
                        (Some("c"), Some(m.seq), Some("e"), m.recovered)
                    );
                    assert_eq!((fields.min_interval, fields.deltas), (m.min_interval, m.deltas))
                }
                Control::Gap(m) => {
                    assert_eq!((fields.from, fields.to, fields.reason), (Some(m.from), Some(m.to), Some(m.reason)))
                }
                Control::Error(m) => {
                    assert_eq!(
                        (fields.code, fields.message.as_deref(), fields.channel.as_deref()),
                        (Some(m.code), Some("m"), Some("c"))
                    )
                }
                Control::Refreshed(m) => assert_eq!(fields.expires_at, m.expires_at),
                Control::Published(m) => assert_eq!(fields.seq, Some(m.seq)),
                _ => assert_eq!(fields.channel.as_deref(), Some("c")),
            }
        }
        let connected = concat!(
            r#"{"type":"connected","timestamp":"2026-01-19T10:30:45.123456Z","connectionId":"c1","userId":"alice","#,
            r#""version":1,"heartbeatIntervalMs":25000,"expiresAt":"2026-01-19T11:30:45.123456Z","#,
            r#""limits":{"maxBatch":50,"batchIntervalMs":16,"maxQueuedBatches":10,"maxChannels":128,"#,
            r#""maxMessageBytes":4096,"commandsPerSecond":1000,"commandBurst":200}}"#,
        );
        let fields: ControlFields<'_> = serde_json::from_str(connected).unwrap();
        assert_eq!((fields.version, fields.heartbeat_interval_ms), (Some(1), Some(25_000)));
        assert!(fields.expires_at.is_some());
        assert_eq!(fields.limits.map(|l| (l.commands_per_second, l.command_burst)), Some((Some(1000), Some(200))));
        let partial = r#"{"type":"connected","version":1,"limits":{"maxChannels":128,"somethingNew":true}}"#;
        let fields: ControlFields<'_> = serde_json::from_str(partial).unwrap();
        let expected = AnnouncedLimits { max_channels: Some(128), ..AnnouncedLimits::default() };
        assert_eq!(fields.limits, Some(expected), "partial limits still read");
    }

    #[test]
    fn control_types_constant_matches_the_enum() {
        let samples = [
            Control::Heartbeat(Heartbeat { timestamp: ts() }),
            Control::Pong(Pong { timestamp: ts(), id: None }),
            Control::Refreshed(Refreshed { timestamp: ts(), id: None, expires_at: None }),
            Control::Published(Published { timestamp: ts(), id: None, channel: "a".into(), seq: 1 }),
            Control::Unsubscribed(Unsubscribed {
                timestamp: ts(),
                id: None,
                channel: "a".into(),
                code: Some(ErrorCode::Forbidden),
                message: Some("no longer granted".into()),
            }),
        ];
        for sample in samples {
            let value = serde_json::to_value(&sample).unwrap();
            assert!(CONTROL_TYPES.contains(&value["type"].as_str().unwrap()));
        }
        for (kind, name) in ControlKind::ALL.into_iter().zip(CONTROL_TYPES) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(ControlKind::parse(name), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), name, "serde and CONTROL_TYPES agree");
        }
        assert_eq!(ControlKind::parse("lp-metrics"), None);
    }
}
