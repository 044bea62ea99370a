//! Field deltas on this node (see [`tidewire_protocol::delta`]): the one place that
//! turns a channel's keyed publications into merge patches, once per publication for
//! every subscriber that can take it.
//!
//! A channel with subscribers that were granted deltas keeps, per key, the last value it
//! fanned out (parsed once, shared by pointer with the throttled streams that diff
//! against it). Each keyed object publication is parsed, diffed against its key's
//! previous value, and, when the patch is smaller than the value, encoded once as a
//! delta publication that carries its whole form as a fallback ([`Outbound::delta`]).
//!
//! A subscriber then takes the delta only when it was sent the value the delta applies
//! to: [`Floor::takes`] says so from where its subscription started (a snapshot start
//! holds every key's latest value; any other start, only what follows it) and what its
//! filter let through. Its queue replaces a delta by its whole form when it drops the
//! base (see [`tidewire_protocol::batch`]).
//!
//! **Cost bound.** The table holds one parsed value per key of the channel, so it is
//! bounded by the channel's own limits (`--max-keys-per-channel` and the latest-values
//! byte budget); it exists only while the channel has subscribers with deltas and is
//! dropped with the last one. The node's stream of the channel must be contiguous for
//! the table to be right: an engine that skips seqs (a gap it cannot fill) or changes
//! epoch calls [`Deltas::reset`].

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tidewire_protocol::batch::Outbound;
use tidewire_protocol::filter::Filter;
use tidewire_protocol::{EncodedMessage, Op, Publication, ServerMessage};

/// A key's value as last fanned out (parsed once, shared by pointer).
#[derive(Debug, Clone)]
pub struct Last {
    pub seq: u64,
    pub publication: Arc<Publication>,
    /// Its encoded size (what holding it is counted as).
    pub bytes: usize,
}

/// A publication's delta form.
#[derive(Debug, Clone)]
pub struct Delta {
    /// The delta publication, with the whole one as its fallback.
    pub outbound: Outbound,
    /// The seq of the value it applies to, and that value's message type.
    pub base: u64,
    pub base_kind: Arc<str>,
}

impl Delta {
    /// `after` (whose whole form is `full`) as a delta of `before`: `None` when both are
    /// not objects, the change has no merge patch, or the patch would not be smaller.
    pub fn between(before: &Last, after: &Last, full: &Outbound) -> Option<Delta> {
        if before.seq >= after.seq {
            return None;
        }
        let patch = tidewire_protocol::delta::diff(&before.publication.data, &after.publication.data)?;
        let outbound = encode_delta(&after.publication, patch, before.seq, full)?;
        Some(Delta { outbound, base: before.seq, base_kind: before.publication.kind.as_str().into() })
    }
}

/// What a publication did to the table, for the throttled streams that keep their own
/// (see [`super::throttle`]).
#[derive(Debug, Clone, Default)]
pub enum Change {
    /// The key's value is now this object.
    Upsert(Last),
    /// The key has no value deltas could apply to (deleted, or not an object).
    Remove,
    /// Every key went.
    Clear,
    /// Nothing to keep (unkeyed, or the table is not kept).
    #[default]
    None,
}

/// One channel's table of last values. See the module docs.
#[derive(Debug, Default)]
pub struct Deltas {
    values: HashMap<Arc<str>, Last>,
}

impl Deltas {
    /// Takes the channel's next publication (in seq order): what it changed, and, with
    /// `diff`, its delta form when one applies and is smaller.
    pub fn offer(&mut self, full: &Outbound, diff: bool) -> (Change, Option<Delta>) {
        let Some(seq) = full.position().map(|p| p.seq) else { return (Change::None, None) };
        let Ok(ServerMessage::Publication(publication)) = serde_json::from_str(full.message().as_str()) else {
            return (Change::None, None);
        };
        let key = full.position().and_then(|p| p.key.clone());
        let key: Option<Arc<str>> = key.or_else(|| publication.key.as_deref().map(Into::into));
        match (publication.op, key) {
            (Op::Clear, _) => {
                self.values.clear();
                (Change::Clear, None)
            }
            (Op::Upsert, Some(key)) if publication.data.is_object() => {
                let after = Last { seq, publication: Arc::new(publication), bytes: full.message().len() };
                if self.values.get(&key).is_some_and(|held| held.seq >= seq) {
                    // Seeded from a start newer than this stream's position: what the
                    // table holds is newer.
                    return (Change::None, None);
                }
                let before = self.values.insert(key, after.clone());
                let delta = before.filter(|_| diff).and_then(|before| Delta::between(&before, &after, full));
                (Change::Upsert(after), delta)
            }
            // A delete, or a value that is not an object: no successor applies to it.
            (_, Some(key)) => {
                self.values.remove(&key);
                (Change::Remove, None)
            }
            (_, None) => (Change::None, None),
        }
    }

    /// Fills the table with a channel's latest values (encoded publications), as it
    /// starts being kept: a subscriber whose snapshot holds them takes deltas of them.
    pub fn seed<'a>(&mut self, latest: impl IntoIterator<Item = &'a str>) {
        for text in latest {
            let Ok(ServerMessage::Publication(publication)) = serde_json::from_str(text) else { continue };
            let Some(key) = publication.key.as_deref().map(Arc::<str>::from) else { continue };
            if publication.op != Op::Upsert || !publication.data.is_object() {
                continue;
            }
            let seq = publication.seq;
            if self.values.get(&key).is_none_or(|held| held.seq < seq) {
                self.values.insert(key, Last { seq, publication: Arc::new(publication), bytes: text.len() });
            }
        }
    }

    /// Forgets every value: the node's stream of the channel skipped or restarted.
    pub fn reset(&mut self) {
        self.values = HashMap::new();
    }
}

