//! The gateway over real sockets: the seed dashboard's flow, auth, errors, batching,
//! recovery and snapshots, refresh, and shutdown.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::NewPublication;

#[tokio::test]
async fn seed_dashboard_flow() {
    let server = TestServer::start().await;
    let mut client = server.client("admin").await;
    let connected = client.next().await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["userId"], "admin");
    assert_eq!(connected["version"], 1);
    assert_eq!(connected["limits"]["maxBatch"], 50);
    assert_eq!(
        (&connected["limits"]["commandsPerSecond"], &connected["limits"]["commandBurst"]),
        (&serde_json::json!(1000), &serde_json::json!(200))
    );

    client
        .send(r#"{"action":"subscribe","channels":["routing-metrics","lp-performance","exposure-updates","alerts"]}"#)
        .await;
    for channel in ["routing-metrics", "lp-performance", "exposure-updates", "alerts"] {
        let subscribed = client.expect_type("subscribed").await;
        assert_eq!(subscribed["channel"], channel);
        assert_eq!(subscribed["seq"], 0);
    }

    let publisher = server.hub.publisher();
    let data = json!({
        "symbol":"EURUSD","side":"BUY","volume":10000.0,"routingDecision":"ABOOK","lpSelected":"OANDA",
        "executionTimeMs":45,"spread":0.00015,"slippage":0.00002
    });
    publisher.publish(publication("routing-metrics", "routing-decision", data, None)).await.unwrap();
    let message = client.next().await;
    assert_eq!(message["type"], "routing-decision");
    assert_eq!(message["channel"], "routing-metrics");
    assert_eq!(message["seq"], 1);
    assert_eq!(
        message["data"],
        json!({
            "symbol":"EURUSD","side":"BUY","volume":10000.0,"routingDecision":"ABOOK","lpSelected":"OANDA",
            "executionTimeMs":45,"spread":0.00015,"slippage":0.00002
        })
    );
    let timestamp = message["timestamp"].as_str().unwrap();
    assert_eq!(timestamp.len(), "2026-01-19T10:30:45.123456Z".len());

    client.send(r#"{"action":"unsubscribe","channels":["routing-metrics"]}"#).await;
    assert_eq!(client.expect_type("unsubscribed").await["channel"], "routing-metrics");
    let data = json!({"symbol":"EURUSD","side":"SELL","volume":1.0});
    publisher.publish(publication("routing-metrics", "routing-decision", data, None)).await.unwrap();
    assert_eq!(client.try_next(Duration::from_millis(200)).await, Ok(None), "unsubscribed channel stays quiet");
}

#[tokio::test]
async fn channels_query_parameter_subscribes_at_connect() {
    let server = TestServer::start().await;
    let mut client =
        Client::connect(&server.url(&format!("token={}&channels=alerts,lp-performance", token("u")))).await;
    assert_eq!(client.next().await["type"], "connected");
    assert_eq!(client.next().await["channel"], "alerts");
    assert_eq!(client.next().await["channel"], "lp-performance");
}

#[tokio::test]
async fn token_in_header_and_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start().await;
    let mut request = server.url("").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {}", token("h")).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let frame = futures_util::StreamExt::next(&mut ws).await.unwrap().unwrap();
    assert!(frame.to_text().unwrap().contains("\"userId\":\"h\""));

    let mut request = server.url("").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", format!("tidewire.v1, tidewire.token.{}", token("p")).parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "tidewire.v1");
    let frame = futures_util::StreamExt::next(&mut ws).await.unwrap().unwrap();
    assert!(frame.to_text().unwrap().contains("\"userId\":\"p\""));
}

#[tokio::test]
async fn forbidden_and_invalid_channels_fail_alone() {
    let server = TestServer::start().await;
    let mut c = claims("alice");
    c.channels = Some(vec!["lp-*".into(), "trading#*".into()]);
    let mut client = Client::connect(&server.url(&format!("token={}", token_with(&c)))).await;
    client.next().await;
    client
        .send(concat!(
            r#"{"action":"subscribe","id":9,"#,
            r#""channels":["lp-performance","alerts","bad name","trading#bob","trading#alice"]}"#,
        ))
        .await;
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = client.next().await;
        assert_eq!(reply["id"], 9);
        replies.push(reply);
    }
    let summary: Vec<(String, String)> = replies
        .iter()
        .map(|r| {
            (r["type"].as_str().unwrap().to_owned(), r.get("code").and_then(Value::as_str).unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("subscribed".into(), "".into()),
            ("error".into(), "FORBIDDEN".into()),
            ("error".into(), "INVALID_CHANNEL".into()),
            ("error".into(), "FORBIDDEN".into()),
            ("subscribed".into(), "".into()),
        ]
    );
    assert_eq!(replies[1]["channel"], "alerts");
}

