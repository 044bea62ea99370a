//! The operator API against a real node over real sockets: disconnecting a user or one
//! connection (with a code that says whether to reconnect), taking a user off a
//! channel, and the refusals for everyone without the operator grant.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::NewPublication;

async fn connected(server: &TestServer, user: &str) -> (Client, String) {
    let mut client = server.client(user).await;
    let hello = client.expect_type("connected").await;
    (client, hello["connectionId"].as_str().unwrap().to_owned())
}

async fn order(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    http_request(server, "POST", path, Some(&operator_token()), Some(&body.to_string())).await
}

async fn still_alive(client: &mut Client) {
    client.send(r#"{"action":"ping","id":1}"#).await;
    assert_eq!(client.expect_type("pong").await["id"], 1);
}

#[tokio::test]
async fn disconnecting_a_user_closes_each_of_its_connections_and_no_other() {
    let server = TestServer::start().await;
    let (mut first, _) = connected(&server, "trader").await;
    let (mut second, _) = connected(&server, "trader").await;
    let (mut bystander, _) = connected(&server, "other").await;
    let (status, answer) = order(&server, "/api/disconnect", json!({"user": "trader", "reason": "compliance"})).await;
    assert_eq!((status, answer), (200, json!({"connections": 2})));
    for client in [&mut first, &mut second] {
        let closed = client.closed().await;
        assert_eq!(closed.code, 4003, "DISCONNECTED: reconnect is fine");
        assert_eq!(closed.reason, "DISCONNECTED: compliance");
    }
    still_alive(&mut bystander).await;
    let (status, answer) = order(&server, "/api/disconnect", json!({"user": "nobody"})).await;
    assert_eq!((status, answer), (200, json!({"connections": 0})));
}

#[tokio::test]
async fn one_connection_can_be_ended_for_good() {
    let server = TestServer::start().await;
    let (mut target, id) = connected(&server, "trader").await;
    let (mut sibling, _) = connected(&server, "trader").await;
    let (status, answer) = order(&server, "/api/disconnect", json!({"connection": id, "reconnect": false})).await;
    assert_eq!((status, answer), (200, json!({"connections": 1})));
    let closed = target.closed().await;
    assert_eq!(closed.code, 4504, "REVOKED: terminal");
    assert!(closed.reason.starts_with("REVOKED"), "{}", closed.reason);
    still_alive(&mut sibling).await;
}

#[tokio::test]
async fn unsubscribing_a_user_tells_it_why_and_delivery_stops() {
    let server = TestServer::start().await;
    let (mut client, _) = connected(&server, "trader").await;
    client.send(r#"{"action":"subscribe","channels":["exposure","alerts"]}"#).await;
    client.expect_type("subscribed").await;
    client.expect_type("subscribed").await;
    let body = json!({"user": "trader", "channel": "exposure", "reason": "book closed"});
    let (status, answer) = order(&server, "/api/unsubscribe", body).await;
    assert_eq!((status, answer), (200, json!({"connections": 1})));
    let unsubscribed = client.expect_type("unsubscribed").await;
    assert_eq!(
        (unsubscribed["channel"].as_str(), unsubscribed["code"].as_str(), unsubscribed["message"].as_str()),
        (Some("exposure"), Some("FORBIDDEN"), Some("book closed"))
    );
    let publish = |channel: &str| NewPublication {
        channel: channel.into(),
        kind: "tick".into(),
        data: json!(1),
        ..Default::default()
    };
    server.hub.publish(publish("exposure")).await.unwrap();
    server.hub.publish(publish("alerts")).await.unwrap();
    let next = client.expect_type("tick").await;
    assert_eq!(next["channel"], "alerts", "exposure no longer arrives; alerts still does");
    let (status, answer) = order(&server, "/api/unsubscribe", json!({"user": "trader", "channel": "exposure"})).await;
    assert_eq!((status, answer), (200, json!({"connections": 1})), "taken, with nothing to leave");
    assert!(client.try_next(Duration::from_millis(200)).await.unwrap().is_none(), "and nothing sent");
}

#[tokio::test]
async fn only_operators_may_give_orders_and_bad_orders_are_refused() {
    let server = TestServer::start().await;
    let (mut client, _) = connected(&server, "trader").await;
    let body = json!({"user": "trader"}).to_string();
    for path in ["/api/disconnect", "/api/unsubscribe"] {
        let (status, answer) = http_request(&server, "POST", path, None, Some(&body)).await;
        assert_eq!((status, answer["code"].as_str()), (401, Some("AUTH_REQUIRED")), "{path}");
        let (status, answer) = http_request(&server, "POST", path, Some(&publisher_token()), Some(&body)).await;
        assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")), "{path}: a publish grant is not one");
        let (status, answer) = http_request(&server, "POST", path, Some(&token("trader")), Some(&body)).await;
        assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")), "{path}: a browser token");
    }
    let refused = [
        ("/api/disconnect", json!({}), "BAD_REQUEST"),
        ("/api/disconnect", json!({"user": ""}), "BAD_REQUEST"),
        ("/api/disconnect", json!({"user": "trader", "reason": "x".repeat(101)}), "BAD_REQUEST"),
        ("/api/disconnect", json!({"user": "trader", "code": 1000}), "BAD_REQUEST"),
        ("/api/unsubscribe", json!({"user": "trader"}), "BAD_REQUEST"),
        ("/api/unsubscribe", json!({"user": "trader", "channel": "no spaces"}), "INVALID_CHANNEL"),
    ];
    for (path, body, code) in refused {
        let (status, answer) = order(&server, path, body.clone()).await;
        assert_eq!(answer["code"].as_str(), Some(code), "{path} {body}: {status} {answer}");
    }
    still_alive(&mut client).await;
}

async fn history(server: &TestServer, query: &str) -> (u16, Value) {
    http_request(server, "GET", &format!("/api/history?{query}"), Some(&operator_token()), None).await
}

fn seqs(page: &Value) -> Vec<u64> {
    page["publications"].as_array().unwrap().iter().map(|p| p["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn history_pages_return_exactly_the_stored_publications() {
    let server = TestServer::with(|c| c.history_size = 8).await;
    for n in 1..=10 {
        let tick =
            NewPublication { channel: "ticks".into(), kind: "tick".into(), data: json!(n), ..Default::default() };
        server.hub.publish(tick).await.unwrap();
    }
    let (status, page) = history(&server, "channel=ticks&limit=3").await;
    assert_eq!(status, 200);
    assert_eq!((seqs(&page), page["more"].as_bool(), page["head"].as_u64()), (vec![3, 4, 5], Some(true), Some(10)));
    assert!(page["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(page["publications"][0]["data"], 3, "the publications as stored");
    // Paging oldest first from `since` walks every stored publication once.
    let (mut since, mut all) = (0, Vec::new());
    loop {
        let (_, page) = history(&server, &format!("channel=ticks&limit=3&since={since}")).await;
        all.extend(seqs(&page));
        since = *all.last().unwrap();
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(all, (3..=10).collect::<Vec<_>>(), "the last eight, as --history-size keeps");
    let (_, page) = history(&server, "channel=ticks&order=newest&limit=2").await;
    assert_eq!(seqs(&page), [10, 9]);
    let (_, page) = history(&server, "channel=ticks&order=newest&since=8").await;
    assert_eq!((seqs(&page), page["more"].as_bool()), (vec![10, 9], Some(false)));
    let (_, page) = history(&server, "channel=quiet").await;
    assert_eq!((seqs(&page), page["head"].as_u64()), (vec![], Some(0)), "a channel with nothing stored");
}

#[tokio::test]
async fn history_is_for_operators_and_bad_queries_are_refused() {
    let server = TestServer::start().await;
    let path = "/api/history?channel=ticks";
    let (status, answer) = http_request(&server, "GET", path, None, None).await;
    assert_eq!((status, answer["code"].as_str()), (401, Some("AUTH_REQUIRED")));
    let (status, answer) = http_request(&server, "GET", path, Some(&publisher_token()), None).await;
    assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")));
    for (query, code) in [
        ("", "BAD_REQUEST"),
        ("channel=ticks&limit=0", "BAD_REQUEST"),
        ("channel=ticks&limit=1001", "BAD_REQUEST"),
        ("channel=ticks&since=-1", "BAD_REQUEST"),
        ("channel=ticks&order=sideways", "BAD_REQUEST"),
        ("channel=ticks&page=2", "BAD_REQUEST"),
        ("channel=no%20spaces", "INVALID_CHANNEL"),
    ] {
        let (status, answer) = history(&server, query).await;
        assert_eq!(answer["code"].as_str(), Some(code), "{query}: {status} {answer}");
    }
}

#[tokio::test]
async fn info_shows_the_node_and_is_for_operators() {
    let server = TestServer::start().await;
    let (mut client, id) = connected(&server, "trader").await;
    client.send(r#"{"action":"subscribe","channels":["alerts"]}"#).await;
    client.expect_type("subscribed").await;
    let (status, body) = http_request(&server, "GET", "/api/info", Some(&operator_token()), None).await;
    assert_eq!(status, 200, "{body}");
    let node = &body["node"];
    assert_eq!((node["connections"].as_u64(), node["subscriptions"].as_u64()), (Some(1), Some(1)));
    assert_eq!((node["engine"].as_str(), node["draining"].as_bool()), (Some("memory"), Some(false)));
    assert!(id.starts_with(node["id"].as_str().unwrap()), "connection ids start with their node's id");
    assert_eq!(body["nodes"], json!([node]), "one node alone lists itself");
    let (status, answer) = http_request(&server, "GET", "/api/info", Some(&publisher_token()), None).await;
    assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, answer) = http_request(&server, "GET", "/api/info", None, None).await;
    assert_eq!((status, answer["code"].as_str()), (401, Some("AUTH_REQUIRED")));
}
