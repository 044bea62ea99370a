//! From a broker event to a publication: the routing rules, as pure functions.
//!
//! An event is a JSON object that arrived with a routing key (AMQP) or a subject (NATS).
//! Routes are tried in order; the first whose conditions hold decides:
//!
//! - `when_key`: the key matches a pattern of dot-separated tokens, where `*` is one token
//!   and `#` (AMQP) or `>` (NATS) is the rest;
//! - `when_field`: the event has this top-level field (`when_equals` narrows it to a
//!   value).
//!
//! `channel`, `type` and `key` are templates: `{field}` is the event's top-level field
//! (a string, or a number), `{key}` the routing key or subject. `type` defaults to
//! `{type}` when the event has a `type` field and to `{key}` otherwise; `data` names a
//! field to publish instead of the whole event. An event no route takes, or whose
//! templates cannot be filled, is not publishable: it goes to the dead letter with the
//! reason.

use serde::Deserialize;
use serde_json::{Map, Value};
use tidewire_protocol::NewPublication;

/// One route of the routing file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub when_key: Option<String>,
    #[serde(default)]
    pub when_field: Option<String>,
    #[serde(default)]
    pub when_equals: Option<String>,
    pub channel: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
}

/// Why an event cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("the event is not a JSON object: {0}")]
    NotJson(String),
    #[error("no route matches key {0:?}")]
    NoRoute(String),
    #[error("the event has no usable field {0:?} (a string or a number) for the template")]
    MissingField(String),
    #[error("the template {0:?} is malformed")]
    BadTemplate(String),
}

