//! A subscriber's view of a frame, read without a JSON parser.
//!
//! At a million deliveries per second, parsing every frame with serde was most of the
//! load generator's CPU, and the generator shares the machine with the server it
//! measures. Frames from tidewire have a fixed shape: a JSON array of objects that each
//! start with `{"type":"…","timestamp":"…","channel":"…"`, followed in publications by
//! `"seq":N` and in gap notices by `"from":N,"to":M`. The scanner relies on that shape
//! and on the bench's own payloads never containing `{"type":"`; a frame it cannot read
//! is reported, not skipped, so a change of the wire format shows up as loss rather
//! than as silence.

use memchr::memmem;
use tidewire_protocol::message::CONTROL_TYPES;

/// One message of a frame, as far as the bench cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Publication {
        seq: u64,
        timestamp: &'a str,
        /// The latest-value key, when the publication has one.
        key: Option<&'a str>,
    },
    Gap {
        from: u64,
        to: u64,
    },
    /// Any other control message (heartbeat, subscribed, …).
    Control,
}

const MESSAGE_START: &str = r#"{"type":""#;

/// The messages of `frame`, or `None` when it is not shaped as tidewire writes frames.
pub fn scan(frame: &str) -> Option<Vec<Item<'_>>> {
    if !frame.starts_with('[') {
        return None;
    }
    let mut items = Vec::new();
    for start in memmem::find_iter(frame.as_bytes(), MESSAGE_START.as_bytes()) {
        let mut cursor = Cursor(&frame[start..]);
        let (kind, timestamp) = cursor.head()?;
        items.push(if kind == "gap" {
            cursor.channel()?;
            cursor.expect(r#","from":"#)?;
            let from = cursor.number()?;
            cursor.expect(r#","to":"#)?;
            Item::Gap { from, to: cursor.number()? }
        } else if CONTROL_TYPES.contains(&kind) {
            Item::Control
        } else {
            cursor.channel()?;
            cursor.expect(r#","seq":"#)?;
            let seq = cursor.number()?;
            let key = cursor.expect(r#","key":""#).and_then(|()| cursor.until_quote());
            Item::Publication { seq, timestamp, key }
        });
    }
    Some(items)
}

/// The `timestamp` of one encoded message (`{"type":…,"timestamp":…}`).
pub fn message_timestamp(message: &str) -> Option<&str> {
    Cursor(message).head().map(|(_, timestamp)| timestamp)
}

/// Reads fields in the order tidewire writes them (channel names and timestamps never
/// contain quotes or escapes).
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    /// A message's `type` and `timestamp`, the first two fields of every message.
    fn head(&mut self) -> Option<(&'a str, &'a str)> {
        self.0 = self.0.strip_prefix(MESSAGE_START)?;
        let kind = self.until_quote()?;
        self.expect(r#","timestamp":""#)?;
        Some((kind, self.until_quote()?))
    }

    /// Skips the `channel` field that follows the head of publications and gap notices.
    fn channel(&mut self) -> Option<()> {
        self.expect(r#","channel":""#)?;
        self.until_quote().map(drop)
    }

    fn expect(&mut self, literal: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(literal)?;
        Some(())
    }

    fn until_quote(&mut self) -> Option<&'a str> {
        let end = memchr::memchr(b'"', self.0.as_bytes())?;
        let (text, rest) = self.0.split_at(end);
        self.0 = &rest[1..];
        Some(text)
    }

    fn number(&mut self) -> Option<u64> {
        let len = self.0.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, rest) = self.0.split_at(len);
        self.0 = rest;
        digits.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewire_protocol::codec::{EncodedMessage, encode_frame};
    use tidewire_protocol::message::{GapNotice, GapReason, Heartbeat, Publication};
    use tidewire_protocol::{Control, Timestamp};

    /// Frames as the protocol crate encodes them, so the scanner follows the real format.
    #[test]
    fn reads_what_the_protocol_crate_writes() {
        let timestamp = Timestamp::from_unix_micros(1_768_818_645_123_456);
        let publication = |seq| Publication {
            kind: "routing-decision".into(),
            timestamp,
            channel: "bench".into(),
            seq,
            key: Some("k".into()),
            op: Default::default(),
            snapshot: false,
            base: None,
            data: serde_json::json!({"symbol": "EURUSD", "nested": {"seq": 99}}),
        };
        let messages = [
            EncodedMessage::encode(&publication(7)).unwrap(),
            EncodedMessage::encode(&Control::Gap(GapNotice {
                timestamp,
                channel: "bench".into(),
                from: 8,
                to: 12,
                reason: GapReason::Overflow,
            }))
            .unwrap(),
            EncodedMessage::encode(&Control::Heartbeat(Heartbeat { timestamp })).unwrap(),
            EncodedMessage::encode(&publication(13)).unwrap(),
        ];
        let frame = encode_frame(&messages);
        let stamp = timestamp.to_string();
        assert_eq!(
            scan(&frame),
            Some(vec![
                Item::Publication { seq: 7, timestamp: &stamp, key: Some("k") },
                Item::Gap { from: 8, to: 12 },
                Item::Control,
                Item::Publication { seq: 13, timestamp: &stamp, key: Some("k") },
            ])
        );
    }

    #[test]
    fn reads_the_timestamp_of_one_message() {
        assert_eq!(
            message_timestamp(r#"{"type":"x","timestamp":"2026-01-19T10:30:45.123456Z","seq":1}"#),
            Some("2026-01-19T10:30:45.123456Z")
        );
        assert_eq!(message_timestamp(r#"{"seq":1}"#), None);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(scan("not a frame"), None);
        assert_eq!(
            scan(r#"[{"type":"routing-decision","timestamp":"t","channel":"c"}]"#),
            None,
            "a publication without a seq"
        );
        assert_eq!(scan(r#"[{"type":"gap","timestamp":"t","channel":"c","from":3}]"#), None, "a gap without its end");
        assert_eq!(scan(r#"[{"type":"routing-decision","channel":"c","seq":1}]"#), None, "fields in another order");
        assert_eq!(scan("[]"), Some(vec![]));
    }
}
