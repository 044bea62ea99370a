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

fn token_of(user: &str, jti: Option<&str>, iat: Option<u64>) -> String {
    token_with(&tidewire_server::auth::Claims { jti: jti.map(str::to_owned), iat, ..claims(user) })
}

async fn connect_with(server: &TestServer, token: &str) -> Client {
    Client::connect(&server.url(&format!("token={token}"))).await
}

#[tokio::test]
async fn a_revoked_token_ends_its_connections_and_cannot_connect_refresh_or_call_the_api() {
    let server = TestServer::start().await;
    let now = tidewire_server::auth::unix_now();
    let (revoked, kept) = (token_of("trader", Some("t-1"), Some(now)), token_of("trader", Some("t-2"), Some(now)));
    let mut on_revoked = connect_with(&server, &revoked).await;
    on_revoked.expect_type("connected").await;
    let mut on_kept = connect_with(&server, &kept).await;
    on_kept.expect_type("connected").await;
    let (status, answer) = order(&server, "/api/revoke", json!({"jti": "t-1"})).await;
    assert_eq!((status, answer["connections"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(answer["revocation"]["jti"], "t-1");
    assert!(answer["revocation"]["expiresAt"].as_u64().unwrap() > now + 3600, "kept for --revocation-ttl");
    let closed = on_revoked.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4504, "REVOKED: token revoked by an operator"));
    still_alive(&mut on_kept).await;
    // Refused at connect, at refresh, and by the API.
    let closed = connect_with(&server, &revoked).await.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4504, "REVOKED: token revoked by an operator"));
    on_kept.send_value(json!({"action": "refresh", "id": 7, "token": revoked})).await;
    let error = on_kept.expect_type("error").await;
    assert_eq!((error["id"].as_u64(), error["code"].as_str()), (Some(7), Some("TOKEN_REVOKED")));
    still_alive(&mut on_kept).await;
    let operator =
        token_with(&tidewire_server::auth::Claims { operator: true, jti: Some("op-1".into()), ..claims("operator") });
    let (status, _) = http_request(&server, "GET", "/api/info", Some(&operator), None).await;
    assert_eq!(status, 200);
    order(&server, "/api/revoke", json!({"jti": "op-1"})).await;
    let (status, answer) = http_request(&server, "GET", "/api/info", Some(&operator), None).await;
    assert_eq!((status, answer["code"].as_str()), (401, Some("TOKEN_REVOKED")));
}

#[tokio::test]
async fn revoking_a_user_takes_back_every_token_issued_before_and_none_after() {
    let server = TestServer::start().await;
    let now = tidewire_server::auth::unix_now();
    let mut old = connect_with(&server, &token_of("trader", None, Some(now - 10))).await;
    old.expect_type("connected").await;
    let mut undated = connect_with(&server, &token_of("trader", None, None)).await;
    undated.expect_type("connected").await;
    let mut other = connect_with(&server, &token_of("other", None, Some(now - 10))).await;
    other.expect_type("connected").await;
    let (status, answer) = order(&server, "/api/revoke", json!({"user": "trader", "issuedBefore": now})).await;
    assert_eq!((status, answer["connections"].as_u64()), (200, Some(2)), "{answer}");
    for client in [&mut old, &mut undated] {
        assert_eq!(client.closed().await.code, 4504, "issued before, or without iat: revoked");
    }
    still_alive(&mut other).await;
    // A token issued at or after the cut connects: that is how access is restored.
    let mut fresh = connect_with(&server, &token_of("trader", None, Some(now))).await;
    fresh.expect_type("connected").await;
    let closed = connect_with(&server, &token_of("trader", Some("x"), Some(now - 1))).await.closed().await;
    assert_eq!(closed.code, 4504);
    still_alive(&mut fresh).await;
}

