//! The OpenAPI description (`docs/openapi.json`) against a real node: every route the
//! router serves is described and every described route is served; each endpoint's
//! answers, the successes and the refusals, match the schema described for their
//! status; the requests sent match the request schemas; and the error codes are the
//! protocol's.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// A JSON pointer's token for `text`.
fn escape(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// Validates `instance` against the schema at `pointer` in the description (its
/// `$ref`s resolve in the description itself).
fn check(spec: &Value, pointer: &str, instance: &Value, what: &str) {
    assert!(spec.pointer(pointer).is_some(), "{what}: docs/openapi.json has nothing at {pointer}");
    let errors = errors(spec, pointer, instance);
    assert!(errors.is_empty(), "{what}: {instance}\ndoes not match {pointer}:\n{}", errors.join("\n"));
}

fn errors(spec: &Value, pointer: &str, instance: &Value) -> Vec<String> {
    let mut root = spec.clone();
    root["$ref"] = Value::String(format!("#{pointer}"));
    let validator = jsonschema::validator_for(&root).expect("the description's schemas compile");
    validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

#[test]
fn the_check_refuses_answers_unlike_their_schema() {
    let spec = spec();
    let info = "/paths/~1api~1info/get/responses/200/content/application~1json/schema";
    assert!(!errors(&spec, info, &json!({"node": {"id": "x"}, "nodes": []})).is_empty(), "a node without its fields");
    let error = "/components/schemas/Error";
    assert!(errors(&spec, error, &json!({"code": "BAD_REQUEST", "message": "m"})).is_empty());
    assert!(!errors(&spec, error, &json!({"code": "NOT_A_CODE", "message": "m"})).is_empty());
    assert!(!errors(&spec, error, &json!({"code": "BAD_REQUEST", "message": "m", "extra": 1})).is_empty());
}

#[test]
fn every_route_is_described_and_every_description_is_served() {
    let spec = spec();
    let described: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |method| (path.clone(), method.clone())))
        .collect();
    let router = include_str!("../src/http/mod.rs");
    let served: BTreeSet<(String, String)> = router
        .split(".route(\"")
        .skip(1)
        .map(|rest| {
            let (path, rest) = rest.split_once('"').unwrap();
            let method = rest.trim_start_matches(", ").split('(').next().unwrap();
            (path.to_owned(), method.to_owned())
        })
        .collect();
    assert!(!served.is_empty());
    assert_eq!(described, served, "docs/openapi.json paths vs the router's routes");
}

#[test]
fn the_error_codes_are_the_protocols() {
    let spec = spec();
    let described: Vec<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let codes: Vec<&str> = tidewire_protocol::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(described, codes);
}

/// One request to the node, checked against the description: the request body against
/// the operation's request schema (when `valid_body`), the answer against the schema
/// of its status.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    token: Option<String>,
    body: Option<Value>,
    valid_body: bool,
    status: u16,
}

fn call<'a>(method: &'a str, path: &'a str, token: Option<String>, body: Option<Value>, status: u16) -> Call<'a> {
    Call { method, path, token, body, valid_body: status < 300, status }
}