/// The text cases are in `transports.rs`, on both transports; a binary frame is the
/// WebSocket's own.
#[tokio::test]
async fn a_binary_frame_gets_an_error_and_the_connection_survives() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    client.ws().send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(client.expect_type("error").await["code"], "BAD_REQUEST");
    client.send(r#"{"action":"ping","id":"p"}"#).await;
    let pong = client.expect_type("pong").await;
    assert_eq!(pong["id"], "p");
}

use futures_util::SinkExt;

#[tokio::test]
async fn a_burst_arrives_in_frames_of_at_most_50_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["routing-metrics"]}"#).await;
    client.expect_type("subscribed").await;
    client.frame_sizes.clear();
    publish_many(&server.hub, "routing-metrics", 500).await;
    for expected in 1..=500u64 {
        let message = client.next().await;
        assert_eq!(message["seq"], expected);
    }
    assert!(client.frame_sizes.iter().all(|&n| n <= 50), "{:?}", client.frame_sizes);
    assert!(client.frame_sizes.len() >= 10, "{:?}", client.frame_sizes);
}

#[tokio::test]
async fn recovery_with_since_and_keyed_snapshot() {
    let server = TestServer::start().await;
    let publisher = server.hub.publisher();
    for (lp, latency) in [("OANDA", 10), ("LMAX", 20), ("OANDA", 30)] {
        let data = json!({"lpName": lp, "status": "CONNECTED", "latencyMs": latency});
        publisher.publish(publication("lp-performance", "lp-metrics", data, Some(lp))).await.unwrap();
    }
    // Fresh subscription: the latest value per key, oldest first, then live.
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["lp-performance"]}"#).await;
    let subscribed = client.expect_type("subscribed").await;
    assert_eq!(subscribed["seq"], 3);
    assert!(subscribed.get("recovered").is_none());
    let first = client.next().await;
    let second = client.next().await;
    assert_eq!(
        (first["snapshot"].clone(), first["data"]["lpName"].clone(), first["seq"].clone()),
        (json!(true), json!("LMAX"), json!(2))
    );
    assert_eq!((second["data"]["lpName"].clone(), second["data"]["latencyMs"].clone()), (json!("OANDA"), json!(30)));
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();

    // Recovery from seq 1: exactly seqs 2 and 3 follow, recovered: true.
    let mut again = server.client("u").await;
    again.next().await;
    again
        .send_value(json!({
            "action":"subscribe",
            "channels":["lp-performance"],
            "since":{"lp-performance":{"seq":1,"epoch":epoch}}
        }))
        .await;
    let subscribed = again.expect_type("subscribed").await;
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(again.next().await["seq"], 2);
    assert_eq!(again.next().await["seq"], 3);
    assert_eq!(again.try_next(Duration::from_millis(200)).await, Ok(None), "no snapshot after a recovery");

    // Another epoch: not recovered, the snapshot instead.
    let mut stale = server.client("u").await;
    stale.next().await;
    stale
        .send(concat!(
            r#"{"action":"subscribe","channels":["lp-performance"],"#,
            r#""since":{"lp-performance":{"seq":1,"epoch":"gone"}}}"#,
        ))
        .await;
    let subscribed = stale.expect_type("subscribed").await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(stale.next().await["snapshot"], true);
}

