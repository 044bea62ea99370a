//! The wire tests that matter, each written once and run over both transports: a
//! WebSocket and the HTTP fallback session (an event stream plus POSTed commands).
//! Then what only the HTTP transports have: session ids bound to their user, streams
//! that end free their state, and the one-way stream resumed by `Last-Event-ID`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tidewire_server::auth::unix_now;

on_both_transports!(
    subscribe_publish_and_frames_in_order,
    auth_failures_close_with_terminal_codes,
    bad_commands_get_error_codes_and_the_connection_survives,
    an_oversized_command_closes_with_1009,
    flooding_gets_rate_limit_errors_then_1008,
    recovery_replays_exactly_what_was_missed,
    recovery_fails_honestly_when_history_is_gone,
    a_client_behind_gets_exact_gap_notices,
    graceful_shutdown_closes_with_1012,
    connection_limits_close_with_1013,
    too_many_channels_are_refused,
    an_expiring_token_closes_unless_refreshed,
    a_stalled_reader_is_closed_as_slow_and_freed,
);

async fn subscribe_publish_and_frames_in_order(transport: Transport) {
    let server = TestServer::start().await;
    let mut client = server.client_on(transport, "u").await;
    assert_eq!(client.next().await["type"], "connected");
    client.send(r#"{"action":"subscribe","id":1,"channels":["routing-metrics"]}"#).await;
    assert_eq!(client.expect_type("subscribed").await["id"], 1);
    client.frame_sizes.clear();
    publish_many(&server.hub, "routing-metrics", 300).await;
    for expected in 1..=300u64 {
        assert_eq!(client.next().await["seq"], expected);
    }
    assert!(client.frame_sizes.iter().all(|&n| n <= 50), "{:?}", client.frame_sizes);
    client.send(r#"{"action":"ping","id":"p"}"#).await;
    assert_eq!(client.expect_type("pong").await["id"], "p");
}

async fn auth_failures_close_with_terminal_codes(transport: Transport) {
    let server = TestServer::start().await;
    let closed = server.connect(transport, None, "").await.closed().await;
    assert_eq!(closed.code, 4500);
    assert!(closed.reason.starts_with("AUTH_REQUIRED"), "{}", closed.reason);
    let closed = server.connect(transport, Some("not.a.jwt"), "").await.closed().await;
    assert_eq!(closed.code, 4501);
    assert!(closed.reason.starts_with("AUTH_INVALID"), "{}", closed.reason);
    let wrong_key = tidewire_server::auth::mint_hs256("another-secret", &claims("u")).unwrap();
    assert_eq!(server.connect(transport, Some(&wrong_key), "").await.closed().await.code, 4501);
    let mut expired = claims("u");
    expired.exp = unix_now() - 10;
    let closed = server.connect(transport, Some(&token_with(&expired)), "").await.closed().await;
    assert_eq!(closed.code, 4502);
    assert!(closed.reason.starts_with("TOKEN_EXPIRED"), "{}", closed.reason);
}

async fn bad_commands_get_error_codes_and_the_connection_survives(transport: Transport) {
    let server = TestServer::start().await;
    let mut client = server.client_on(transport, "u").await;
    client.next().await;
    let cases = [
        ("not json", "BAD_REQUEST"),
        ("", "BAD_REQUEST"),
        (r#"{"action":"dance","id":1}"#, "UNKNOWN_ACTION"),
        (r#"{"action":"subscribe","channels":"alerts"}"#, "BAD_REQUEST"),
        (r#"{"action":"subscribe","channels":["bad channel"]}"#, "INVALID_CHANNEL"),
        (r#"{"action":"publish","channel":"alerts","type":"alert","data":{}}"#, "FORBIDDEN"),
        (r#"[1,2,3]"#, "BAD_REQUEST"),
    ];
    for (text, code) in cases {
        client.send(text).await;
        let reply = client.expect_type("error").await;
        assert_eq!(reply["code"], code, "{text}");
    }
    client.send(r#"{"action":"ping","id":"p"}"#).await;
    assert_eq!(client.expect_type("pong").await["id"], "p");
}

async fn an_oversized_command_closes_with_1009(transport: Transport) {
    let server = TestServer::start().await;
    let mut client = server.client_on(transport, "u").await;
    client.next().await;
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(5000));
    client.send(&big).await;
    assert_eq!(client.closed().await.code, 1009);
    let mut other = server.client_on(transport, "v").await;
    assert_eq!(other.next().await["type"], "connected");
}

async fn flooding_gets_rate_limit_errors_then_1008(transport: Transport) {
    let server = TestServer::with(|c| {
        c.commands_per_second = 20;
        c.command_burst = 20;
    })
    .await;
    let mut client = server.client_on(transport, "flood").await;
    client.next().await;
    for _ in 0..200 {
        // Over HTTP a POST may find the session's queue full (429): a refusal too.
        if !client.try_send(r#"{"action":"ping"}"#).await && transport == Transport::WebSocket {
            break;
        }
    }
    let mut saw_rate_limit = false;
    let closed = loop {
        match client.try_next(Duration::from_secs(5)).await {
            Ok(Some(m)) => saw_rate_limit |= m["code"] == "RATE_LIMIT_EXCEEDED",
            Ok(None) => panic!("not closed"),
            Err(closed) => break closed,
        }
    };
    assert!(saw_rate_limit);
    assert_eq!(closed.code, 1008);
}

async fn recovery_replays_exactly_what_was_missed(transport: Transport) {
    let server = TestServer::start().await;
    let mut client = server.client_on(transport, "u").await;
    client.next().await;
    let subscribed = client.subscribe_with("routing-metrics", json!({}), None).await;
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    publish_many(&server.hub, "routing-metrics", 5).await;
    for seq in 1..=5u64 {
        assert_eq!(client.next().await["seq"], seq);
    }
    client.close().await;
    publish_many(&server.hub, "routing-metrics", 7).await;

    let mut again = server.client_on(transport, "u").await;
    again.next().await;
    let since = json!({"routing-metrics": {"seq": 5, "epoch": epoch}});
    let subscribed = again.subscribe_with("routing-metrics", json!({}), Some(since)).await;
    assert_eq!((subscribed["recovered"].clone(), subscribed["seq"].clone()), (json!(true), json!(12)));
    for seq in 6..=12u64 {
        assert_eq!(again.next().await["seq"], seq);
    }
    assert_eq!(again.try_next(Duration::from_millis(200)).await, Ok(None), "nothing twice");
}

async fn recovery_fails_honestly_when_history_is_gone(transport: Transport) {
    let server = TestServer::with(|c| c.history_size = 5).await;
    publish_many(&server.hub, "routing-metrics", 20).await;
    let mut client = server.client_on(transport, "u").await;
    client.next().await;
    let subscribed = client.subscribe_with("routing-metrics", json!({}), Some(json!({"routing-metrics": 3}))).await;
    assert_eq!((subscribed["recovered"].clone(), subscribed["seq"].clone()), (json!(false), json!(20)));
    assert_eq!(client.try_next(Duration::from_millis(200)).await, Ok(None), "no partial replay");
    // Within the history: exactly what was missed.
    let mut ok = server.client_on(transport, "u").await;
    ok.next().await;
    let subscribed = ok.subscribe_with("routing-metrics", json!({}), Some(json!({"routing-metrics": 16}))).await;
    assert_eq!(subscribed["recovered"], true);
    for seq in 17..=20 {
        assert_eq!(ok.next().await["seq"], seq);
    }
}

async fn a_client_behind_gets_exact_gap_notices(transport: Transport) {
    let server = TestServer::with(|c| {
        c.max_batch = 2;
        c.max_queued_batches = 2;
        c.batch_interval = Duration::from_millis(300);
    })
    .await;
    let mut client = server.client_on(transport, "u").await;
    client.next().await;
    client.subscribe_with("routing-metrics", json!({}), None).await;
    publish_many(&server.hub, "routing-metrics", 12).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 12 {
        let message = client.next().await;
        match message["type"].as_str().unwrap() {
            "gap" => {
                assert_eq!(message["reason"], "overflow");
                assert_eq!(message["channel"], "routing-metrics");
                for seq in message["from"].as_u64().unwrap()..=message["to"].as_u64().unwrap() {
                    assert!(seen.insert(seq), "seq {seq} reported twice");
                }
            }
            _ => assert!(seen.insert(message["seq"].as_u64().unwrap())),
        }
    }
    assert_eq!(seen, (1..=12).collect());
}

async fn graceful_shutdown_closes_with_1012(transport: Transport) {
    let mut server = TestServer::with(|c| c.drain_window = Duration::from_millis(300)).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = server.client_on(transport, &format!("u{i}")).await;
        client.next().await;
        clients.push(client);
    }
    server.shutdown();
    for client in &mut clients {
        let closed = client.closed().await;
        assert_eq!(closed.code, 1012);
        assert!(closed.reason.starts_with("SERVICE_RESTART"), "{closed:?}");
    }
    let result = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
}

async fn connection_limits_close_with_1013(transport: Transport) {
    let server = TestServer::with(|c| c.max_connections_per_user = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = server.client_on(transport, "u").await;
        client.next().await;
        held.push(client);
    }
    let mut third = server.client_on(transport, "u").await;
    let closed = third.closed().await;
    assert_eq!(closed.code, 1013);
    assert!(closed.reason.contains("user"), "{closed:?}");
    let mut other = server.client_on(transport, "v").await;
    assert_eq!(other.next().await["type"], "connected");
}

async fn too_many_channels_are_refused(transport: Transport) {
    let server = TestServer::with(|c| c.max_channels = 2).await;
    let mut client = server.client_on(transport, "u").await;
    client.next().await;
    // A command naming more distinct channels than a connection may hold is refused
    // whole, with one error; repeats count once.
    client.send(r#"{"action":"subscribe","id":1,"channels":["a","b","c","a"]}"#).await;
    let refused = client.next().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str(), refused["id"].as_u64()),
        (Some("error"), Some("TOO_MANY_CHANNELS"), Some(1))
    );
    client.send(r#"{"action":"subscribe","channels":["a","b","a","b"]}"#).await;
    client.send(r#"{"action":"subscribe","channels":["c","a"]}"#).await;
    let mut summary = Vec::new();
    for _ in 0..4 {
        let m = client.next().await;
        let code = m.get("code").and_then(serde_json::Value::as_str);
        summary.push(format!("{}:{}", m["type"].as_str().unwrap(), code.unwrap_or(m["channel"].as_str().unwrap())));
    }
    assert_eq!(summary, ["subscribed:a", "subscribed:b", "error:TOO_MANY_CHANNELS", "subscribed:a"]);
}

async fn an_expiring_token_closes_unless_refreshed(transport: Transport) {
    let server = TestServer::start().await;
    let mut short = claims("r");
    short.exp = unix_now() + 2;
    let mut refreshed = server.connect(transport, Some(&token_with(&short)), "").await;
    refreshed.next().await;
    refreshed.send_value(json!({"action":"refresh","id":1,"token":token("r")})).await;
    assert_eq!(refreshed.expect_type("refreshed").await["id"], 1);
    refreshed.send_value(json!({"action":"refresh","id":2,"token":token("someone-else")})).await;
    assert_eq!(refreshed.expect_type("error").await["code"], "FORBIDDEN");

    let mut unrefreshed = claims("r");
    unrefreshed.exp = unix_now() + 1;
    let mut client = server.connect(transport, Some(&token_with(&unrefreshed)), "").await;
    client.next().await;
    assert_eq!(client.closed().await.code, 4502);
    // The refreshed one outlived its first token.
    assert_eq!(refreshed.try_next(Duration::from_secs(2)).await.map(|m| m.is_some()), Ok(false));
}

async fn a_stalled_reader_is_closed_as_slow_and_freed(transport: Transport) {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::with(|c| {
        c.write_timeout = Duration::from_secs(1);
        c.max_publication_bytes = 1 << 20;
    })
    .await;
    let mut fast = server.client_on(transport, "fast").await;
    fast.next().await;
    fast.subscribe_with("big", json!({}), None).await;

    // Subscribes at connect, then never reads, with a tiny receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    let path = match transport {
        Transport::WebSocket => format!("/ws?channels=big&token={}", token("slow")),
        Transport::Http => "/http/stream?channels=big".to_owned(),
    };
    let upgrade = match transport {
        Transport::WebSocket => {
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        }
        Transport::Http => "",
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{upgrade}\r\n",
        server.addr,
        token("slow")
    );
    stalled.write_all(request.as_bytes()).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.hub.connection_count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled reader never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payload = "x".repeat(64 * 1024);
    let hub = server.hub.clone();
    let publishing = tokio::spawn(async move {
        for _ in 0..200 {
            let data = json!(payload);
            let new = tidewire_protocol::NewPublication {
                channel: "big".into(),
                kind: "blob".into(),
                data,
                ..Default::default()
            };
            hub.publish(new).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let mut last = 0;
    while last < 200 {
        let message = fast.next().await;
        match message["type"].as_str() {
            Some("blob") => {
                let seq = message["seq"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "the fast reader gets every message in order");
                last = seq;
            }
            Some("gap") => panic!("the fast reader must not lose messages: {message}"),
            _ => {}
        }
    }
    publishing.await.unwrap();
    loop {
        let metrics = http_text(&server, "GET", "/metrics", None, None).await.1;
        if metrics.contains(r#"tidewire_disconnects_total{code="4000"} 1"#) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slow-consumer close:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its place is given back, and over HTTP its session id too (the fast reader's
    // stays).
    let sessions_left = usize::from(transport == Transport::Http);
    while server.hub.connection_count() != 1 || server.hub.fallback_sessions().len() != sessions_left {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(5), "the slow consumer is still held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}

// What only the HTTP transports have.

#[tokio::test]
async fn a_session_takes_commands_only_from_its_own_user() {
    let server = TestServer::start().await;
    let mut alice = server.client_on(Transport::Http, "alice").await;
    alice.next().await;
    let id = alice.http().id.clone().expect("a session id");
    assert_eq!(id.len(), 32, "128 bits, hex");
    let ping = br#"{"action":"ping","id":1}"#;
    let (status, body) = post_command(server.addr, Some(&id), Some(&token("mallory")), ping).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("UNKNOWN_SESSION")), "another user's token");
    let (status, body) = post_command(server.addr, Some(&id), None, ping).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("AUTH_REQUIRED")));
    let (status, body) = post_command(server.addr, Some(&id), Some("garbage"), ping).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("AUTH_INVALID")));
    let (status, body) = post_command(server.addr, Some(&"0".repeat(32)), Some(&token("alice")), ping).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("UNKNOWN_SESSION")), "a guessed id");
    let (status, body) = post_command(server.addr, None, Some(&token("alice")), ping).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("BAD_REQUEST")), "no session header");
    // None of that reached the session; its own user's command does.
    assert_eq!(alice.try_next(Duration::from_millis(200)).await, Ok(None));
    let (status, _) = post_command(server.addr, Some(&id), Some(&token("alice")), ping).await;
    assert_eq!(status, 204);
    assert_eq!(alice.expect_type("pong").await["id"], 1);
}

#[tokio::test]
async fn a_command_that_is_not_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = server.client_on(Transport::Http, "u").await;
    client.next().await;
    let id = client.http().id.clone().unwrap();
    let (status, _) = post_command(server.addr, Some(&id), Some(&token("u")), &[0xff, 0xfe, b'{']).await;
    assert_eq!(status, 400);
    assert_eq!(client.closed().await.code, 1007);
}

#[tokio::test]
async fn a_hung_up_stream_frees_its_session() {
    let server = TestServer::start().await;
    let mut client = server.client_on(Transport::Http, "u").await;
    client.next().await;
    client.subscribe_with("alerts", json!({}), None).await;
    let id = client.http().id.clone().unwrap();
    assert_eq!((server.hub.connection_count(), server.hub.fallback_sessions().len()), (1, 1));
    let metrics = http_text(&server, "GET", "/metrics", None, None).await.1;
    assert!(metrics.contains("tidewire_http_sessions 1"), "{metrics}");
    client.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.hub.connection_count() != 0 || !server.hub.fallback_sessions().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the session outlived its stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = post_command(server.addr, Some(&id), Some(&token("u")), br#"{"action":"ping"}"#).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("UNKNOWN_SESSION")));
    let metrics = http_text(&server, "GET", "/metrics", None, None).await.1;
    assert!(metrics.contains("tidewire_http_sessions 0"), "{metrics}");
}

#[tokio::test]
async fn pages_of_allowed_origins_may_read_the_transports_and_others_may_not() {
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://desk.example".into()]).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /http/send HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, tidewire-session\r\nConnection: close\r\n\r\n",
            server.addr
        )
    };
    let allowed = raw_exchange(&server, &preflight("https://desk.example")).await.to_ascii_lowercase();
    assert!(allowed.contains("access-control-allow-origin: https://desk.example"), "{allowed}");
    assert!(allowed.contains("tidewire-session"), "{allowed}");
    let refused = raw_exchange(&server, &preflight("https://evil.example")).await.to_ascii_lowercase();
    assert!(!refused.contains("access-control-allow-origin"), "{refused}");
    let get = format!(
        "GET /http/stream HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        server.addr,
        token("u")
    );
    assert!(raw_exchange(&server, &get).await.starts_with("HTTP/1.1 403"));
    // A page naming a stream as an image sends no Origin, but its browser says how.
    let image = format!(
        "GET /sse?channels=a HTTP/1.1\r\nHost: {}\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.addr,
        token("u")
    );
    assert!(raw_exchange(&server, &image).await.starts_with("HTTP/1.1 403"));
}

async fn raw_exchange(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The one-way stream's next event that is not a heartbeat.
async fn next_event(stream: &mut HttpSession) -> tidewire_protocol::event_stream::ServerEvent {
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let event = stream.next_event(deadline).await.expect("an event within 5 s");
        if event.name != "heartbeat" {
            return event;
        }
    }
}

#[tokio::test]
async fn the_one_way_stream_resumes_from_last_event_id_and_misses_nothing() {
    let server = TestServer::start().await;
    publish_many(&server.hub, "b", 2).await;
    let auth = format!("Authorization: Bearer {}\r\n", token("reader"));
    let mut stream = HttpSession::get(server.addr, "/sse?channels=a,b", &auth).await;
    assert_eq!(next_event(&mut stream).await.name, "connected");
    let mut last_id = None;
    for _ in 0..2 {
        let event = next_event(&mut stream).await;
        assert_eq!(event.name, "subscribed");
        last_id = event.id.or(last_id);
    }
    // Publications are unnamed events (EventSource's onmessage), each naming the
    // stream's position in both channels.
    for i in 0..3 {
        publish_many(&server.hub, if i == 1 { "b" } else { "a" }, 1).await;
        let event = next_event(&mut stream).await;
        assert_eq!(event.name, "message");
        let message: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(message["type"], "routing-decision");
        last_id = event.id;
    }
    let last_id = last_id.unwrap();
    let ids = tidewire_protocol::event_stream::StreamIds::decode(&last_id, 2).expect(&last_id);
    assert_eq!((ids.get(0).map(|p| p.seq), ids.get(1).map(|p| p.seq)), (Some(2), Some(3)), "{last_id}");
    drop(stream);
    publish_many(&server.hub, "a", 2).await;
    publish_many(&server.hub, "b", 1).await;

    let headers = format!("{auth}Last-Event-ID: {last_id}\r\n");
    let mut resumed = HttpSession::get(server.addr, "/sse?channels=a,b", &headers).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let event = next_event(&mut resumed).await;
        let message: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        match event.name.as_str() {
            "subscribed" => assert_eq!(message["recovered"], true, "{message}"),
            "message" => got.push((message["channel"].as_str().unwrap().to_owned(), message["seq"].as_u64().unwrap())),
            "connected" => {}
            other => panic!("unexpected {other}: {message}"),
        }
    }
    got.sort();
    assert_eq!(got, vec![("a".to_owned(), 3), ("a".to_owned(), 4), ("b".to_owned(), 4)]);
    let quiet = tokio::time::Instant::now() + Duration::from_millis(300);
    assert!(resumed.next_event(quiet).await.is_none_or(|e| e.name == "heartbeat"), "nothing twice");
}

