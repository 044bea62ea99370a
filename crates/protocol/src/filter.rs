//! Server-side subscription filters: only some message types, only some keys.
//!
//! A subscription may restrict itself (`options.types`, `options.keys` on `subscribe`)
//! so the server never sends what the view would throw away. The rule is evaluated at
//! fan-out, once per publication and filtered subscriber, with a binary search in
//! sorted lists whose length the protocol bounds ([`MAX_FILTER_TYPES`],
//! [`MAX_FILTER_KEYS`]).
//!
//! A filtered subscription's seqs are not contiguous: the server skips what the filter
//! excludes. It still announces every real loss (`gap` notices for what backpressure
//! drops, `recovered: false` when history is gone), so a client of a filtered
//! subscription takes seq jumps as filtered, not missing, and recovers only on a notice.

use crate::message::{MessageTypeError, validate_message_type};

/// The most message types one filter may name.
pub const MAX_FILTER_TYPES: usize = 16;
/// The most keys one filter may name.
pub const MAX_FILTER_KEYS: usize = 256;
/// The longest key a filter may name, in bytes (as long as a publication's key).
pub const MAX_KEY_BYTES: usize = 255;

/// Why a filter is refused (the server answers `BAD_REQUEST` with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("options.{0} must name at least one entry (leave it out to receive everything)")]
    Empty(&'static str),
    #[error("options.types names {0} types; at most {MAX_FILTER_TYPES} are allowed")]
    TooManyTypes(usize),
    #[error("options.keys names {0} keys; at most {MAX_FILTER_KEYS} are allowed")]
    TooManyKeys(usize),
    #[error("options.types: {0}")]
    BadType(MessageTypeError),
    #[error("options.keys: a key must be 1..={MAX_KEY_BYTES} bytes")]
    BadKey,
}

/// A validated filter: sorted, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    types: Option<Vec<Box<str>>>,
    keys: Option<Vec<Box<str>>>,
}

impl Filter {
    /// The filter of a subscription's options; `None` when it asks for no filtering.
    pub fn new(types: Option<&[String]>, keys: Option<&[String]>) -> Result<Option<Filter>, FilterError> {
        if types.is_none() && keys.is_none() {
            return Ok(None);
        }
        let types = match types {
            None => None,
            Some([]) => return Err(FilterError::Empty("types")),
            Some(types) if types.len() > MAX_FILTER_TYPES => return Err(FilterError::TooManyTypes(types.len())),
            Some(types) => {
                for kind in types {
                    validate_message_type(kind).map_err(FilterError::BadType)?;
                }
                Some(sorted(types))
            }
        };
        let keys = match keys {
            None => None,
            Some([]) => return Err(FilterError::Empty("keys")),
            Some(keys) if keys.len() > MAX_FILTER_KEYS => return Err(FilterError::TooManyKeys(keys.len())),
            Some(keys) => {
                if keys.iter().any(|k| k.is_empty() || k.len() > MAX_KEY_BYTES) {
                    return Err(FilterError::BadKey);
                }
                Some(sorted(keys))
            }
        };
        Ok(Some(Filter { types, keys }))
    }

    /// Whether a publication of type `kind` with `key` passes. A key filter restricts
    /// keyed publications; unkeyed ones (facts, and a `clear` of the table) pass it.
    pub fn admits(&self, kind: &str, key: Option<&str>) -> bool {
        let kind_ok = self.types.as_ref().is_none_or(|types| types.binary_search_by(|t| (**t).cmp(kind)).is_ok());
        let key_ok = match (&self.keys, key) {
            (Some(keys), Some(key)) => keys.binary_search_by(|k| (**k).cmp(key)).is_ok(),
            _ => true,
        };
        kind_ok && key_ok
    }

    /// The keys it admits, sorted (`None`: every key).
    pub fn keys(&self) -> Option<&[Box<str>]> {
        self.keys.as_deref()
    }