#[tokio::test]
async fn revocations_are_bounded_and_bad_ones_are_refused() {
    let server = TestServer::with(|c| c.max_revocations = 2).await;
    let now = tidewire_server::auth::unix_now();
    for body in [json!({"jti": "a"}), json!({"user": "u"})] {
        assert_eq!(order(&server, "/api/revoke", body).await.0, 200);
    }
    let (status, answer) = order(&server, "/api/revoke", json!({"jti": "b"})).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("TOO_MANY_KEYS")), "{answer}");
    assert_eq!(order(&server, "/api/revoke", json!({"jti": "a"})).await.0, 200, "renewing one it holds");
    for body in [
        json!({}),
        json!({"jti": "a", "user": "u"}),
        json!({"jti": "a", "issuedBefore": now}),
        json!({"jti": ""}),
        json!({"jti": "x".repeat(257)}),
        json!({"user": "u", "expiresAt": now - 1}),
        json!({"user": "u", "expiresAt": now + 400 * 24 * 3600}),
        json!({"user": "u", "until": now + 60}),
    ] {
        let (status, answer) = order(&server, "/api/revoke", body.clone()).await;
        assert_eq!((status, answer["code"].as_str()), (400, Some("BAD_REQUEST")), "{body}: {answer}");
    }
    let body = json!({"jti": "a"}).to_string();
    let (status, answer) = http_request(&server, "POST", "/api/revoke", Some(&publisher_token()), Some(&body)).await;
    assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, answer) = http_request(&server, "POST", "/api/revoke", None, Some(&body)).await;
    assert_eq!((status, answer["code"].as_str()), (401, Some("AUTH_REQUIRED")));
}

async fn presence(server: &TestServer, query: &str) -> (u16, Value) {
    http_request(server, "GET", &format!("/api/presence?{query}"), Some(&operator_token()), None).await
}