#[tokio::test]
async fn publish_over_the_websocket() {
    let server = TestServer::start().await;
    let mut c = claims("svc");
    c.publish = Some(vec!["alerts".into()]);
    let mut client = Client::connect(&server.url(&format!("token={}&channels=alerts", token_with(&c)))).await;
    client.next().await;
    client.expect_type("subscribed").await;
    client.send(r#"{"action":"publish","id":5,"channel":"alerts","type":"alert","data":{"x":1},"key":"k"}"#).await;
    let mut replies = [client.next().await, client.next().await];
    replies.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(replies[0]["type"], "alert");
    assert_eq!(replies[0]["key"], "k");
    assert_eq!(
        (replies[1]["type"].clone(), replies[1]["id"].clone(), replies[1]["seq"].clone()),
        (json!("published"), json!(5), json!(1))
    );
    client.send(r#"{"action":"publish","id":6,"channel":"routing-metrics","type":"x","data":1}"#).await;
    assert_eq!(client.expect_type("error").await["code"], "FORBIDDEN");
}

#[tokio::test]
async fn connection_limits_close_with_1013() {
    let server = TestServer::with(|c| {
        c.max_connections_per_user = 2;
        c.max_connections = 3;
    })
    .await;
    let mut a1 = server.client("a").await;
    let mut a2 = server.client("a").await;
    a1.next().await;
    a2.next().await;
    let closed = server.client("a").await.closed().await;
    assert_eq!(closed.code, 1013);
    assert!(closed.reason.starts_with("TRY_AGAIN_LATER"));
    let mut b1 = server.client("b").await;
    b1.next().await;
    assert_eq!(server.client("c").await.closed().await.code, 1013, "global limit");
    a1.close().await;
    // The slot is freed when the server has seen the close: until then, 1013.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c1 = server.client("c").await;
        match c1.try_next(Duration::from_secs(5)).await {
            Ok(Some(m)) if m["type"] == "connected" => break,
            Err(closed) if closed.code == 1013 && tokio::time::Instant::now() < deadline => continue,
            other => panic!("a freed slot is reusable: {other:?}"),
        }
    }
}

#[tokio::test]
async fn origins_are_checked_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://desk.example".into()]).await;
    let connect = |origin: &'static str| {
        let mut request = server.url(&format!("token={}", token("u"))).into_client_request().unwrap();
        request.headers_mut().insert("Origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match connect("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(connect("https://desk.example").await.is_ok());
    let same_origin: &'static str = Box::leak(format!("http://{}", server.addr).into_boxed_str());
    assert!(connect(same_origin).await.is_ok(), "the node's own origin is allowed");
}

#[tokio::test]
async fn idle_connections_get_heartbeats_and_silent_peers_are_closed() {
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.pong_timeout = Duration::from_millis(300);
    })
    .await;
    let mut client = server.client("u").await;
    let connected = client.next().await;
    assert_eq!(connected["heartbeatIntervalMs"], 300);
    // Reading (which answers pings) keeps the link alive and shows app heartbeats.
    assert_eq!(client.expect_type("heartbeat").await["type"], "heartbeat");
    assert_eq!(client.expect_type("heartbeat").await["type"], "heartbeat");

    // A peer that never reads never answers pings: closed with 4001.
    let mut silent = server.client("v").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let closed = silent.closed().await;
    assert_eq!(closed.code, 4001);
}

#[tokio::test]
async fn a_slow_handshake_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::with(|c| c.handshake_timeout = Duration::from_millis(500)).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    // Reading to the end finishes only when the server closes the connection.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(3), "closed after the handshake timeout, not later");
    // Others are unaffected.
    let mut client = server.client("u").await;
    assert_eq!(client.next().await["type"], "connected");
}

#[tokio::test]
async fn idle_channels_are_forgotten_and_work_again() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    for i in 0..50 {
        client.send(&format!(r#"{{"action":"subscribe","channels":["random-{i}"]}}"#)).await;
        client.expect_type("subscribed").await;
        client.send(&format!(r#"{{"action":"unsubscribe","channels":["random-{i}"]}}"#)).await;
        client.expect_type("unsubscribed").await;
    }
    assert!(server.hub.channels().await.is_empty(), "subscribing to random names leaves nothing behind");
    // A forgotten channel comes back on the next use.
    client.send(r#"{"action":"subscribe","channels":["random-1"]}"#).await;
    client.expect_type("subscribed").await;
    publish_many(&server.hub, "random-1", 2).await;
    assert_eq!(client.expect_type("routing-decision").await["seq"], 1);
}

/// A publication of any application type: the gateway knows no catalogue.
fn publication(channel: &str, kind: &str, data: serde_json::Value, key: Option<&str>) -> NewPublication {
    NewPublication { channel: channel.into(), kind: kind.into(), data, key: key.map(Into::into), ..Default::default() }
}
