//! Rebuilding whole values from field deltas (see [`tidewire_protocol::delta`]).
//!
//! A subscription granted deltas keeps, per key, the last value it delivered. A
//! publication with `base` is applied to that value when it is the one at seq `base`,
//! and the app receives the whole message, with `data` rebuilt and the changed fields
//! named; any other keyed publication replaces, deletes or clears values. A delta whose
//! base the table does not hold cannot be rebuilt: it is not delivered, and the caller
//! recovers the channel as after a gap. The table starts empty at every (re)start of
//! the subscription, which is where the server starts sending whole values again.

use std::collections::HashMap;

use serde_json::value::RawValue;
use tidewire_protocol::delta::{Fields, apply_to_text, write_object};

/// One subscription's last values per key, as JSON text (no JSON tree is built: the
/// page parses what it is handed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaTable {
    values: HashMap<String, (u64, String)>,
}

/// What a publication becomes for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuilt {
    /// Deliver `json` (the whole message); `changed` names the fields a delta changed.
    Whole { json: String, changed: Option<Vec<String>> },
    /// A delta whose base is not held: recover.
    Lost,
}

/// What a publication says about its key, as the inbound decoder read it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keyed<'a> {
    pub key: Option<&'a str>,
    /// `delete`, `clear`, or absent for an upsert.
    pub op: Option<&'a str>,
    pub base: Option<u64>,
    pub data: Option<&'a RawValue>,
}

impl DeltaTable {
    /// Takes a publication (`json`, at `seq`, with its `keyed` fields) delivered in
    /// order.
    pub fn rebuild(&mut self, seq: u64, json: &str, keyed: Keyed<'_>) -> Rebuilt {
        let whole = |json: &str| Rebuilt::Whole { json: json.to_owned(), changed: None };
        let Keyed { key, op, base, data } = keyed;
        let (op, Some(key)) = (op, key) else {
            if op == Some("clear") {
                self.values.clear();
            }
            return whole(json);
        };
        match (op, base, data) {
            (Some("delete"), _, _) | (None, None, None) => {
                self.values.remove(key);
                whole(json)
            }
            (None, Some(base), Some(data)) => {
                let Some((held, value)) = self.values.get_mut(key) else { return Rebuilt::Lost };
                let Some(rebuilt) = (*held == base).then(|| apply_to_text(value, data.get())).flatten() else {
                    return Rebuilt::Lost;
                };
                let Some(json) = with_data(json, &rebuilt) else { return Rebuilt::Lost };
                let changed = serde_json::from_str::<Fields<'_>>(data.get())
                    .map(|Fields(fields)| fields.into_iter().map(|(k, _)| k.into_owned()).collect())
                    .ok();
                (*held, *value) = (seq, rebuilt);
                Rebuilt::Whole { json, changed }
            }
            (None, None, Some(data)) => {
                self.values.insert(key.to_owned(), (seq, data.get().to_owned()));
                whole(json)
            }
            (None, Some(_), None) => Rebuilt::Lost,
            (Some(_), _, _) => whole(json),
        }
    }
}

/// The message `json` with `data` for its data and without `base`.
fn with_data(json: &str, data: &str) -> Option<String> {
    let Fields(fields) = serde_json::from_str(json).ok()?;
    let kept = fields.iter().filter(|(k, _)| k != "base");
    Some(write_object(kept.map(|(k, v)| (k.as_ref(), if k == "data" { data } else { v.get() }))))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Reads the keyed fields as the inbound decoder does, then rebuilds.
    fn rebuild(table: &mut DeltaTable, seq: u64, json: &str) -> Rebuilt {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow, default)]
            key: Option<&'a str>,
            #[serde(borrow, default)]
            op: Option<&'a str>,
            #[serde(default)]
            base: Option<u64>,
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
        }
        let head: Head<'_> = serde_json::from_str(json).unwrap();
        table.rebuild(seq, json, Keyed { key: head.key, op: head.op, base: head.base, data: head.data })
    }

    fn message(seq: u64, key: &str, base: Option<u64>, data: Value) -> String {
        let timestamp = "2026-01-19T10:30:45.123456Z";
        let mut m = json!({"type": "lp", "timestamp": timestamp, "channel": "c", "seq": seq, "key": key, "data": data});
        if let Some(base) = base {
            m["base"] = json!(base);
        }
        m.to_string()
    }

    #[test]
    fn a_delta_on_the_value_held_rebuilds_the_record() {
        let mut table = DeltaTable::default();
        let first = message(3, "a", None, json!({"fill": 0.9, "venue": "LDN"}));
        assert_eq!(rebuild(&mut table, 3, &first), Rebuilt::Whole { json: first.clone(), changed: None });
        let Rebuilt::Whole { json, changed } = rebuild(&mut table, 7, &message(7, "a", Some(3), json!({"fill": 0.95})))
        else {
            panic!("rebuilt")
        };
        let rebuilt: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(rebuilt["data"], json!({"fill": 0.95, "venue": "LDN"}));
        assert_eq!((rebuilt["seq"].as_u64(), rebuilt.get("base")), (Some(7), None));
        assert_eq!(changed, Some(vec!["fill".to_owned()]));
        assert_eq!(
            rebuild(&mut table, 9, &message(9, "a", Some(3), json!({"fill": 1.0}))),
            Rebuilt::Lost,
            "stale base"
        );
        assert_eq!(rebuild(&mut table, 9, &message(9, "b", Some(3), json!({}))), Rebuilt::Lost, "unknown key");
    }

    #[test]
    fn deletes_and_clears_forget_values() {
        let mut table = DeltaTable::default();
        rebuild(&mut table, 1, &message(1, "a", None, json!({"x": 1})));
        let delete = json!({"type": "lp", "channel": "c", "seq": 2, "key": "a", "op": "delete", "data": null});
        rebuild(&mut table, 2, &delete.to_string());
        assert_eq!(rebuild(&mut table, 3, &message(3, "a", Some(1), json!({"x": 2}))), Rebuilt::Lost);
        rebuild(&mut table, 4, &message(4, "b", None, json!({"x": 1})));
        rebuild(
            &mut table,
            5,
            &json!({"type": "lp", "channel": "c", "seq": 5, "op": "clear", "data": null}).to_string(),
        );
        assert_eq!(rebuild(&mut table, 6, &message(6, "b", Some(4), json!({"x": 2}))), Rebuilt::Lost);
    }
}
