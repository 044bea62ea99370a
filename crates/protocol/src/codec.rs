//! Encoding once, framing by joining, and decoding frames with clear errors.
//!
//! Fan-out is the hot path: one publication goes to thousands of subscribers. So a
//! message is serialized exactly once into an [`EncodedMessage`] (a shared, immutable
//! string), and a frame for a subscriber is built by joining the encoded messages it
//! is due — `[` + `m1` + `,` + `m2` + `]` — without touching JSON again. Cloning an
//! `EncodedMessage` is a reference-count increment.

use std::sync::Arc;

use serde::Serialize;

use crate::message::ServerMessage;

/// One message, already serialized as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncodedMessage(Arc<str>);

/// A message could not be serialized (a map with non-string keys, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl EncodedMessage {
    /// Serializes a message once.
    pub fn encode<T: Serialize + ?Sized>(message: &T) -> Result<EncodedMessage, EncodeError> {
        Ok(EncodedMessage(serde_json::to_string(message)?.into()))
    }

    /// Wraps JSON object text built by this crate's own encoders (no parsing).
    pub(crate) fn from_json_object_text(text: String) -> EncodedMessage {
        EncodedMessage(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same encoded publication with `"snapshot":true` as its first field: the form
    /// a fresh subscriber receives the latest value per key in. An encoded message is
    /// always a JSON object, so this is a splice, not a re-serialization.
    pub fn marked_as_snapshot(&self) -> EncodedMessage {
        match self.0.strip_prefix('{') {
            Some(body) => EncodedMessage(format!("{{\"snapshot\":true,{body}").into()),
            None => self.clone(),
        }
    }
}

/// A publication encoded with its seq left open, for engines that assign the seq
/// somewhere else (the Redis engine numbers publications inside Redis): the message is
/// `prefix + seq + suffix`, so the JSON is built once, here, and only the digits are
/// spliced in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationTemplate {
    pub prefix: String,
    pub suffix: String,
}

impl PublicationTemplate {
    /// The template of `publication` (its `seq` is ignored).
    pub fn new(publication: &crate::Publication) -> Result<PublicationTemplate, EncodeError> {
        const PLACEHOLDER: &str = "\"seq\":18446744073709551615";
        let mut open = publication.clone();
        open.seq = u64::MAX;
        let text = serde_json::to_string(&crate::ServerMessage::Publication(open))?;
        // `type`, `timestamp` and `channel` come first and cannot contain the placeholder
        // (types and channel names have no quotes), so the first match is the seq.
        let at =
            text.find(PLACEHOLDER).ok_or_else(|| EncodeError(serde::ser::Error::custom("no seq in publication")))?;
        let seq_at = at + "\"seq\":".len();
        Ok(PublicationTemplate {
            prefix: text[..seq_at].to_owned(),
            suffix: text[seq_at + "18446744073709551615".len()..].to_owned(),
        })
    }

    /// The encoded message for `seq`.
    pub fn with_seq(&self, seq: u64) -> EncodedMessage {
        EncodedMessage(format!("{}{seq}{}", self.prefix, self.suffix).into())
    }

    /// The encoded message for `seq`, reusing the template's own text (one copy less
    /// than [`PublicationTemplate::with_seq`] when the template is not needed again).
    pub fn into_message(self, seq: u64) -> EncodedMessage {
        use std::fmt::Write;
        let mut text = self.prefix;
        text.reserve(20 + self.suffix.len());
        let _ = write!(text, "{seq}");
        text.push_str(&self.suffix);
        EncodedMessage(text.into())
    }

    /// Length of the message for a seq of `digits` digits.
    pub fn len(&self, digits: usize) -> usize {
        self.prefix.len() + digits + self.suffix.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Wraps message text produced by [`PublicationTemplate::with_seq`] elsewhere (the
    /// Redis engine gets it back from Redis).
    pub fn message_from_text(text: String) -> EncodedMessage {
        EncodedMessage(text.into())
    }
}

/// Joins encoded messages into one frame: a JSON array.
pub fn encode_frame<'a>(messages: impl IntoIterator<Item = &'a EncodedMessage> + Clone) -> String {
    let len: usize = messages.clone().into_iter().map(|m| m.len() + 1).sum::<usize>() + 2;
    let mut frame = String::with_capacity(len);
    frame.push('[');
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(message.as_str());
    }
    frame.push(']');
    frame
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    #[error("frame must be a JSON array of messages")]
    NotAnArray,
    #[error("message {index} of the frame is invalid: {reason}")]
    BadMessage { index: usize, reason: String },
}

