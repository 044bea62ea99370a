//! The bad-input catalogue: every case against one live server, while an observer client
//! receives a steady stream. Each case must get its documented error or close code; the
//! server must stay up; and the observer must see every seq, in order, with no gap and
//! no latency spike.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;
use tidewire_server::auth::unix_now;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const AUDIENCE: &str = "tidewire";

/// What a case must produce.
#[derive(Debug)]
enum Expect {
    /// An `error` message with this code; the connection stays open (checked with a ping).
    Error(&'static str),
    /// A close with this code.
    Close(u16),
    /// An HTTP status (with this error code in the JSON body, when given).
    Http(u16, Option<&'static str>),
    /// Accepted: the answer has this `type`.
    Reply(&'static str),
}

fn claims() -> Value {
    json!({"sub": "mallory", "exp": unix_now() + 600, "aud": AUDIENCE})
}

fn sign(algorithm: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn good_token() -> String {
    sign(Algorithm::HS256, &claims())
}

fn token_without(field: &str) -> String {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(field);
    sign(Algorithm::HS256, &c)
}

fn token_with_field(field: &str, value: Value) -> String {
    let mut c = claims();
    c[field] = value;
    sign(Algorithm::HS256, &c)
}

fn b64(bytes: &[u8]) -> String {
    base64_url::encode(bytes)
}

/// Sends one text frame on a fresh, authenticated connection and checks the answer.
async fn text_case(server: &TestServer, text: &str, expect: &Expect) {
    let mut client = Client::connect(&server.url(&format!("token={}", good_token()))).await;
    assert_eq!(client.next().await["type"], "connected");
    client.send(text).await;
    check(&mut client, expect, text).await;
}

async fn frame_case(server: &TestServer, message: Message, expect: &Expect, what: &str) {
    let mut client = Client::connect(&server.url(&format!("token={}", good_token()))).await;
    assert_eq!(client.next().await["type"], "connected");
    client.ws().send(message).await.unwrap();
    check(&mut client, expect, what).await;
}

async fn check(client: &mut Client, expect: &Expect, what: &str) {
    match expect {
        Expect::Error(code) => {
            let reply = client.expect_type("error").await;
            assert_eq!(reply["code"], *code, "{what}");
            client.send(r#"{"action":"ping","id":"alive"}"#).await;
            assert_eq!(client.expect_type("pong").await["id"], "alive", "{what}: the connection survives");
        }
        Expect::Close(code) => assert_eq!(client.closed().await.code, *code, "{what}"),
        Expect::Reply(kind) => assert_eq!(client.expect_type(kind).await["type"], *kind, "{what}"),
        Expect::Http(..) => unreachable!("not a WebSocket case"),
    }
}

/// Opens `/ws` with a token (or none) and checks the close code.
async fn connect_case(server: &TestServer, token: Option<&str>, expect: &Expect, what: &str) {
    let query = token.map(|t| format!("token={t}")).unwrap_or_default();
    let mut client = Client::connect(&server.url(&query)).await;
    match expect {
        Expect::Close(code) => assert_eq!(client.closed().await.code, *code, "{what}"),
        Expect::Reply(kind) => assert_eq!(client.next().await["type"], *kind, "{what}"),
        _ => unreachable!(),
    }
}

async fn http_case(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    expect: &Expect,
    what: &str,
) {
    let Expect::Http(status, code) = expect else { unreachable!() };
    let (got, body) = http_request(server, method, path, token, body).await;
    assert_eq!(got, *status, "{what}: {body}");
    if let Some(code) = code {
        assert_eq!(body["code"], *code, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_documented_answer_and_nobody_else_notices() {
    let server = TestServer::with(|c| {
        c.jwt_audience = Some(AUDIENCE.to_owned());
        c.allowed_origins = vec!["https://desk.example".into()];
        c.handshake_timeout = Duration::from_millis(500);
        c.max_connections_per_ip = 200;
        c.commands_per_second = 50;
        c.command_burst = 50;
        c.max_publication_bytes = 1024;
    })
    .await;

    // The observer and a steady stream: one publication every 5 ms for the whole run.
    let mut observer = Client::connect(&server.url(&format!("token={}&channels=steady", good_token()))).await;
    observer.next().await;
    observer.expect_type("subscribed").await;
    let hub = server.hub.clone();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let stream = tokio::spawn(async move {
        let mut n = 0u64;
        while !*stopped.borrow() {
            n += 1;
            let new = tidewire_protocol::NewPublication {
                channel: "steady".into(),
                kind: "tick".into(),
                data: json!(n),
                ..Default::default()
            };
            hub.publish(new).await.unwrap();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = stopped.changed() => {}
            }
        }
        n
    });
    let watch = tokio::spawn(async move {
        let mut seqs = Vec::new();
        let mut worst = Duration::ZERO;
        loop {
            match observer.try_next(Duration::from_secs(3)).await {
                Ok(Some(m)) if m["type"] == "tick" => {
                    seqs.push(m["seq"].as_u64().unwrap());
                    let sent = tidewire_protocol::Timestamp::parse(m["timestamp"].as_str().unwrap()).unwrap();
                    let now = tidewire_server::hub::now_timestamp();
                    worst = worst.max(Duration::from_micros((now.unix_micros() - sent.unix_micros()).max(0) as u64));
                }
                Ok(Some(m)) => assert_ne!(m["type"], "gap", "the observer lost messages"),
                Ok(None) | Err(_) => return (seqs, worst),
            }
        }
    });

    let mut cases = 0;
    let ws = |text: &'static str, expect: Expect| (text.to_owned(), expect);
    // 1–20: commands.
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    let many = serde_json::to_string(
        &json!({"action": "subscribe", "channels": (0..200).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
    )
    .unwrap();
    let text_cases: Vec<(String, Expect)> = vec![
        ws("not json", Expect::Error("BAD_REQUEST")),
        ws("", Expect::Error("BAD_REQUEST")),
        ws("[1,2,3]", Expect::Error("BAD_REQUEST")),
        ws("42", Expect::Error("BAD_REQUEST")),
        ws(r#"{"channels":["a"]}"#, Expect::Error("BAD_REQUEST")),
        ws(r#"{"action":7}"#, Expect::Error("BAD_REQUEST")),
        ws(r#"{"action":"teleport"}"#, Expect::Error("UNKNOWN_ACTION")),
        ws(r#"{"action":"subscribe","channels":"alerts"}"#, Expect::Error("BAD_REQUEST")),
        ws(r#"{"action":"subscribe","id":{"x":1},"channels":[]}"#, Expect::Error("BAD_REQUEST")),
        ws(
            r#"{"action":"subscribe","channels":["a"],"since":{"a":99999999999999999999999}}"#,
            Expect::Error("BAD_REQUEST"),
        ),
        ws(r#"{"action":"subscribe","channels":["a"],"since":{"a":-5}}"#, Expect::Error("BAD_REQUEST")),
        (
            format!(r#"{{"action":"publish","channel":"a","type":"t","data":{deep}}}"#).chars().take(4000).collect(),
            Expect::Error("BAD_REQUEST"),
        ),
        ws(r#"{"action":"subscribe","channels":["bad name"]}"#, Expect::Error("INVALID_CHANNEL")),
        ws(r#"{"action":"subscribe","channels":["trading#alice"]}"#, Expect::Error("FORBIDDEN")),
        ws(r#"{"action":"publish","channel":"alerts","type":"alert","data":{}}"#, Expect::Error("FORBIDDEN")),
        ws(r#"{"action":"refresh","token":"garbage"}"#, Expect::Error("AUTH_INVALID")),
        (many, Expect::Error("TOO_MANY_CHANNELS")),
        ws(r#"{"action":"subscribe","channels":[""]}"#, Expect::Error("INVALID_CHANNEL")),
        ws(r#"{"action":"refresh"}"#, Expect::Error("BAD_REQUEST")),
        ws(r#"{"action":"ping","id":1,"unknown":"fields are ignored"}"#, Expect::Reply("pong")),
    ];
    for (text, expect) in &text_cases {
        text_case(&server, text, expect).await;
        cases += 1;
    }

    // 21–26: frames.
    frame_case(&server, Message::Binary(vec![0, 1, 2].into()), &Expect::Error("BAD_REQUEST"), "binary frame").await;
    frame_case(&server, Message::Text("x".repeat(5000).into()), &Expect::Close(1009), "oversize frame").await;
    let huge_subscribe = serde_json::to_string(
        &json!({"action": "subscribe", "channels": (0..10_000).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
    )
    .unwrap();
    frame_case(&server, Message::Text(huge_subscribe.into()), &Expect::Close(1009), "10 000 channels in one subscribe")
        .await;
    // Invalid UTF-8 in a text frame: the client library refuses to build one, so write it raw.
    invalid_utf8_case(&server).await;
    let mut other = claims();
    other["sub"] = json!("bob");
    let foreign = sign(Algorithm::HS256, &other);
    frame_case(
        &server,
        Message::Text(json!({"action": "refresh", "token": foreign}).to_string().into()),
        &Expect::Error("FORBIDDEN"),
        "refresh as another user",
    )
    .await;
    frame_case(
        &server,
        Message::Text(r#"{"action":"publish","channel":"a","type":"t","data":1e400}"#.into()),
        &Expect::Error("BAD_REQUEST"),
        "a number out of range",
    )
    .await;
    cases += 6;

    // 27–37: tokens at connect.
    let now = unix_now();
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{header_none}.{}.", b64(claims().to_string().as_bytes()));
    let mut tampered = good_token();
    tampered.push('A');
    let token_cases: Vec<(Option<String>, Expect, &str)> = vec![
        (None, Expect::Close(4500), "no token"),
        (Some(unsigned), Expect::Close(4501), "alg none"),
        (Some(sign(Algorithm::HS512, &claims())), Expect::Close(4501), "wrong algorithm"),
        (Some(tampered), Expect::Close(4501), "bad signature"),
        (Some(token_with_field("exp", json!(now - 5))), Expect::Close(4502), "expired"),
        (Some(token_with_field("nbf", json!(now + 600))), Expect::Close(4501), "not yet valid"),
        (Some(token_without("sub")), Expect::Close(4501), "no sub"),
        (Some(token_without("exp")), Expect::Close(4501), "no exp"),
        (Some(token_with_field("aud", json!("someone-else"))), Expect::Close(4501), "wrong audience"),
        (Some(token_with_field("channels", json!(["a*b"]))), Expect::Close(4501), "a malformed pattern"),
        (Some("x".repeat(3000)), Expect::Close(4501), "a long garbage token"),
    ];
    for (token, expect, what) in &token_cases {
        connect_case(&server, token.as_deref(), expect, what).await;
        cases += 1;
    }

    // 38–40: where the token travels. The query wins over the header.
    let mut request = server.url(&format!("token={}", "garbage")).into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {}", good_token()).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut client = Client::from_ws(ws);
    assert_eq!(client.closed().await.code, 4501, "the query token is the one checked");
    let mut request = server.url("").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {}", good_token()).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut client = Client::from_ws(ws);
    assert_eq!(client.next().await["type"], "connected", "the header token alone works");
    let mut request = server.url("").into_client_request().unwrap();
    request.headers_mut().insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403, "disallowed Origin")
        }
        other => panic!("disallowed Origin: {:?}", other.map(|_| ())),
    }
    cases += 3;

    // 41–45: HTTP.
    let publisher = publisher_token_with_aud();
    http_case(
        &server,
        "POST",
        "/api/publish",
        None,
        Some("{}"),
        &Expect::Http(401, Some("AUTH_REQUIRED")),
        "publish without a token",
    )
    .await;
    http_case(
        &server,
        "POST",
        "/api/publish",
        Some(&publisher),
        Some("{nope"),
        &Expect::Http(400, Some("BAD_REQUEST")),
        "publish garbage",
    )
    .await;
    let big = format!(r#"{{"channel":"a","type":"t","data":"{}"}}"#, "x".repeat(2000));
    http_case(
        &server,
        "POST",
        "/api/publish",
        Some(&publisher),
        Some(&big),
        &Expect::Http(413, Some("MESSAGE_TOO_BIG")),
        "publish too big",
    )
    .await;
    http_case(&server, "GET", "/ws", None, None, &Expect::Http(400, Some("BAD_REQUEST")), "GET /ws without an upgrade")
        .await;
    http_case(
        &server,
        "GET",
        "/api/channels",
        Some(&good_token()),
        None,
        &Expect::Http(403, Some("FORBIDDEN")),
        "channels without a publish grant",
    )
    .await;
    cases += 5;

    // 46: slowloris — request headers dribbled out are cut off at the handshake timeout.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await.expect("dropped");
    assert!(started.elapsed() < Duration::from_secs(3), "slowloris dropped in time");
    cases += 1;

    // 47: a connection flood from one address stops at the per-address limit (1013).
    let mut flood = Vec::new();
    let mut refused = None;
    for _ in 0..260 {
        let mut client = Client::connect(&server.url(&format!("token={}", good_token()))).await;
        match client.try_next(Duration::from_secs(5)).await {
            Ok(Some(m)) if m["type"] == "connected" => flood.push(client),
            Err(closed) => {
                refused = Some(closed.code);
                break;
            }
            other => panic!("flood: {other:?}"),
        }
    }
    assert_eq!(refused, Some(1013), "the per-address limit refuses the flood");
    drop(flood);
    cases += 1;

    // 48: a command flood gets RATE_LIMIT_EXCEEDED errors, then 1008.
    let mut flooder = Client::connect(&server.url(&format!("token={}", good_token()))).await;
    flooder.next().await;
    for _ in 0..400 {
        if flooder.ws().send(Message::Text(r#"{"action":"ping"}"#.into())).await.is_err() {
            break;
        }
    }
    let mut limited = false;
    let code = loop {
        match flooder.try_next(Duration::from_secs(5)).await {
            Ok(Some(m)) => limited |= m["code"] == "RATE_LIMIT_EXCEEDED",
            Ok(None) => panic!("flooder not closed"),
            Err(closed) => break closed.code,
        }
    };
    assert!(limited && code == 1008, "command flood: errors then 1008 (got {code})");
    cases += 1;

    // Nobody else noticed.
    let _ = stop.send(true);
    let published = stream.await.unwrap();
    let (seqs, worst) = watch.await.unwrap();
    assert!(cases >= 40, "{cases} cases");
    assert_eq!(seqs, (1..=published).collect::<Vec<_>>(), "the observer saw every seq, in order");
    // Its latency is a figure for `tidewire-bench attack`, not a timed assertion here.
    assert_eq!(http_request(&server, "GET", "/health", None, None).await.0, 200, "the server is up");
    eprintln!("{cases} bad inputs; observer: {} messages, worst latency {worst:?}", seqs.len());
}

fn publisher_token_with_aud() -> String {
    let mut c = claims();
    c["publish"] = json!(["*"]);
    sign(Algorithm::HS256, &c)
}

async fn invalid_utf8_case(server: &TestServer) {
    // A WebSocket text frame (masked, FIN) whose payload is not UTF-8, after a real
    // handshake on a raw socket.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        good_token(),
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = stream.read(&mut response).await.unwrap();
    assert!(String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 101"));
    let payload = [0xffu8, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    // Read frames until the close frame; its code must be 1007.
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        let mut buf = [0u8; 4096];
        let n =
            tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await.expect("a close in time").unwrap();
        assert!(n > 0, "closed without a close frame");
        received.extend_from_slice(&buf[..n]);
        if let Some(code) = find_close_code(&received) {
            break code;
        }
    };
    assert_eq!(code, 1007, "invalid UTF-8 in a text frame");
}

/// Walks server frames (unmasked) and returns the code of the first close frame.
fn find_close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => return None,
            126 => return None,
            n => (n as usize, 2),
        };
        if bytes.len() < header + len {
            return None;
        }
        if opcode == 0x8 && len >= 2 {
            return Some(u16::from_be_bytes([bytes[header], bytes[header + 1]]));
        }
        bytes = &bytes[header + len..];
    }
    None
}
