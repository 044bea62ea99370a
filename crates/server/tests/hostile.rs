//! Hostile clients, through the wire: each attack meets its documented bound (a close
//! code, an error, an HTTP status) and never grows the node. See `docs/security.md`.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Reads until the connection closes, counting what arrived; the close, or a panic after
/// `within`.
async fn read_until_closed(client: &mut Client, within: Duration) -> (Closed, usize) {
    let deadline = Instant::now() + within;
    let mut received = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.try_next(left).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("not closed within {within:?} ({received} messages read)"),
            Err(closed) => return (closed, received),
        }
    }
}

#[tokio::test]
async fn asking_for_more_replies_than_one_reads_is_closed_with_4002() {
    // The attack: stay under the rate limit, read every frame, and ask for more replies
    // than frames can carry (each unsubscribe of 128 channels answers 128 times).
    let server = TestServer::with(|c| c.max_queued_bytes = 256 * 1024).await;
    let mut client = server.client("mallory").await;
    client.next().await;
    let channels: Vec<String> = (0..128).map(|i| format!("never-subscribed-{i:03}")).collect();
    let command = json!({
        "action":"unsubscribe",
        "id":"0123456789012345678901234567890123456789012345678901234567890123",
        "channels":channels
    })
    .to_string();
    // Send a command every 10 ms (100/s, under the limit) and read everything between.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut received = 0;
    let closed = 'attack: loop {
        assert!(Instant::now() < deadline, "not closed within 15 s ({received} messages read)");
        if client.ws().send(Message::Text(command.clone().into())).await.is_err() {
            break read_until_closed(&mut client, Duration::from_secs(5)).await.0;
        }
        let window = Instant::now() + Duration::from_millis(10);
        loop {
            match client.try_next(window.saturating_duration_since(Instant::now())).await {
                Ok(Some(_)) => received += 1,
                Ok(None) => break,
                Err(closed) => break 'attack closed,
            }
        }
    };
    assert_eq!(closed.code, 4002, "{closed:?} after {received} messages");
    assert!(closed.reason.starts_with("QUEUE_OVERFLOW"), "{closed:?}");
    let metrics = server.hub.metrics().render();
    assert!(metrics.contains("tidewire_disconnects_total{code=\"4002\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_command_names_each_channel_once_and_at_most_max_channels() {
    let server = TestServer::with(|c| c.max_channels = 8).await;
    let mut client = server.client("u").await;
    client.next().await;
    // The same channel listed 500 times is one channel: one answer.
    let repeated = vec!["a"; 500];
    client.send_value(json!({"action":"subscribe","id":1,"channels":repeated})).await;
    client.send_value(json!({"action":"unsubscribe","id":2,"channels":repeated})).await;
    client.send(r#"{"action":"ping","id":3}"#).await;
    let answers: Vec<String> = [client.next().await, client.next().await, client.next().await]
        .iter()
        .map(|m| format!("{}:{}", m["type"].as_str().unwrap(), m["id"]))
        .collect();
    assert_eq!(answers, ["subscribed:1", "unsubscribed:2", "pong:3"]);
    // More distinct channels than a connection may hold: refused whole, one error.
    let many: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
    client.send_value(json!({"action":"unsubscribe","id":4,"channels":many})).await;
    client.send(r#"{"action":"ping","id":5}"#).await;
    let refused = client.next().await;
    assert_eq!((refused["code"].as_str(), refused["id"].as_u64()), (Some("TOO_MANY_CHANNELS"), Some(4)));
    assert_eq!(client.next().await["type"], "pong");
    // A long id is refused rather than echoed in every reply.
    let long_id = "x".repeat(65);
    client.send_value(json!({"action":"ping","id":long_id})).await;
    let refused = client.next().await;
    assert_eq!((refused["code"].as_str(), refused.get("id")), (Some("BAD_REQUEST"), None));
}

#[tokio::test]
async fn a_repeated_keyed_subscribe_queues_its_snapshot_once() {
    let server = TestServer::start().await;
    for lp in ["OANDA", "LMAX", "CITI"] {
        let new = tidewire_protocol::NewPublication {
            channel: "lp".into(),
            kind: "lp-metrics".into(),
            data: json!({"lp": lp}),
            key: Some(lp.into()),
            ..Default::default()
        };
        server.hub.publish(new).await.unwrap();
    }
    let mut client = server.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","channels":vec!["lp"; 200]})).await;
    client.send(r#"{"action":"ping","id":"end"}"#).await;
    let mut kinds = Vec::new();
    loop {
        let m = client.next().await;
        if m["type"] == "pong" {
            break;
        }
        kinds.push(m["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["subscribed", "lp-metrics", "lp-metrics", "lp-metrics"]);
}

#[tokio::test]
async fn resubscribing_a_keyed_channel_again_and_again_hits_the_byte_budget() {
    // Each subscribe of a joined channel answers `subscribed` and its snapshot again; a
    // client that asks faster than frames drain is closed, not grown.
    let server = TestServer::with(|c| {
        c.max_queued_bytes = 64 * 1024;
        c.commands_per_second = 500;
        c.command_burst = 500;
    })
    .await;
    for key in 0..40 {
        let new = tidewire_protocol::NewPublication {
            channel: "book".into(),
            kind: "row".into(),
            data: json!({"pad": "x".repeat(600)}),
            key: Some(format!("k{key}")),
            ..Default::default()
        };
        server.hub.publish(new).await.unwrap();
    }
    let mut client = server.client("u").await;
    client.next().await;
    for _ in 0..300 {
        client.send(r#"{"action":"subscribe","channels":["book"]}"#).await;
    }
    let (closed, _) = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert_eq!(closed.code, 4002, "{closed:?}");
}

#[tokio::test]
async fn binary_frames_and_websocket_pings_count_against_the_rate_limit() {
    let server = TestServer::with(|c| {
        c.commands_per_second = 20;
        c.command_burst = 20;
    })
    .await;
    for (what, frame) in [("binary", Message::Binary(vec![0u8; 16].into())), ("ping", Message::Ping(vec![1u8].into()))]
    {
        let mut client = server.client("flood").await;
        client.next().await;
        for _ in 0..400 {
            if client.ws().send(frame.clone()).await.is_err() {
                break;
            }
        }
        let (closed, _) = read_until_closed(&mut client, Duration::from_secs(10)).await;
        assert_eq!(closed.code, 1008, "{what}: {closed:?}");
    }
}

#[tokio::test]
async fn the_channels_query_parameter_meets_the_same_limits() {
    let server = TestServer::with(|c| c.max_channels = 4).await;
    let repeated = vec!["alerts"; 300].join(",");
    let mut client = Client::connect(&server.url(&format!("token={}&channels={repeated}", token("u")))).await;
    assert_eq!(client.next().await["type"], "connected");
    assert_eq!(client.next().await["channel"], "alerts");
    client.send(r#"{"action":"ping","id":1}"#).await;
    assert_eq!(client.next().await["type"], "pong", "one subscription, one answer");

    let many: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    let mut client = Client::connect(&server.url(&format!("token={}&channels={}", token("u"), many.join(",")))).await;
    assert_eq!(client.next().await["type"], "connected");
    assert_eq!(client.next().await["code"], "TOO_MANY_CHANNELS");
    client.send(r#"{"action":"ping","id":1}"#).await;
    assert_eq!(client.next().await["type"], "pong", "one error, not one per channel");
}

/// Sends a raw HTTP request head (and `body`), then reads the answer's status within
/// `within`; `None` when the server closed without answering.
async fn raw_http(server: &TestServer, head: &str, body: &[u8], within: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = vec![0u8; 4096];
    let mut read = 0;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut response[read..])).await {
            Err(_) => panic!("no answer within {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                read += n;
                if String::from_utf8_lossy(&response[..read]).contains("\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&response[..read]).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn post_head(server: &TestServer, token: Option<&str>, length: usize) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        server.addr
    )
}

#[tokio::test]
async fn the_publish_api_checks_the_token_before_reading_a_body() {
    let server = TestServer::with(|c| c.http_body_timeout = Duration::from_millis(300)).await;
    // A 2 MB body announced, none sent: answered at once, nothing read or held.
    let (status, _) =
        raw_http(&server, &post_head(&server, None, 2_000_000), b"", Duration::from_secs(2)).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) =
        raw_http(&server, &post_head(&server, Some(&token("browser")), 2_000_000), b"", Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(status, 403, "a token without a publish grant is refused before the body too");
    // Allowed, but larger than --max-http-body-bytes: refused from the header alone.
    let (status, _) =
        raw_http(&server, &post_head(&server, Some(&publisher_token()), 2_000_000), b"", Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(status, 413);
    // Allowed and within the size, but sent too slowly: 408 after the body timeout.
    let started = Instant::now();
    let (status, _) =
        raw_http(&server, &post_head(&server, Some(&publisher_token()), 100), b"{\"chan", Duration::from_secs(3))
            .await
            .unwrap();
    assert_eq!(status, 408);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn request_bodies_share_one_memory_budget() {
    let server = TestServer::with(|c| {
        c.max_http_body_memory = 1000;
        c.http_body_timeout = Duration::from_secs(5);
    })
    .await;
    // One slow request holds 800 of the 1000 bytes while it dribbles in.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(post_head(&server, Some(&publisher_token()), 800).as_bytes()).await.unwrap();
    slow.write_all(b"[").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, text) =
        raw_http(&server, &post_head(&server, Some(&publisher_token()), 800), b"", Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("UNAVAILABLE"));
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = r#"{"channel":"alerts","type":"alert","data":{}}"#;
    let (status, _) = post_publish(&server, Some(&publisher_token()), body).await;
    assert_eq!(status, 200, "the budget is given back");
}

#[tokio::test]
async fn a_publish_batch_has_an_item_cap() {
    let server = TestServer::with(|c| c.max_publish_batch = 3).await;
    let item = json!({"channel":"alerts","type":"alert","data":{}});
    let (status, body) =
        post_publish(&server, Some(&publisher_token()), &json!([item, item, item, item]).to_string()).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("BAD_REQUEST")));
    assert!(server.hub.channels().await.iter().all(|c| c.seq == 0), "nothing published");
    let (status, _) = post_publish(&server, Some(&publisher_token()), &json!([item, item, item]).to_string()).await;
    assert_eq!(status, 200);
}

/// Whether the server closed `stream` without answering within `within`.
async fn closed_at_once(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn http_connections_are_capped_per_peer_and_per_node() {
    let server = TestServer::with(|c| c.max_http_connections_per_ip = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_at_once(&mut fifth, Duration::from_secs(2)).await,
        "the fifth idle connection from one address is dropped"
    );
    // A WebSocket no longer counts as an HTTP connection once upgraded.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut upgraded = server.client("u").await;
    assert_eq!(upgraded.next().await["type"], "connected");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = TcpStream::connect(server.addr).await.unwrap();
    again
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr).as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    again.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let metrics = server.hub.metrics().render();
    assert!(metrics.contains("tidewire_connections_refused_total{reason=\"http_address\"} 1"), "{metrics}");

    let server = TestServer::with(|c| c.max_http_connections = 2).await;
    let _held: Vec<TcpStream> =
        vec![TcpStream::connect(server.addr).await.unwrap(), TcpStream::connect(server.addr).await.unwrap()];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_at_once(&mut third, Duration::from_secs(2)).await, "over the node's cap");
}

#[tokio::test]
async fn a_configured_audience_and_issuer_are_required() {
    let server = TestServer::with(|c| {
        c.jwt_audience = Some("desk".into());
        c.jwt_issuer = Some("idp".into());
    })
    .await;
    let full = tidewire_server::auth::Claims { aud: Some("desk".into()), iss: Some("idp".into()), ..claims("u") };
    let mut client = Client::connect(&server.url(&format!("token={}", token_with(&full)))).await;
    assert_eq!(client.next().await["type"], "connected");
    for (what, claims) in [
        ("no aud", tidewire_server::auth::Claims { aud: None, ..full.clone() }),
        ("no iss", tidewire_server::auth::Claims { iss: None, ..full.clone() }),
    ] {
        let mut client = Client::connect(&server.url(&format!("token={}", token_with(&claims)))).await;
        let closed = client.closed().await;
        assert_eq!(closed.code, 4501, "{what}: {closed:?}");
    }
}

#[tokio::test]
async fn refresh_to_a_narrower_grant_ends_what_it_no_longer_allows() {
    let server = TestServer::start().await;
    let mut client = server.client("trader").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["prices","exposure-book"]}"#).await;
    client.expect_type("subscribed").await;
    client.expect_type("subscribed").await;
    let narrower = tidewire_server::auth::Claims { channels: Some(vec!["prices".into()]), ..claims("trader") };
    client.send_value(json!({"action":"refresh","id":9,"token":token_with(&narrower)})).await;
    let ended = client.next().await;
    assert_eq!(ended["type"], "unsubscribed");
    assert_eq!((ended["channel"].as_str(), ended["code"].as_str()), (Some("exposure-book"), Some("FORBIDDEN")));
    assert_eq!(client.next().await["type"], "refreshed");
    publish_many(&server.hub, "exposure-book", 2).await;
    publish_many(&server.hub, "prices", 1).await;
    let next = client.next().await;
    assert_eq!(next["channel"], "prices", "nothing more on the revoked channel: {next}");
    client.send(r#"{"action":"subscribe","channels":["exposure-book"]}"#).await;
    assert_eq!(client.next().await["code"], "FORBIDDEN");
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let connect = |server: &TestServer, forwarded: &str| {
        let mut request = server.url(&format!("token={}", token("u"))).into_client_request().unwrap();
        request.headers_mut().insert("X-Forwarded-For", forwarded.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    async fn first_close(
        ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> Option<u16> {
        let mut client = Client::from_ws(ws);
        match client.try_next(Duration::from_secs(2)).await {
            Ok(Some(m)) if m["type"] == "connected" => None,
            Err(closed) => Some(closed.code),
            other => panic!("{other:?}"),
        }
    }
    // Behind a trusted proxy, two clients are two addresses; the same one twice is one.
    let server = TestServer::with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let (a, _) = connect(&server, "198.51.100.7").await.unwrap();
    let (b, _) = connect(&server, "203.0.113.9, 127.0.0.1").await.unwrap();
    let (c, _) = connect(&server, "198.51.100.7").await.unwrap();
    assert_eq!(first_close(a).await, None);
    assert_eq!(first_close(b).await, None);
    assert_eq!(first_close(c).await, Some(1013));
    // Without trusted proxies, X-Forwarded-For is anyone's to write and is ignored.
    let server = TestServer::with(|c| c.max_connections_per_ip = 1).await;
    let (a, _) = connect(&server, "198.51.100.7").await.unwrap();
    let (b, _) = connect(&server, "203.0.113.9").await.unwrap();
    assert_eq!(first_close(a).await, None);
    assert_eq!(first_close(b).await, Some(1013));
}

#[tokio::test]
async fn close_codes_a_client_chooses_do_not_become_metric_labels() {
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode as WsCloseCode};
    let server = TestServer::start().await;
    for code in [4321u16, 3999, 4777] {
        let mut client = server.client("u").await;
        client.next().await;
        client.ws().close(Some(CloseFrame { code: WsCloseCode::from(code), reason: "".into() })).await.unwrap();
        let _ = client.try_next(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = server.hub.metrics().render();
    assert!(metrics.contains("tidewire_disconnects_total{code=\"other\"} 3"), "{metrics}");
    assert!(!metrics.contains("4321"));
}

#[tokio::test]
async fn origins_match_on_scheme_host_and_port() {
    let server = TestServer::start().await;
    let connect = |origin: String| {
        let mut request = server.url(&format!("token={}", token("u"))).into_client_request().unwrap();
        request.headers_mut().insert("Origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let port = server.addr.port();
    assert!(connect(format!("http://127.0.0.1:{port}")).await.is_ok());
    for other in
        [format!("https://127.0.0.1:{port}"), format!("http://127.0.0.1:{}", port + 1), "http://127.0.0.1".to_owned()]
    {
        match connect(other.clone()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403, "{other}"),
            result => panic!("{other}: expected 403, got {:?}", result.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn a_loopback_node_answers_only_loopback_host_names() {
    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
    let server = TestServer::start().await;
    let head =
        format!("GET /health HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n", server.addr.port());
    let (status, _) = raw_http(&server, &head, b"", Duration::from_secs(2)).await.unwrap();
    assert_eq!(status, 403);
    let head = format!("GET /health HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n", server.addr.port());
    assert_eq!(raw_http(&server, &head, b"", Duration::from_secs(2)).await.unwrap().0, 200);
}

fn keyed(channel: &str, key: &str, data: serde_json::Value) -> tidewire_protocol::NewPublication {
    tidewire_protocol::NewPublication {
        channel: channel.into(),
        kind: "row".into(),
        data,
        key: Some(key.into()),
        ..Default::default()
    }
}

/// A metric's value in the hub's exposition (`None` when absent).
fn metric(server: &TestServer, name: &str) -> Option<f64> {
    server.hub.metrics().render().lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn keys_and_latest_bytes_per_channel_are_capped_in_memory() {
    let server = TestServer::with(|c| {
        c.max_keys_per_channel = 3;
        c.max_queued_bytes = 4096;
    })
    .await;
    for key in ["a", "b", "c"] {
        server.hub.publish(keyed("lp", key, json!(1))).await.unwrap();
    }
    let refused = server.hub.publish(keyed("lp", "d", json!(1))).await.unwrap_err();
    assert_eq!(refused.code, tidewire_protocol::ErrorCode::TooManyKeys);
    server.hub.publish(keyed("lp", "a", json!(2))).await.expect("a known key may change");
    let refused = server.hub.publish(keyed("lp", "b", json!("x".repeat(2100)))).await.unwrap_err();
    assert!(refused.message.contains("bytes"), "{refused}");
    // The snapshot a subscriber gets stays what fits.
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["lp"]}"#).await;
    client.expect_type("subscribed").await;
    let keys: Vec<String> = [client.next().await, client.next().await, client.next().await]
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["b", "c", "a"]);
}

#[tokio::test]
async fn the_node_holds_at_most_max_node_channels() {
    let server = TestServer::with(|c| c.max_node_channels = 3).await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["a","b","c","d"]}"#).await;
    let answers: Vec<String> = [client.next().await, client.next().await, client.next().await, client.next().await]
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["type"].as_str().unwrap(),
                m.get("code").and_then(|c| c.as_str()).unwrap_or(m["channel"].as_str().unwrap())
            )
        })
        .collect();
    assert_eq!(answers, ["subscribed:a", "subscribed:b", "subscribed:c", "error:TOO_MANY_CHANNELS"]);
    let refused = server
        .hub
        .publish(tidewire_protocol::NewPublication {
            channel: "e".into(),
            kind: "t".into(),
            data: json!(1),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code, tidewire_protocol::ErrorCode::TooManyChannels);
    client.send(r#"{"action":"unsubscribe","channels":["a"]}"#).await;
    client.expect_type("unsubscribed").await;
    client.send(r#"{"action":"subscribe","channels":["d"]}"#).await;
    assert_eq!(client.expect_type("subscribed").await["channel"], "d", "room again once a channel is forgotten");
}

#[tokio::test]
async fn channels_nobody_touches_are_swept() {
    let server = TestServer::with(|c| c.history_ttl = Duration::from_millis(200)).await;
    for i in 0..50 {
        let new = tidewire_protocol::NewPublication {
            channel: format!("once-{i}"),
            kind: "t".into(),
            data: json!(i),
            ..Default::default()
        };
        server.hub.publish(new).await.unwrap();
    }
    assert_eq!(metric(&server, "tidewire_channels"), Some(50.0));
    // Nothing touches these channels again: the sweep forgets them once their history
    // expired.
    let deadline = Instant::now() + tidewire_server::hub::SWEEP_INTERVAL * 3;
    while metric(&server, "tidewire_channels") != Some(0.0) {
        assert!(Instant::now() < deadline, "channels kept: {:?}", metric(&server, "tidewire_channels"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.hub.channels().await.is_empty());
}

#[tokio::test]
async fn publish_limiters_of_quiet_channels_are_swept() {
    let server = TestServer::with(|c| c.publish_rate_limits = vec!["burst.*=5/60000".parse().unwrap()]).await;
    for i in 0..40 {
        let new = tidewire_protocol::NewPublication {
            channel: format!("burst.{i}"),
            kind: "t".into(),
            data: json!(i),
            ..Default::default()
        };
        server.hub.publish(new).await.unwrap();
    }
    // At 1000 a second the buckets are full again at once; the sweep drops their state.
    let deadline = Instant::now() + tidewire_server::hub::SWEEP_INTERVAL * 3;
    loop {
        if metric(&server, "tidewire_publish_limiters") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "limiters kept: {:?}", metric(&server, "tidewire_publish_limiters"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_replay_larger_than_half_the_queue_is_not_attempted() {
    let server = TestServer::with(|c| c.max_queued_bytes = 64 * 1024).await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["big"]}"#).await;
    let epoch = client.expect_type("subscribed").await["epoch"].as_str().unwrap().to_owned();
    for i in 0..40 {
        let new = tidewire_protocol::NewPublication {
            channel: "big".into(),
            kind: "t".into(),
            data: json!({"i": i, "pad": "x".repeat(2000)}),
            ..Default::default()
        };
        server.hub.publish(new).await.unwrap();
    }
    // 40 × 2 KB is more than half of 64 KiB: recovery says so instead of overflowing the
    // queue (which would announce a gap, and the client would ask again, forever).
    let mut again = server.client("u").await;
    again.next().await;
    again.send_value(json!({"action":"subscribe","channels":["big"],"since":{"big":{"seq":0,"epoch":epoch}}})).await;
    assert_eq!(again.expect_type("subscribed").await["recovered"], false);
    again.send_value(json!({"action":"subscribe","channels":["big"],"since":{"big":{"seq":30,"epoch":epoch}}})).await;
    assert_eq!(again.expect_type("subscribed").await["recovered"], true, "ten of them fit");
}

#[tokio::test]
async fn a_publish_sent_twice_with_one_idempotency_key_is_published_once() {
    let server = TestServer::start().await;
    let mut watcher = server.client("watcher").await;
    watcher.next().await;
    watcher.send(r#"{"action":"subscribe","channels":["orders"]}"#).await;
    watcher.expect_type("subscribed").await;
    let mut publisher = Client::connect(&server.url(&format!("token={}", publisher_token()))).await;
    publisher.next().await;
    let publish = |id: u64, key: &str| {
        json!({
            "action":"publish","id":id,"channel":"orders","type":"order","data":{"n":1},"idempotencyKey":key
        })
    };
    publisher.send_value(publish(1, "order-77")).await;
    publisher.send_value(publish(2, "order-77")).await;
    publisher.send_value(publish(3, "order-78")).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let m = publisher.expect_type("published").await;
        answers.push((m["id"].as_u64().unwrap(), m["seq"].as_u64().unwrap()));
    }
    assert_eq!(answers, [(1, 1), (2, 1), (3, 2)], "the resend is answered with the first seq");
    // Over HTTP too, across transports.
    let body = r#"{"channel":"orders","type":"order","data":{"n":1},"idempotencyKey":"order-77"}"#;
    let (status, accepted) = post_publish(&server, Some(&publisher_token()), body).await;
    assert_eq!((status, accepted["seq"].as_u64(), accepted["duplicate"].as_bool()), (200, Some(1), Some(true)));
    let delivered: Vec<u64> =
        [watcher.next().await, watcher.next().await].iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(delivered, [1, 2]);
    watcher.send(r#"{"action":"ping","id":"end"}"#).await;
    assert_eq!(watcher.next().await["type"], "pong", "nothing else was published");
    let long = "k".repeat(65);
    publisher.send_value(publish(4, &long)).await;
    assert_eq!(publisher.expect_type("error").await["code"], "BAD_REQUEST");
    // The node's sources' keys: a client publishing one first would make the source's
    // event look like a repeat of it.
    for (id, key) in [(5, "kafka:0:7:0123456789abcdef"), (6, "pg:42:tidewire_outbox")] {
        publisher.send_value(publish(id, key)).await;
        let refused = publisher.expect_type("error").await;
        assert_eq!(refused["code"], "BAD_REQUEST", "{refused}");
        assert!(refused["message"].as_str().unwrap().contains("belong to the node's sources"), "{refused}");
    }
    let body = r#"{"channel":"orders","type":"order","data":{"n":1},"idempotencyKey":"kafka:0:8:x"}"#;
    assert_eq!(post_publish(&server, Some(&publisher_token()), body).await.0, 400);
}