#[tokio::test]
async fn the_one_way_stream_refuses_what_it_cannot_serve() {
    let server = TestServer::with(|c| c.max_channels = 2).await;
    for path in ["/sse", "/sse?channels=", "/sse?channels=a,b,c"] {
        let (status, body) = http_request(&server, "GET", path, Some(&token("u")), None).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("BAD_REQUEST")), "{path}");
    }
    // Without a token and without public channels: the close event says why.
    let mut stream = HttpSession::get(server.addr, "/sse?channels=a", "").await;
    let event = next_event(&mut stream).await;
    assert_eq!(event.name, "close");
    assert!(event.data.contains("4500"), "{}", event.data);
}

#[tokio::test]
async fn public_channels_take_viewers_without_a_token_read_only_and_within_their_limit() {
    let server = TestServer::with(|c| {
        c.anonymous_channels = vec![tidewire_protocol::channel::ChannelPattern::parse("public.*").unwrap()];
        c.max_anonymous_connections = 2;
    })
    .await;
    let mut viewer = server.connect(Transport::WebSocket, None, "public.prices").await;
    let connected = viewer.next().await;
    assert_eq!(connected["userId"], "");
    assert!(connected.get("expiresAt").is_none(), "{connected}");
    assert_eq!(viewer.expect_type("subscribed").await["channel"], "public.prices");
    for channel in ["private.book", "trading#"] {
        viewer.send_value(json!({"action":"subscribe","channels":[channel]})).await;
        let code = viewer.expect_type("error").await["code"].clone();
        assert!(code == "FORBIDDEN" || code == "INVALID_CHANNEL", "{channel}: {code}");
    }
    viewer.send(r#"{"action":"publish","channel":"public.prices","type":"px","data":{}}"#).await;
    assert_eq!(viewer.expect_type("error").await["code"], "FORBIDDEN");
    publish_many(&server.hub, "public.prices", 1).await;
    assert_eq!(viewer.next().await["seq"], 1);

    // Over the fallback session too, which then takes POSTs by its id alone.
    let mut second = server.connect(Transport::Http, None, "public.prices").await;
    second.next().await;
    second.send(r#"{"action":"ping","id":9}"#).await;
    assert_eq!(second.expect_type("pong").await["id"], 9);
    // And the one-way stream: a third viewer is over the anonymous limit.
    let mut third = HttpSession::get(server.addr, "/sse?channels=public.prices", "").await;
    let event = next_event(&mut third).await;
    assert_eq!(event.name, "close");
    assert!(event.data.contains("1013") && event.data.contains("anonymous"), "{}", event.data);
    // Token holders are not counted against it.
    let mut member = server.client_on(Transport::WebSocket, "member").await;
    assert_eq!(member.next().await["type"], "connected");
}

#[tokio::test]
async fn streams_give_their_http_place_back_once_they_are_sessions() {
    // Four HTTP connections per address: six streams from this one still open, because
    // each counts as a session (limited as sessions are) once admitted, not as HTTP.
    let server = TestServer::with(|c| c.max_http_connections_per_ip = 4).await;
    let mut held = Vec::new();
    for i in 0..6 {
        let mut client = server.client_on(Transport::Http, &format!("u{i}")).await;
        assert_eq!(client.next().await["type"], "connected", "stream {i}");
        held.push(client);
    }
    let auth = format!("Authorization: Bearer {}\r\n", token("reader"));
    let mut one_way = HttpSession::get(server.addr, "/sse?channels=a", &auth).await;
    assert_eq!(next_event(&mut one_way).await.name, "connected");
    assert_eq!(http_text(&server, "GET", "/health", None, None).await.0, 200, "plain HTTP still gets in");
    assert_eq!(server.hub.connection_count(), 7);
}

#[tokio::test]
async fn a_forged_last_event_id_starts_afresh_and_never_grows_the_ids() {
    let server = TestServer::start().await;
    publish_many(&server.hub, "a", 3).await;
    let auth = format!("Authorization: Bearer {}\r\n", token("reader"));
    let forged = format!("1:{},", "!".repeat(30_000));
    for id in [forged.as_str(), &format!("1:{},", "e".repeat(65)), "1:x,2:y,3:z"] {
        let headers = format!("{auth}Last-Event-ID: {id}\r\n");
        let mut stream = HttpSession::get(server.addr, "/sse?channels=a,not!valid", &headers).await;
        let subscribed = loop {
            let event = next_event(&mut stream).await;
            if event.name == "subscribed" {
                break event;
            }
        };
        let message: serde_json::Value = serde_json::from_str(&subscribed.data).unwrap();
        assert!(message.get("recovered").is_none(), "no recovery from a forged id: {message}");
        publish_many(&server.hub, "a", 1).await;
        let event = loop {
            let event = next_event(&mut stream).await;
            if event.name == "message" {
                break event;
            }
        };
        let id = event.id.unwrap();
        assert!(id.len() < 64 && id.ends_with(','), "the refused channel has no position: {id}");
    }
    let (status, _) = http_request(&server, "GET", "/sse?channels=a,a", Some(&token("u")), None).await;
    assert_eq!(status, 400, "a channel named twice");
}

#[tokio::test]
async fn a_post_carries_up_to_16_commands_one_per_line_all_or_none() {
    let server = TestServer::start().await;
    let mut client = server.client_on(Transport::Http, "u").await;
    client.next().await;
    let id = client.http().id.clone().unwrap();
    let auth = Some(token("u"));
    let body = (1..=3).map(|i| format!(r#"{{"action":"ping","id":{i}}}"#)).collect::<Vec<_>>().join("\n");
    let (status, _) = post_command(server.addr, Some(&id), auth.as_deref(), body.as_bytes()).await;
    assert_eq!(status, 204);
    for i in 1..=3 {
        assert_eq!(client.expect_type("pong").await["id"], i);
    }
    let seventeen = vec![r#"{"action":"ping"}"#; 17].join("\n");
    let (status, answer) = post_command(server.addr, Some(&id), auth.as_deref(), seventeen.as_bytes()).await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("BAD_REQUEST")));
    assert_eq!(client.try_next(Duration::from_millis(200)).await, Ok(None), "none of the 17 was taken");
    // One line over the message limit closes the session, as on a WebSocket.
    let big = format!("{}\n{{\"action\":\"ping\",\"pad\":\"{}\"}}", r#"{"action":"ping"}"#, "x".repeat(5000));
    let (status, _) = post_command(server.addr, Some(&id), auth.as_deref(), big.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(client.closed().await.code, 1009);
}

#[tokio::test]
async fn a_fallback_client_that_stops_answering_pings_is_closed_with_4001() {
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.pong_timeout = Duration::from_millis(300);
    })
    .await;
    // Reads the stream but never POSTs.
    let auth = format!("Authorization: Bearer {}\r\n", token("mute"));
    let mut mute = HttpSession::get(server.addr, "/http/stream", &auth).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let close = loop {
        let event = mute.next_event(deadline).await.expect("closed within 5 s");
        if event.name == "close" {
            break event;
        }
    };
    assert!(close.data.starts_with("4001 "), "{}", close.data);
    // Reads and answers every ping (the test client does, as the browser does): stays.
    let mut alive = server.client_on(Transport::Http, "alive").await;
    alive.next().await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        assert!(alive.try_next(left).await.is_ok(), "the answering client is still connected");
    }
    alive.send(r#"{"action":"ping","id":"still"}"#).await;
    assert_eq!(alive.expect_type("pong").await["id"], "still");
}

#[tokio::test]
async fn curl_shows_the_one_way_stream_live() {
    use tokio::io::AsyncBufReadExt;
    let server = TestServer::start().await;
    let url = server.http("/sse?channels=alerts");
    let auth = format!("Authorization: Bearer {}", token("curl"));
    let child = tokio::process::Command::new("curl")
        .args(["-sN", "-H", &auth, &url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = child.expect("this test needs curl on the PATH (apt-get install curl)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut subscribed = false;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line()).await.expect("curl printed in time");
        let line = line.expect("curl's output").expect("curl still running");
        if line == "event: subscribed" {
            subscribed = true;
            publish_many(&server.hub, "alerts", 1).await;
        }
        if subscribed && line.starts_with("data: ") && line.contains("\"routing-decision\"") {
            let message: serde_json::Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
            assert_eq!((message["channel"].as_str(), message["seq"].as_u64()), (Some("alerts"), Some(1)));
            break;
        }
    }
}

#[tokio::test]
async fn a_session_reads_one_post_at_a_time() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let mut client = server.client_on(Transport::Http, "u").await;
    client.next().await;
    let id = client.http().id.clone().unwrap();
    // A POST whose body never comes holds the session's one place…
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /http/send HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nTidewire-Session: {id}\r\n\
         Content-Length: 100\r\n\r\n{{",
        server.addr,
        token("u")
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …so another is refused without being read, and told when to come back.
    let (head, body) = http_exchange_with(&server, &id).await;
    assert!(head.starts_with("http/1.1 429") && head.contains("retry-after: 1"), "{head}");
    assert!(body.contains("RATE_LIMIT_EXCEEDED"), "{body}");
    // Once the first gives up, the session takes POSTs again.
    drop(slow);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = post_command(server.addr, Some(&id), Some(&token("u")), br#"{"action":"ping","id":2}"#).await;
        if status == 204 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the session stayed busy: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.expect_type("pong").await["id"], 2);
}

/// A ping POSTed to session `id`: the status line and headers (lowercased) and the body.
async fn http_exchange_with(server: &TestServer, id: &str) -> (String, String) {
    let request = format!(
        "POST /http/send HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nTidewire-Session: {id}\r\n\
         Content-Length: 17\r\nConnection: close\r\n\r\n{{\"action\":\"ping\"}}",
        server.addr,
        token("u")
    );
    let response = raw_exchange(server, &request).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}