/// Decodes a frame into its messages. Never panics, whatever the input.
pub fn decode_frame(text: &str) -> Result<Vec<ServerMessage>, DecodeError> {
    let items: Vec<Box<serde_json::value::RawValue>> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(e) if e.is_data() => return Err(DecodeError::NotAnArray),
        Err(e) => return Err(DecodeError::NotJson(e.to_string())),
    };
    items
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            serde_json::from_str(raw.get()).map_err(|e| DecodeError::BadMessage { index, reason: e.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use crate::message::{Control, Heartbeat};

    #[test]
    fn frame_is_a_json_array_of_the_encoded_messages() {
        let a = EncodedMessage::encode(
            &[("type", "x"), ("n", "1")].into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap();
        let b =
            EncodedMessage::encode(&[("type", "y")].into_iter().collect::<std::collections::BTreeMap<_, _>>()).unwrap();
        assert_eq!(encode_frame([&a, &b]), r#"[{"n":"1","type":"x"},{"type":"y"}]"#);
        assert_eq!(encode_frame([&a]), r#"[{"n":"1","type":"x"}]"#);
        assert_eq!(encode_frame(std::iter::empty::<&EncodedMessage>()), "[]");
    }

    #[test]
    fn decode_round_trip() {
        let hb = ServerMessage::Control(Control::Heartbeat(Heartbeat { timestamp: Timestamp::from_unix_micros(5) }));
        let encoded = EncodedMessage::encode(&hb).unwrap();
        let frame = encode_frame([&encoded, &encoded]);
        assert_eq!(decode_frame(&frame).unwrap(), vec![hb.clone(), hb]);
    }

    #[test]
    fn snapshot_marking_keeps_the_message() {
        let publication = ServerMessage::Publication(crate::Publication {
            kind: "lp-metrics".into(),
            timestamp: Timestamp::UNIX_EPOCH,
            channel: "lp".into(),
            seq: 4,
            key: Some("OANDA".into()),
            op: Default::default(),
            snapshot: false,
            base: None,
            data: serde_json::json!({"x": 1}),
        });
        let marked = EncodedMessage::encode(&publication).unwrap().marked_as_snapshot();
        let ServerMessage::Publication(back) = serde_json::from_str(marked.as_str()).unwrap() else { panic!() };
        assert!(back.snapshot);
        assert_eq!((back.seq, back.key.as_deref()), (4, Some("OANDA")));
    }

    #[test]
    fn publication_templates_splice_the_seq() {
        let publication = crate::Publication {
            kind: "alert".into(),
            timestamp: Timestamp::from_unix_micros(1),
            channel: "seq".into(),
            seq: 0,
            key: Some("18446744073709551615".into()),
            op: Default::default(),
            snapshot: false,
            base: None,
            data: serde_json::json!({"seq": 18446744073709551615u64}),
        };
        let template = PublicationTemplate::new(&publication).unwrap();
        for seq in [1, 42, u64::MAX - 1] {
            let mut expected = publication.clone();
            expected.seq = seq;
            let encoded = EncodedMessage::encode(&ServerMessage::Publication(expected)).unwrap();
            assert_eq!(template.with_seq(seq), encoded);
        }
    }

    #[test]
    fn decode_errors() {
        assert!(matches!(decode_frame(""), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode_frame("[{"), Err(DecodeError::NotJson(_))));
        assert_eq!(decode_frame("{}"), Err(DecodeError::NotAnArray));
        assert_eq!(decode_frame("17"), Err(DecodeError::NotAnArray));
        assert!(matches!(decode_frame("[1]"), Err(DecodeError::BadMessage { index: 0, .. })));
        assert!(matches!(
            decode_frame(r#"[{"type":"heartbeat","timestamp":"2026-01-19T10:30:45.123456Z"},{"type":"x"}]"#),
            Err(DecodeError::BadMessage { index: 1, .. })
        ));
        assert!(matches!(
            decode_frame(r#"[{"type":"heartbeat","timestamp":"not a time"}]"#),
            Err(DecodeError::BadMessage { index: 0, .. })
        ));
        assert_eq!(decode_frame("[]").unwrap(), vec![]);
    }
}