#[tokio::test]
async fn every_answer_matches_its_described_schema() {
    let spec = spec();
    let server = TestServer::start().await;
    let mut client = server.client("trader").await;
    let hello = client.expect_type("connected").await;
    client.send(r#"{"action":"subscribe","channels":["alerts"]}"#).await;
    client.expect_type("subscribed").await;
    let connection = hello["connectionId"].as_str().unwrap().to_owned();
    let (op, publisher, browser) = (Some(operator_token()), Some(publisher_token()), Some(token("trader")));
    let tick = json!({"channel": "alerts", "type": "alert", "data": {"level": 1}, "key": "a"});
    let now = tidewire_server::auth::unix_now();
    let calls = [
        call("post", "/api/publish", publisher.clone(), Some(tick.clone()), 200),
        call(
            "post",
            "/api/publish",
            publisher.clone(),
            Some(json!([tick, {"channel": "alerts", "type": "alert", "data": 2}])),
            200,
        ),
        call("post", "/api/publish", None, Some(json!({"channel": "alerts", "type": "a", "data": 1})), 401),
        call("post", "/api/publish", browser.clone(), Some(json!({"channel": "alerts", "type": "a", "data": 1})), 403),
        call("post", "/api/publish", publisher.clone(), Some(json!({"channel": "a b", "type": "a", "data": 1})), 400),
        call("get", "/api/channels", op.clone(), None, 200),
        call("get", "/api/channels", browser.clone(), None, 403),
        call("post", "/api/unsubscribe", op.clone(), Some(json!({"user": "trader", "channel": "alerts"})), 200),
        call("post", "/api/unsubscribe", op.clone(), Some(json!({"user": "trader"})), 400),
        call("get", "/api/history?channel=alerts&limit=10&order=newest", op.clone(), None, 200),
        call("get", "/api/history?channel=alerts&limit=0", op.clone(), None, 400),
        call("get", "/api/history?channel=alerts", None, None, 401),
        call("get", "/api/info", op.clone(), None, 200),
        call("get", "/api/info", publisher.clone(), None, 403),
        call("get", "/api/presence?channel=alerts", op.clone(), None, 200),
        call("get", "/api/presence?channel=alerts&users=false", op.clone(), None, 200),
        call("get", "/api/presence", op.clone(), None, 400),
        call("post", "/api/revoke", op.clone(), Some(json!({"jti": "t-9", "expiresAt": now + 60})), 200),
        call("post", "/api/revoke", op.clone(), Some(json!({"user": "someone", "issuedBefore": now})), 200),
        call("post", "/api/revoke", op.clone(), Some(json!({"jti": "t-9", "user": "someone"})), 400),
        call("post", "/api/disconnect", op.clone(), Some(json!({"connection": connection, "reconnect": false})), 200),
        call("post", "/api/disconnect", op.clone(), Some(json!({"user": "trader", "reason": "x".repeat(101)})), 400),
        call("post", "/api/disconnect", None, Some(json!({"user": "trader"})), 401),
        call("get", "/api/connections", op.clone(), None, 200),
        call("get", "/api/connections?user=trader", op.clone(), None, 200),
        call("get", "/api/connections?user=", op.clone(), None, 400),
        call("get", "/api/trace", op.clone(), None, 400),
        call("get", "/api/trace?user=trader", browser.clone(), None, 403),
        call("get", "/health", None, None, 200),
        call("get", "/ready", None, None, 200),
        call("get", "/ws", None, None, 400),
        call("get", "/sse", browser.clone(), None, 400),
        call("post", "/http/send", browser.clone(), Some(json!({"action": "ping"})), 400),
    ];
    let mut covered = BTreeSet::new();
    for Call { method, path, token, body, valid_body, status } in calls {
        let route = path.split('?').next().unwrap();
        let operation = format!("/paths/{}/{method}", escape(route));
        let what = format!("{} {path} → {status}", method.to_uppercase());
        if let (Some(body), true) = (&body, valid_body) {
            check(&spec, &format!("{operation}/requestBody/content/application~1json/schema"), body, &what);
        }
        let text = body.map(|b| b.to_string());
        let (got, answer) =
            http_request(&server, &method.to_uppercase(), path, token.as_deref(), text.as_deref()).await;
        assert_eq!(got, status, "{what}: {answer}");
        check(&spec, &format!("{operation}/responses/{status}/content/application~1json/schema"), &answer, &what);
        covered.insert((route.to_owned(), status < 300));
    }
    // The fallback session's stream, and a command it takes.
    let mut session = server.client_on(Transport::Http, "trader").await;
    assert_eq!(session.next().await["type"], "connected");
    let id = session.http().id.clone().unwrap();
    let (status, _) = post_command(server.addr, Some(&id), Some(&token("trader")), br#"{"action":"ping"}"#).await;
    assert_eq!(status, 204);
    assert!(spec.pointer("/paths/~1http~1send/post/responses/204").is_some());
    let (status, answer) = post_command(server.addr, Some("gone"), Some(&token("trader")), b"{}").await;
    assert_eq!(status, 404);
    check(&spec, "/paths/~1http~1send/post/responses/404/content/application~1json/schema", &answer, "unknown session");
    assert!(spec.pointer("/paths/~1http~1stream/get/responses/200/content/text~1event-stream").is_some());
    covered.insert(("/http/stream".to_owned(), true));
    // The trace's events, as the description says they are.
    let mut trace = EventStream::open(&server, "/api/trace?user=trader", &operator_token()).await;
    let _again = server.client("trader").await;
    let (name, event) = trace.next().await;
    assert_eq!(name, "connected");
    check(&spec, "/components/schemas/TraceEvent", &event, "a trace event");
    let (status, text) = http_text(&server, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(spec.pointer("/paths/~1metrics/get/responses/200/content/application~1openmetrics-text").is_some());
    assert!(text.contains("tidewire_"));
    // Every JSON operation was seen answering at least once, well or not.
    let described: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    let seen: BTreeSet<String> =
        covered.iter().map(|(route, _)| route.clone()).chain(["/metrics".to_owned()]).collect();
    assert_eq!(described, seen, "an operation of docs/openapi.json was not exercised");
}
