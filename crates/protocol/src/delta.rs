//! Field deltas: a keyed publication sent as the change from the previous value of its
//! key that the subscriber was sent, instead of the whole record.
//!
//! A subscription asks with `options.deltas`; `subscribed.deltas` says whether the
//! server granted it. A publication then may carry `base`: its `data` is an RFC 7396
//! JSON merge patch that turns the value of the same key at seq `base` (which the
//! subscriber received, whole or as a delta) into the new value. Without `base`, `data`
//! is the whole value, as always.
//!
//! **Why merge patch.** On the demo's channels (see `tidewire-bench deltas`) a merge
//! patch is as small as an RFC 6902 JSON Patch of the same change or smaller (it names
//! each changed field once, with no `op` or `path` per change), it is itself a JSON
//! object shaped like the record, so a reader sees which fields changed without a path
//! parser, and applying it is a recursive object merge. Its one limit, a field *set* to
//! `null` (a patch's `null` removes the field), is met by sending the whole value
//! instead: [`diff`] returns `None` for such a change.
//!
//! **When the server sends whole values.** The first value of a key a subscription gets
//! (its snapshot item, or the first after its start), the first after a drop (a
//! superseded value's successor in the queue goes whole; an overflow makes the client
//! recover, and recovery starts again with whole values), every value whose data or
//! predecessor is not a JSON object, and every value whose patch would not be smaller.
//! A client that receives a `base` it does not hold (it never should) treats it as a
//! loss and recovers; it never shows a value it could not reconstruct.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`, when both are JSON objects and the
/// change can be expressed (no field changes to `null`; arrays are replaced whole).
/// An unchanged value gives the empty patch `{}`.
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else { return None };
    diff_objects(old, new).map(Value::Object)
}

fn diff_objects(old: &Map<String, Value>, new: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut patch = Map::new();
    for field in old.keys() {
        if !new.contains_key(field) {
            patch.insert(field.clone(), Value::Null);
        }
    }
    for (field, value) in new {
        match (old.get(field), value) {
            (Some(before), after) if before == after => {}
            (_, Value::Null) => return None,
            (Some(Value::Object(before)), Value::Object(after)) => {
                let inner = diff_objects(before, after)?;
                patch.insert(field.clone(), Value::Object(inner));
            }
            // A new or replaced object must not be read as a patch of nothing: a nested
            // `null` in it would be taken as "remove".
            (_, Value::Object(after)) if contains_null(after) => return None,
            (_, after) => {
                patch.insert(field.clone(), after.clone());
            }
        }
    }
    Some(patch)
}

fn contains_null(object: &Map<String, Value>) -> bool {
    object.values().any(|v| match v {
        Value::Null => true,
        Value::Object(inner) => contains_null(inner),
        _ => false,
    })
}

/// Applies a merge patch to `target` (RFC 7396): fields of an object patch are set,
/// `null` removes, objects merge recursively; any other patch replaces the target.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else { return };
    for (field, value) in fields {
        if value.is_null() {
            object.remove(field);
        } else {
            apply(object.entry(field.clone()).or_insert(Value::Null), value);
        }
    }
}

/// [`apply`] on JSON text, for readers that keep values as text (the browser client,
/// where a JSON tree costs code size): `target` with `patch` applied, or `None` when
/// either is not valid JSON. Fields keep their order (new ones come last), and values
/// a patch does not touch keep their text.
pub fn apply_to_text(target: &str, patch: &str) -> Option<String> {
    let Ok(Fields(changes)) = serde_json::from_str::<Fields<'_>>(patch) else {
        // Not an object: the patch replaces the target (after checking it is JSON).
        return serde_json::from_str::<&RawValue>(patch).ok().map(|v| v.get().to_owned());
    };
    let Fields(object) = serde_json::from_str::<Fields<'_>>(target).unwrap_or_default();
    let mut merged: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        object.into_iter().map(|(k, v)| (k, Cow::Borrowed(v.get()))).collect();
    for (field, value) in changes {
        let text = value.get();
        let at = merged.iter().position(|(k, _)| *k == field);
        if text == "null" {
            if let Some(at) = at {
                merged.remove(at);
            }
            continue;
        }
        let rebuilt = match at.map(|at| &merged[at].1) {
            Some(before) if text.starts_with('{') && before.starts_with('{') => apply_to_text(before, text)?,
            _ if text.starts_with('{') => apply_to_text("{}", text)?,
            _ => text.to_owned(),
        };
        match at {
            Some(at) => merged[at].1 = Cow::Owned(rebuilt),
            None => merged.push((field, Cow::Owned(rebuilt))),
        }
    }
    Some(write_object(merged.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))))
}

/// `{"field":value,…}` from field names and value texts.
pub fn write_object<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (field, value) in fields {
        if out.len() > 1 {
            out.push(',');
        }
        write_string(&mut out, field);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// A JSON string literal.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[n >> 4]));
                out.push(char::from(HEX[n & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An object's fields in order, as borrowed text: what [`apply_to_text`] reads, without
/// building a JSON tree.
#[derive(Debug, Default)]
pub struct Fields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Fields<'de>, M::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    match fields.iter().position(|(k, _): &(Cow<'de, str>, _)| *k == field) {
                        Some(at) => fields[at] = (field, value),
                        None => fields.push((field, value)),
                    }
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The top-level fields a patch changes (set or removed), in its order: what a view
/// highlights.
pub fn changed_fields(patch: &Value) -> Vec<String> {
    patch.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_patch_names_what_changed() {
        let old = json!({"lp": "LP-1", "fill": 0.9, "spread": 1.2, "venue": {"id": 3, "name": "X"}, "tags": [1]});
        let new = json!({"lp": "LP-1", "fill": 0.95, "venue": {"id": 3, "name": "Y"}, "tags": [1, 2]});
        let patch = diff(&old, &new).unwrap();
        assert_eq!(patch, json!({"spread": null, "fill": 0.95, "venue": {"name": "Y"}, "tags": [1, 2]}));
        assert_eq!(changed_fields(&patch), ["spread", "fill", "venue", "tags"]);
        let mut rebuilt = old.clone();
        apply(&mut rebuilt, &patch);
        assert_eq!(rebuilt, new);
        assert_eq!(diff(&new, &new), Some(json!({})));
    }

    #[test]
    fn what_a_merge_patch_cannot_say_has_no_patch() {
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": null})), None, "a field set to null");
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": 1, "b": {"c": null}})), None, "a new object holding null");
        assert_eq!(diff(&json!({"a": 1}), &json!([1])), None, "not an object");
        assert_eq!(diff(&json!(3), &json!({"a": 1})), None, "an old value that is not an object");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-50i64..50).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-e]", json_value(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn text_and_tree_apply_agree(target in json_value(), patch in json_value()) {
            let mut expected = target.clone();
            apply(&mut expected, &patch);
            let text = apply_to_text(&target.to_string(), &patch.to_string()).unwrap();
            let rebuilt: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(rebuilt, expected);
        }

        #[test]
        fn applying_a_diff_rebuilds_the_new_value(old in json_object(), new in json_object()) {
            if let Some(patch) = diff(&old, &new) {
                let mut rebuilt = old.clone();
                apply(&mut rebuilt, &patch);
                prop_assert_eq!(rebuilt, new);
            } else {
                // Only a change to null (somewhere) has no patch.
                prop_assert!(new.to_string().contains("null"));
            }
        }
    }
}
