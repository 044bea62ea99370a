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

use serde::Deserialize;
use serde_json::{Map, Value};
use tidewire_protocol::Op;
use tidewire_protocol::delta::{apply, changed_fields};

/// One subscription's last values per key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaTable {
    values: HashMap<String, (u64, Value)>,
}

/// What a publication becomes for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuilt {
    /// Deliver `json` (the whole message); `changed` names the fields a delta changed.
    Whole { json: String, changed: Option<Vec<String>> },
    /// A delta whose base is not held: recover.
    Lost,
}

#[derive(Deserialize)]
struct Keyed {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    op: Op,
    #[serde(default)]
    base: Option<u64>,
    #[serde(default)]
    data: Value,
}

impl DeltaTable {
    /// Takes a publication (`json`, at `seq`) delivered in order.
    pub fn rebuild(&mut self, seq: u64, json: &str) -> Rebuilt {
        let whole = |json: &str| Rebuilt::Whole { json: json.to_owned(), changed: None };
        let Ok(keyed) = serde_json::from_str::<Keyed>(json) else { return whole(json) };
        let Keyed { key, op, base, data } = keyed;
        match (op, key, base) {
            (Op::Clear, _, _) => {
                self.values.clear();
                whole(json)
            }
            (Op::Delete, Some(key), _) => {
                self.values.remove(&key);
                whole(json)
            }
            (Op::Upsert, Some(key), Some(base)) => {
                let Some((held, value)) = self.values.get_mut(&key) else { return Rebuilt::Lost };
                if *held != base {
                    return Rebuilt::Lost;
                }
                apply(value, &data);
                *held = seq;
                let Ok(mut message) = serde_json::from_str::<Map<String, Value>>(json) else { return Rebuilt::Lost };
                message.remove("base");
                message.insert("data".to_owned(), value.clone());
                let Ok(json) = serde_json::to_string(&message) else { return Rebuilt::Lost };
                Rebuilt::Whole { json, changed: Some(changed_fields(&data)) }
            }
            (Op::Upsert, Some(key), None) => {
                self.values.insert(key, (seq, data));
                whole(json)
            }
            _ => whole(json),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        assert_eq!(table.rebuild(3, &first), Rebuilt::Whole { json: first.clone(), changed: None });
        let Rebuilt::Whole { json, changed } = table.rebuild(7, &message(7, "a", Some(3), json!({"fill": 0.95})))
        else {
            panic!("rebuilt")
        };
        let rebuilt: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(rebuilt["data"], json!({"fill": 0.95, "venue": "LDN"}));
        assert_eq!((rebuilt["seq"].as_u64(), rebuilt.get("base")), (Some(7), None));
        assert_eq!(changed, Some(vec!["fill".to_owned()]));
        assert_eq!(table.rebuild(9, &message(9, "a", Some(3), json!({"fill": 1.0}))), Rebuilt::Lost, "stale base");
        assert_eq!(table.rebuild(9, &message(9, "b", Some(3), json!({}))), Rebuilt::Lost, "unknown key");
    }

    #[test]
    fn deletes_and_clears_forget_values() {
        let mut table = DeltaTable::default();
        table.rebuild(1, &message(1, "a", None, json!({"x": 1})));
        let delete = json!({"type": "lp", "channel": "c", "seq": 2, "key": "a", "op": "delete", "data": null});
        table.rebuild(2, &delete.to_string());
        assert_eq!(table.rebuild(3, &message(3, "a", Some(1), json!({"x": 2}))), Rebuilt::Lost);
        table.rebuild(4, &message(4, "b", None, json!({"x": 1})));
        table.rebuild(5, &json!({"type": "lp", "channel": "c", "seq": 5, "op": "clear", "data": null}).to_string());
        assert_eq!(table.rebuild(6, &message(6, "b", Some(4), json!({"x": 2}))), Rebuilt::Lost);
    }
}