/// Whether a routing key or subject matches a pattern (`*` one token, `#`/`>` the rest).
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    for token in pattern.split('.') {
        match token {
            "#" | ">" => return true,
            "*" => {
                if keys.next().is_none() {
                    return false;
                }
            }
            literal => {
                if keys.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    keys.next().is_none()
}

fn field_text(event: &Map<String, Value>, field: &str) -> Option<String> {
    match event.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Fills `{field}` and `{key}` placeholders.
pub fn render(template: &str, event: &Map<String, Value>, key: &str) -> Result<String, Unroutable> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| Unroutable::BadTemplate(template.to_owned()))?;
        let name = &after[..close];
        if name.is_empty() || name.contains('{') {
            return Err(Unroutable::BadTemplate(template.to_owned()));
        }
        if name == "key" {
            out.push_str(key);
        } else {
            out.push_str(&field_text(event, name).ok_or_else(|| Unroutable::MissingField(name.to_owned()))?);
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(Unroutable::BadTemplate(template.to_owned()));
    }
    out.push_str(rest);
    Ok(out)
}

/// Routes one event. The publication still goes through the hub's validation (channel
/// names, types, sizes), whose refusals are dead-lettered too.
pub fn route(routes: &[Route], key: &str, payload: &[u8]) -> Result<NewPublication, Unroutable> {
    let mut event: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(Unroutable::NotJson("expected an object".to_owned())),
        Err(e) => return Err(Unroutable::NotJson(e.to_string())),
    };
    let chosen = routes.iter().find(|r| {
        r.when_key.as_deref().is_none_or(|p| key_matches(p, key))
            && r.when_field.as_deref().is_none_or(|f| match (field_text(&event, f), &r.when_equals) {
                (Some(value), Some(expected)) => &value == expected,
                (Some(_), None) => true,
                (None, _) => false,
            })
    });
    let route = chosen.ok_or_else(|| Unroutable::NoRoute(key.to_owned()))?;
    let channel = render(&route.channel, &event, key)?;
    let kind = match &route.kind {
        Some(template) => render(template, &event, key)?,
        None => field_text(&event, "type").unwrap_or_else(|| key.to_owned()),
    };
    let publication_key = route.key.as_deref().map(|t| render(t, &event, key)).transpose()?;
    let data = match &route.data {
        Some(field) => event.remove(field).ok_or_else(|| Unroutable::MissingField(field.clone()))?,
        None => Value::Object(event),
    };
    Ok(NewPublication { channel, kind, data, key: publication_key, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(toml_text: &str) -> Vec<Route> {
        #[derive(Deserialize)]
        struct File {
            route: Vec<Route>,
        }
        toml::from_str::<File>(toml_text).unwrap().route
    }

    #[test]
    fn key_patterns() {
        assert!(key_matches("backtest.*", "backtest.completed"));
        assert!(!key_matches("backtest.*", "backtest.completed.late"));
        assert!(!key_matches("backtest.*", "backtest"));
        assert!(key_matches("optimization.#", "optimization.iteration.completed"));
        assert!(key_matches("events.>", "events.a.b"));
        assert!(key_matches("#", "anything.at.all"));
        assert!(key_matches("a.b", "a.b"));
        assert!(!key_matches("a.b", "a.c"));
    }

    #[test]
    fn seed_event_type_to_channel() {
        let routes = route_of(
            r##"
            [[route]]
            when_key = "backtest.*"
            channel = "backtests"
            key = "{job_id}"
            [[route]]
            when_key = "#"
            channel = "events"
            "##,
        );
        let p =
            route(&routes, "backtest.completed", br#"{"type":"backtest.completed","job_id":"j1","sharpe_ratio":1.85}"#)
                .unwrap();
        assert_eq!(
            (p.channel.as_str(), p.kind.as_str(), p.key.as_deref()),
            ("backtests", "backtest.completed", Some("j1"))
        );
        assert_eq!(p.data["sharpe_ratio"], 1.85);
        let p = route(&routes, "strategy.discovered", br#"{"strategy_id":"s"}"#).unwrap();
        assert_eq!((p.channel.as_str(), p.kind.as_str()), ("events", "strategy.discovered"));
    }

    #[test]
    fn seed_assessment_to_a_user_scoped_channel() {
        let routes = route_of(
            r##"
            [[route]]
            when_field = "assessmentId"
            channel = "assessment#{assessmentId}"
            type = "{type}"
            "##,
        );
        let p =
            route(&routes, "pnl", br#"{"type":"pnl_update","assessmentId":"assessment-123","unrealizedPnl":1500.0}"#)
                .unwrap();
        assert_eq!((p.channel.as_str(), p.kind.as_str()), ("assessment#assessment-123", "pnl_update"));
        assert_eq!(route(&routes, "pnl", br#"{"type":"x"}"#), Err(Unroutable::NoRoute("pnl".into())));
    }

    #[test]
    fn conditions_templates_and_failures() {
        let routes = route_of(
            r##"
            [[route]]
            when_field = "severity"
            when_equals = "critical"
            channel = "alerts-critical"
            data = "payload"
            [[route]]
            when_field = "severity"
            channel = "alerts-{severity}-{key}"
            "##,
        );
        let p = route(&routes, "k", br#"{"severity":"critical","payload":{"x":1}}"#).unwrap();
        assert_eq!((p.channel.as_str(), p.data.clone()), ("alerts-critical", serde_json::json!({"x": 1})));
        let p = route(&routes, "k", br#"{"severity":"info"}"#).unwrap();
        assert_eq!(p.channel, "alerts-info-k");
        assert_eq!(route(&routes, "k", br#"{"severity":"critical"}"#), Err(Unroutable::MissingField("payload".into())));
        assert!(matches!(route(&routes, "k", b"not json"), Err(Unroutable::NotJson(_))));
        assert!(matches!(route(&routes, "k", b"[1]"), Err(Unroutable::NotJson(_))));
        let map = serde_json::Map::new();
        assert_eq!(render("{", &map, "k"), Err(Unroutable::BadTemplate("{".into())));
        assert_eq!(render("a}", &map, "k"), Err(Unroutable::BadTemplate("a}".into())));
        assert_eq!(render("{}", &map, "k"), Err(Unroutable::BadTemplate("{}".into())));
        assert_eq!(render("x-{nope}", &map, "k"), Err(Unroutable::MissingField("nope".into())));
    }
}
