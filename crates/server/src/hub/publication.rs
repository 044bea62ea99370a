//! One publication path for every engine: a publication is validated, stamped and
//! serialized once, before any channel lock or broker round trip, with its seq left
//! open; the engine fills the seq in where it numbers the channel.
//!
//! The in-memory engine fills it under the channel's lock (one copy of the text), the
//! Redis engine hands the two halves to its publish script. Either way serialization
//! never happens under a lock, and the size rule is written here once.

use tidewire_protocol::{ErrorCode, NewPublication, Op, Publication, PublicationTemplate};

use super::{PublishError, now_timestamp};

/// Room for the envelope (type, timestamp, channel, seq, key) around `data`: channel
/// and key are at most 255 bytes and the type 128, so a publication whose `data` fits
/// `--max-publication-bytes` always fits this too.
pub(crate) const ENVELOPE_ALLOWANCE: usize = 1024;

/// The most digits a seq can have.
const SEQ_DIGITS: usize = 20;

/// A publication ready for an engine.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub channel: String,
    /// The latest-value key, if any.
    pub key: Option<String>,
    pub idempotency_key: Option<String>,
    /// What it does to the channel's table of latest values.
    pub op: Op,
    /// The message, stamped now, with its seq open.
    pub template: PublicationTemplate,
}

impl Prepared {
    /// Stamps and serializes `new` (already validated by the hub); refuses it when the
    /// message would exceed `max_publication_bytes` plus the envelope's allowance.
    pub fn new(new: NewPublication, max_publication_bytes: usize) -> Result<Prepared, PublishError> {
        let NewPublication { channel, kind, data, key, idempotency_key, op } = new;
        let timestamp = now_timestamp();
        let publication = Publication { kind, timestamp, channel, seq: 0, key, op, snapshot: false, base: None, data };
        let template = PublicationTemplate::new(&publication)
            .map_err(|e| PublishError::new(ErrorCode::BadRequest, e.to_string()))?;
        let size = template.len(SEQ_DIGITS);
        if size > max_publication_bytes + ENVELOPE_ALLOWANCE {
            return Err(too_big(size - ENVELOPE_ALLOWANCE.min(size), max_publication_bytes));
        }
        Ok(Prepared { channel: publication.channel, key: publication.key, idempotency_key, op, template })
    }
}

pub(crate) fn too_big(size: usize, max: usize) -> PublishError {
    PublishError::new(ErrorCode::MessageTooBig, format!("publication data is {size} bytes; at most {max} are allowed"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn new(data: serde_json::Value) -> NewPublication {
        NewPublication { channel: "c".into(), kind: "t".into(), data, key: Some("k".into()), ..Default::default() }
    }

    #[test]
    fn prepared_publications_take_their_seq_later() {
        let prepared = Prepared::new(new(json!({"n": 1})), 100).unwrap();
        let message = prepared.template.with_seq(42);
        let value: serde_json::Value = serde_json::from_str(message.as_str()).unwrap();
        assert_eq!(
            (value["seq"].as_u64(), value["key"].as_str(), value["data"]["n"].as_u64()),
            (Some(42), Some("k"), Some(1))
        );
        assert_eq!(prepared.key.as_deref(), Some("k"));
    }

    #[test]
    fn the_size_rule_counts_data_and_allows_the_envelope() {
        let max = 2000;
        assert!(Prepared::new(new(json!("x".repeat(max - 2))), max).is_ok(), "data of exactly max bytes fits");
        let error = Prepared::new(new(json!("x".repeat(max + ENVELOPE_ALLOWANCE))), max).unwrap_err();
        assert_eq!(error.code, ErrorCode::MessageTooBig);
    }
}