    /// Whether the filter looks at keys (so a caller without a publication's key must
    /// read it, [`publication_key`], before asking).
    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether the publication's type passes (a text without a type passes only a
    /// filter without types): the cheap half, to check before reading a key.
    pub fn admits_type_of(&self, text: &str) -> bool {
        match (&self.types, publication_kind(text)) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(kind)) => self.admits(kind, None),
        }
    }

    /// [`Filter::admits`] for an encoded publication (its type read from the text).
    pub fn admits_encoded(&self, text: &str, key: Option<&str>) -> bool {
        match (&self.types, publication_kind(text)) {
            (Some(_), None) => false,
            (_, kind) => self.admits(kind.unwrap_or_default(), key),
        }
    }

    /// What the filter holds, in bytes (it counts against the subscriber's budget).
    pub fn bytes(&self) -> usize {
        let sum = |list: &Option<Vec<Box<str>>>| list.as_ref().map_or(0, |l| l.iter().map(|s| s.len() + 16).sum());
        sum(&self.types) + sum(&self.keys)
    }
}

fn sorted(items: &[String]) -> Vec<Box<str>> {
    let mut items: Vec<Box<str>> = items.iter().map(|s| s.as_str().into()).collect();
    items.sort();
    items.dedup();
    items
}

/// The `type` of an encoded publication, read from its text without parsing it: the
/// first `"type":"…"` (a publication's `type` precedes its data, and message types hold
/// no quotes or escapes).
pub fn publication_kind(text: &str) -> Option<&str> {
    const FIELD: &str = "\"type\":\"";
    let at = text.find(FIELD)? + FIELD.len();
    let rest = &text[at..];
    rest.find('"').map(|end| &rest[..end])
}

/// The `key` of an encoded publication (parsed: a key may hold escapes).
pub fn publication_key(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Keyed {
        #[serde(default)]
        key: Option<String>,
    }
    serde_json::from_str::<Keyed>(text).ok()?.key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn filters_admit_what_they_name() {
        let types = strings(&["alert", "lp-metrics"]);
        let keys = strings(&["OANDA", "LMAX", "OANDA"]);
        let filter = Filter::new(Some(&types), Some(&keys)).unwrap().unwrap();
        assert!(filter.admits("lp-metrics", Some("OANDA")));
        assert!(!filter.admits("lp-metrics", Some("Citi")), "a key not named");
        assert!(!filter.admits("routing-decision", None), "a type not named");
        assert!(filter.admits("alert", None), "unkeyed publications pass a key filter");
        assert_eq!(Filter::new(None, None), Ok(None));
    }

    #[test]
    fn encoded_publications_are_read_without_parsing() {
        let text = r#"{"type":"lp-metrics","timestamp":"t","channel":"c","seq":1,"key":"A","data":{"type":"x"}}"#;
        assert_eq!(publication_kind(text), Some("lp-metrics"));
        assert_eq!(publication_kind(r#"{"snapshot":true,"type":"row","seq":1}"#), Some("row"));
        let only_rows = Filter::new(Some(&strings(&["row"])), None).unwrap().unwrap();
        assert!(!only_rows.admits_encoded(text, Some("A")));
        assert!(!only_rows.admits_encoded("{}", None), "a text without a type is not admitted by a type filter");
        assert_eq!(publication_key(text).as_deref(), Some("A"));
        assert_eq!(publication_key(r#"{"type":"t","key":"a\"b","data":1}"#).as_deref(), Some("a\"b"));
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        let many: Vec<String> = (0..=MAX_FILTER_KEYS).map(|i| format!("k{i}")).collect();
        assert_eq!(Filter::new(None, Some(&many)), Err(FilterError::TooManyKeys(MAX_FILTER_KEYS + 1)));
        assert_eq!(Filter::new(Some(&[]), None), Err(FilterError::Empty("types")));
        assert!(matches!(Filter::new(Some(&strings(&["gap"])), None), Err(FilterError::BadType(_))));
        assert_eq!(Filter::new(None, Some(&strings(&[""]))), Err(FilterError::BadKey));
        let types: Vec<String> = (0..=MAX_FILTER_TYPES).map(|i| format!("t{i}")).collect();
        assert_eq!(Filter::new(Some(&types), None), Err(FilterError::TooManyTypes(MAX_FILTER_TYPES + 1)));
    }
}