/// `publication` with `patch` for data, against `base`, as a delta of `full`; `None`
/// when it would not be smaller.
pub fn encode_delta(publication: &Publication, patch: Value, base: u64, full: &Outbound) -> Option<Outbound> {
    let delta = Publication { data: patch, base: Some(base), snapshot: false, ..publication.clone() };
    let message = EncodedMessage::encode(&ServerMessage::Publication(delta)).ok()?;
    (message.len() < full.message().len()).then(|| Outbound::delta(message, full))
}

/// Where a subscriber's deltas may start: it was sent every value of a key after `seq`,
/// and with a snapshot start, every key's latest value before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor(pub u64);

impl Floor {
    /// The floor of a subscription that started at `head`, with a snapshot or not.
    pub fn at_start(head: u64, snapshot: bool) -> Floor {
        Floor(if snapshot { 0 } else { head })
    }

    /// Whether a subscriber with this floor and `filter` was sent `delta`'s base.
    pub fn takes(self, delta: &Delta, filter: Option<&Filter>) -> bool {
        let key = delta.outbound.position().and_then(|p| p.key.as_deref());
        delta.base > self.0 && filter.is_none_or(|f| f.admits(&delta.base_kind, key))
    }
}

/// What a subscriber is sent for a publication: its delta when it takes it.
pub fn choose<'a>(
    full: &'a Outbound,
    delta: Option<&'a Delta>,
    floor: Option<Floor>,
    filter: Option<&Filter>,
) -> &'a Outbound {
    match (delta, floor) {
        (Some(delta), Some(floor)) if floor.takes(delta, filter) => &delta.outbound,
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tidewire_protocol::batch::Position;

    use super::*;

    fn publication(seq: u64, key: &str, op: Op, data: Value) -> Outbound {
        let p = Publication {
            kind: "lp".into(),
            timestamp: tidewire_protocol::Timestamp::parse("2026-01-19T10:30:45.123456Z").unwrap(),
            channel: "c".into(),
            seq,
            key: Some(key.into()),
            op,
            snapshot: false,
            base: None,
            data,
        };
        let message = EncodedMessage::encode(&ServerMessage::Publication(p)).unwrap();
        Outbound::publication(message, Position { channel: "c".into(), seq, key: Some(key.into()) })
    }

    fn record(fill: f64) -> Value {
        json!({"lp": "LP-1", "venue": "London", "fill": fill, "spread": 1.25, "latencyMs": 4})
    }

    impl Deltas {
        fn offer_all(&mut self, full: &Outbound) -> Option<Delta> {
            self.offer(full, true).1
        }
    }

    #[test]
    fn a_key_s_second_value_is_a_patch_against_its_first() {
        let mut deltas = Deltas::default();
        assert!(deltas.offer_all(&publication(1, "a", Op::Upsert, record(0.9))).is_none(), "nothing to diff against");
        let delta = deltas.offer_all(&publication(2, "a", Op::Upsert, record(0.95))).unwrap();
        assert_eq!(delta.base, 1);
        let sent: Value = serde_json::from_str(delta.outbound.message().as_str()).unwrap();
        assert_eq!((sent["base"].as_u64(), &sent["data"]), (Some(1), &json!({"fill": 0.95})));
        assert_eq!(delta.outbound.fallback().unwrap().position().unwrap().seq, 2);
        assert!(Floor(0).takes(&delta, None) && !Floor(1).takes(&delta, None));
        let other_type = Filter::new(Some(&["other".to_owned()]), None).unwrap().unwrap();
        assert!(!Floor(0).takes(&delta, Some(&other_type)), "its base was filtered out");
    }

    #[test]
    fn deletes_clears_and_non_objects_leave_nothing_to_diff_against() {
        let mut deltas = Deltas::default();
        deltas.offer_all(&publication(1, "a", Op::Upsert, record(0.9)));
        deltas.offer_all(&publication(2, "a", Op::Delete, Value::Null));
        assert!(deltas.offer_all(&publication(3, "a", Op::Upsert, record(0.8))).is_none(), "the row was deleted");
        deltas.offer_all(&publication(4, "b", Op::Upsert, record(0.8)));
        let clear = publication(5, "b", Op::Clear, Value::Null);
        deltas.offer_all(&clear);
        assert!(deltas.offer_all(&publication(6, "b", Op::Upsert, record(0.7))).is_none(), "the table was cleared");
        deltas.offer_all(&publication(7, "b", Op::Upsert, json!([1, 2])));
        assert!(
            deltas.offer_all(&publication(8, "b", Op::Upsert, record(0.7))).is_none(),
            "the value before is no object"
        );
        assert!(deltas.offer_all(&publication(9, "b", Op::Upsert, record(0.7))).is_some());
    }

    #[test]
    fn a_patch_no_smaller_than_the_value_is_not_sent() {
        let mut deltas = Deltas::default();
        deltas.offer_all(&publication(1, "a", Op::Upsert, json!({"a": 1})));
        assert!(deltas.offer_all(&publication(2, "a", Op::Upsert, json!({"b": 2}))).is_none());
    }
}