#[tokio::test]
async fn presence_lists_users_with_their_connections_and_occupancy_counts() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for user in ["bob", "alice", "bob"] {
        let (mut client, _) = connected(&server, user).await;
        client.send(r#"{"action":"subscribe","channels":["desk"]}"#).await;
        client.expect_type("subscribed").await;
        clients.push(client);
    }
    // A throttled subscriber counts too.
    let (mut slow, _) = connected(&server, "carol").await;
    slow.subscribe_with("desk", json!({"minInterval": 1000}), None).await;
    let (status, report) = presence(&server, "channel=desk").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({
            "channel": "desk", "connections": 4, "users": 3, "nodes": 1, "complete": true, "truncated": false,
            "presence": [
                {"user": "alice", "connections": 1},
                {"user": "bob", "connections": 2},
                {"user": "carol", "connections": 1}
            ]
        })
    );
    clients.pop().unwrap().close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, counts) = presence(&server, "channel=desk&users=false").await;
        if counts["connections"] == 3 {
            assert_eq!((counts["users"].as_u64(), counts.get("presence")), (Some(3), None), "{counts}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a closed connection stayed present: {counts}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, empty) = presence(&server, "channel=nobody-here").await;
    assert_eq!((empty["connections"].as_u64(), empty["presence"].clone()), (Some(0), json!([])));
    for (query, code) in
        [("", "BAD_REQUEST"), ("channel=desk&users=maybe", "BAD_REQUEST"), ("channel=a%20b", "INVALID_CHANNEL")]
    {
        let (_, answer) = presence(&server, query).await;
        assert_eq!(answer["code"].as_str(), Some(code), "{query}: {answer}");
    }
    let (status, answer) =
        http_request(&server, "GET", "/api/presence?channel=desk", Some(&publisher_token()), None).await;
    assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")));
}

#[tokio::test]
async fn channels_configured_for_it_announce_joins_and_leaves_that_no_publisher_can_forge() {
    let server = TestServer::with(|c| {
        c.presence_events = vec![tidewire_protocol::channel::ChannelPattern::parse("rooms.*").unwrap()];
    })
    .await;
    let (mut watcher, _) = connected(&server, "watcher").await;
    watcher.send(r#"{"action":"subscribe","channels":["rooms.fx","quiet"]}"#).await;
    watcher.expect_type("subscribed").await;
    watcher.expect_type("subscribed").await;
    let joined = watcher.expect_type("presence.join").await;
    assert_eq!((joined["channel"].as_str(), joined["data"]["user"].as_str()), (Some("rooms.fx"), Some("watcher")));
    let (mut guest, guest_id) = connected(&server, "guest").await;
    guest.send(r#"{"action":"subscribe","channels":["rooms.fx","quiet"]}"#).await;
    let joined = watcher.expect_type("presence.join").await;
    assert_eq!(joined["data"], json!({"user": "guest", "connection": guest_id}));
    guest.close().await;
    let left = watcher.expect_type("presence.leave").await;
    assert_eq!(left["data"], json!({"user": "guest", "connection": guest_id}));
    assert!(left["seq"].as_u64() > joined["seq"].as_u64(), "numbered like any publication");
    assert!(watcher.try_next(Duration::from_millis(200)).await.unwrap().is_none(), "nothing for the quiet channel");
    let forged = json!({"channel": "rooms.fx", "type": "presence.join", "data": {"user": "ceo"}}).to_string();
    let (status, answer) = post_publish(&server, Some(&publisher_token()), &forged).await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("BAD_REQUEST")), "{answer}");
}

#[tokio::test]
async fn connections_are_listed_per_user_and_in_detail() {
    let server = TestServer::start().await;
    let (mut first, first_id) = connected(&server, "trader").await;
    first.send(r#"{"action":"subscribe","channels":["alerts","exposure"]}"#).await;
    first.expect_type("subscribed").await;
    first.expect_type("subscribed").await;
    let (_second, second_id) = connected(&server, "trader").await;
    let (_other, _) = connected(&server, "other").await;
    server
        .hub
        .publish(NewPublication {
            channel: "alerts".into(),
            kind: "alert".into(),
            data: json!(1),
            ..Default::default()
        })
        .await
        .unwrap();
    first.expect_type("alert").await;
    let get = |query: &'static str| {
        let server = &server;
        let path = format!("/api/connections{query}");
        async move { http_request(server, "GET", &path, Some(&operator_token()), None).await }
    };
    let (status, summary) = get("").await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["connections"], 3);
    assert_eq!(summary["users"], json!([{"user": "trader", "connections": 2}, {"user": "other", "connections": 1}]));
    assert!(summary.get("detail").is_none());
    let (_, trader) = get("?user=trader").await;
    let detail = trader["detail"].as_array().unwrap();
    let ids: Vec<&str> = detail.iter().map(|c| c["connection"].as_str().unwrap()).collect();
    let mut expected = vec![first_id.as_str(), second_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    let first_view = detail.iter().find(|c| c["connection"] == first_id.as_str()).unwrap();
    let mut channels: Vec<&str> =
        first_view["channels"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    channels.sort();
    assert_eq!(channels, ["alerts", "exposure"]);
    assert!(first_view["frames"].as_u64().unwrap() >= 2 && first_view["bytes"].as_u64().unwrap() > 0, "{first_view}");
    assert_eq!((first_view["gaps"].as_u64(), first_view["address"].as_str()), (Some(0), Some("127.0.0.1")));
    for (query, code) in [("?user=", "BAD_REQUEST"), ("?page=2", "BAD_REQUEST")] {
        let (_, answer) = get(query).await;
        assert_eq!(answer["code"].as_str(), Some(code), "{query}: {answer}");
    }
    let (status, _) = http_request(&server, "GET", "/api/connections", Some(&publisher_token()), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_trace_shows_a_users_connections_as_things_happen() {
    let server = TestServer::start().await;
    let (mut bystander, _) = connected(&server, "other").await;
    let mut trace = EventStream::open(&server, "/api/trace?user=trader", &operator_token()).await;
    let (mut client, id) = connected(&server, "trader").await;
    let hello = trace.expect("connected").await;
    assert_eq!((hello["connection"].as_str(), hello["user"].as_str()), (Some(id.as_str()), Some("trader")));
    // The `connected` frame; later frames within 100 ms are summed into the next event.
    let frame = trace.next().await;
    assert_eq!(frame.0, "frame", "{frame:?}");
    assert_eq!((frame.1["frames"].as_u64(), frame.1["messages"].as_u64()), (Some(1), Some(1)), "{frame:?}");
    client.send(r#"{"action":"subscribe","channels":["alerts"]}"#).await;
    client.expect_type("subscribed").await;
    assert_eq!(trace.expect("subscribed").await["channel"], "alerts");
    order(&server, "/api/unsubscribe", json!({"user": "trader", "channel": "alerts"})).await;
    let left = trace.expect("unsubscribed").await;
    assert_eq!((left["channel"].as_str(), left["code"].as_str()), (Some("alerts"), Some("FORBIDDEN")));
    order(&server, "/api/disconnect", json!({"user": "trader", "reason": "checked"})).await;
    let closed = trace.expect("closed").await;
    assert_eq!((closed["code"].as_u64(), closed["reason"].as_str()), (Some(4003), Some("checked")));
    // Nothing of the other user's shows up.
    still_alive(&mut bystander).await;
    let (mut again, _) = connected(&server, "trader").await;
    let next = trace.next().await;
    assert_eq!((next.0.as_str(), next.1["user"].as_str()), ("connected", Some("trader")), "{next:?}");
    still_alive(&mut again).await;
    // Bounded: at most 16 users watched at once on a node.
    let mut watches = Vec::new();
    for i in 0..15 {
        watches.push(EventStream::open(&server, &format!("/api/trace?user=u{i}"), &operator_token()).await);
    }
    let (status, answer) =
        http_request(&server, "GET", "/api/trace?user=one-too-many", Some(&operator_token()), None).await;
    assert_eq!((status, answer["code"].as_str()), (429, Some("RATE_LIMIT_EXCEEDED")), "{answer}");
    let (status, _) = http_request(&server, "GET", "/api/trace?user=trader", Some(&publisher_token()), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn every_operator_endpoint_refuses_a_missing_or_publish_only_grant() {
    let server = TestServer::start().await;
    let endpoints = [
        ("GET", "/api/channels", None),
        ("GET", "/api/info", None),
        ("GET", "/api/history?channel=alerts", None),
        ("GET", "/api/presence?channel=alerts", None),
        ("GET", "/api/connections", None),
        ("GET", "/api/trace?user=trader", None),
        ("POST", "/api/disconnect", Some(r#"{"user":"trader"}"#)),
        ("POST", "/api/unsubscribe", Some(r#"{"user":"trader","channel":"alerts"}"#)),
        ("POST", "/api/revoke", Some(r#"{"user":"trader"}"#)),
    ];
    for (method, path, body) in endpoints {
        let (status, answer) = http_request(&server, method, path, None, body).await;
        assert_eq!((status, answer["code"].as_str()), (401, Some("AUTH_REQUIRED")), "{method} {path}");
        for (who, token) in [("a publish grant", publisher_token()), ("a browser token", token("trader"))] {
            let (status, answer) = http_request(&server, method, path, Some(&token), body).await;
            assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")), "{method} {path} with {who}");
        }
    }
    let (status, answer) = http_request(&server, "GET", "/api/info", Some("not.a.token"), None).await;
    assert_eq!((status, answer["code"].as_str()), (401, Some("AUTH_INVALID")));
}

#[tokio::test]
async fn the_web_dir_is_served_unframeable() {
    let dir = std::env::temp_dir().join(format!("tidewire-web-{}", fastrand::u64(..)));
    std::fs::create_dir_all(dir.join("console")).unwrap();
    std::fs::write(dir.join("console/index.html"), "<!doctype html><title>console</title>").unwrap();
    let server = TestServer::with({
        let dir = dir.clone();
        move |c| c.web_dir = Some(dir)
    })
    .await;
    let (status, head, body) = http_exchange(&server, "GET", "/console/", None, None).await;
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("console"));
    for header in
        ["x-frame-options: deny", "content-security-policy: frame-ancestors 'none'", "x-content-type-options: nosniff"]
    {
        assert!(head.contains(header), "{header} in {head}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_connection_pays_for_its_joins_and_cannot_flood_a_channel_with_them() {
    let server = TestServer::with(|c| {
        c.presence_events = vec![tidewire_protocol::channel::ChannelPattern::parse("rooms.*").unwrap()];
        c.presence_joins_per_minute = 2;
    })
    .await;
    let (mut watcher, _) = connected(&server, "watcher").await;
    watcher.send(r#"{"action":"subscribe","channels":["rooms.fx"]}"#).await;
    watcher.expect_type("subscribed").await;
    watcher.expect_type("presence.join").await;
    let (mut flooder, _) = connected(&server, "flooder").await;
    // Each connection may join twice a minute here.
    for round in 0..2 {
        flooder.send(r#"{"action":"subscribe","channels":["rooms.fx"]}"#).await;
        flooder.expect_type("subscribed").await;
        flooder.send(r#"{"action":"unsubscribe","channels":["rooms.fx"]}"#).await;
        flooder.expect_type("unsubscribed").await;
        let (join, leave) = (watcher.expect_type("presence.join").await, watcher.expect_type("presence.leave").await);
        assert!(leave["seq"].as_u64() > join["seq"].as_u64(), "round {round}: a leave after its join");
    }
    flooder.send(r#"{"action":"subscribe","id":9,"channels":["rooms.fx","quiet"]}"#).await;
    let refused = flooder.expect_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["channel"].as_str()),
        (Some("RATE_LIMIT_EXCEEDED"), Some("rooms.fx")),
        "{refused}"
    );
    assert_eq!(flooder.expect_type("subscribed").await["channel"], "quiet", "other channels are not affected");
    assert!(watcher.try_next(Duration::from_millis(200)).await.unwrap().is_none(), "no third join");
}
