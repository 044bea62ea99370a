//! Test helpers: a real server on an ephemeral loopback port, real WebSocket clients,
//! and tokens. Each test reads as a few lines of protocol.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tidewire_server::{Config, Hub, server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-of-at-least-32-bytes";

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::for_tests(SECRET);
        configure(&mut config);
        let hub = Hub::new(config).expect("hub");
        let listener = server::bind(&hub).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, hub.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer { addr, hub, stop: Some(stop), task }
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects with a token for `user` that may subscribe anywhere shared.
    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&self.url(&format!("token={}", token(user)))).await
    }

    /// Starts the graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn claims(user: &str) -> Claims {
    Claims { sub: user.to_owned(), exp: unix_now() + 3600, ..Claims::default() }
}

pub fn token(user: &str) -> String {
    mint_hs256(SECRET, &claims(user)).expect("token")
}

pub fn token_with(claims: &Claims) -> String {
    mint_hs256(SECRET, claims).expect("token")
}

pub fn publisher_token() -> String {
    let mut c = claims("publisher");
    c.publish = Some(vec!["*".into()]);
    token_with(&c)
}

pub fn operator_token() -> String {
    token_with(&Claims { operator: true, ..claims("operator") })
}

/// Which transport a client speaks: the tests that matter run against both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// The fallback session: an event stream plus POSTed commands.
    Http,
}

/// Generates `websocket` and `http` tests from one `async fn(Transport)`.
#[macro_export]
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn websocket() {
                    super::$name($crate::support::Transport::WebSocket).await;
                }
                #[tokio::test]
                async fn http() {
                    super::$name($crate::support::Transport::Http).await;
                }
            }
        )*
    };
}

enum Wire {
    Ws(WebSocketStream<MaybeTlsStream<TcpStream>>),
    Http(HttpSession),
}

pub struct Client {
    wire: Wire,
    /// Messages received but not yet taken by a test.
    pending: std::collections::VecDeque<Value>,
    /// Sizes of the frames received, in order.
    pub frame_sizes: Vec<usize>,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl TestServer {
    /// Connects over `transport` with `token` (none: without one), subscribing to the
    /// comma-separated `channels` at connect.
    pub async fn connect(&self, transport: Transport, token: Option<&str>, channels: &str) -> Client {
        match transport {
            Transport::WebSocket => {
                let mut query = format!("channels={channels}");
                if let Some(token) = token {
                    query.push_str(&format!("&token={token}"));
                }
                Client::connect(&self.url(&query)).await
            }
            Transport::Http => Client::from_http(HttpSession::open(self.addr, token, channels).await),
        }
    }

    /// Connects `user` (a token that may subscribe anywhere shared) over `transport`.
    pub async fn client_on(&self, transport: Transport, user: &str) -> Client {
        self.connect(transport, Some(&token(user)), "").await
    }
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Client::from_ws(ws)
    }

    pub fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { wire: Wire::Ws(ws), pending: Default::default(), frame_sizes: Vec::new() }
    }

    pub fn from_http(session: HttpSession) -> Client {
        Client { wire: Wire::Http(session), pending: Default::default(), frame_sizes: Vec::new() }
    }

    /// The WebSocket underneath (for tests of WebSocket framing); panics on HTTP.
    pub fn ws(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        match &mut self.wire {
            Wire::Ws(ws) => ws,
            Wire::Http(_) => panic!("not a WebSocket client"),
        }
    }

    /// The fallback session underneath; panics on a WebSocket.
    pub fn http(&mut self) -> &mut HttpSession {
        match &mut self.wire {
            Wire::Http(session) => session,
            Wire::Ws(_) => panic!("not an HTTP client"),
        }
    }

    /// Sends one command; false when the transport refused it (the socket is gone, or
    /// the POST was not accepted).
    pub async fn try_send(&mut self, json: &str) -> bool {
        match &mut self.wire {
            Wire::Ws(ws) => ws.send(Message::Text(json.into())).await.is_ok(),
            Wire::Http(session) => session.post(json).await.0 == 204,
        }
    }

    pub async fn send(&mut self, json: &str) {
        match &mut self.wire {
            Wire::Ws(ws) => ws.send(Message::Text(json.into())).await.expect("send"),
            Wire::Http(session) => {
                let (status, body) = session.post(json).await;
                assert!(status == 204 || status == 413, "POST /http/send answered {status}: {body}");
            }
        }
    }

    pub async fn send_value(&mut self, value: Value) {
        self.send(&value.to_string()).await;
    }

    /// The next message, waiting up to 5 s; panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        match self.try_next(Duration::from_secs(5)).await {
            Ok(Some(message)) => message,
            Ok(None) => panic!("no message within 5 s"),
            Err(closed) => panic!("connection closed: {closed:?}"),
        }
    }

    /// The next message within `wait`; `Ok(None)` on timeout; `Err` when closed.
    pub async fn try_next(&mut self, wait: Duration) -> Result<Option<Value>, Closed> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(Some(message));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let text = match &mut self.wire {
                Wire::Ws(ws) => {
                    let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
                        Err(_) => return Ok(None),
                        Ok(frame) => frame,
                    };
                    match frame {
                        Some(Ok(Message::Text(text))) => text.to_string(),
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) =
                                frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                            return Err(Closed { code, reason });
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return Err(Closed { code: 1006, reason: String::new() }),
                    }
                }
                Wire::Http(session) => match session.next_frame(deadline).await? {
                    Some(text) => text,
                    None if tokio::time::Instant::now() < deadline => continue,
                    None => return Ok(None),
                },
            };
            let frame: Value = serde_json::from_str(&text).expect("frame is JSON");
            let items = frame.as_array().expect("frame is an array").clone();
            self.frame_sizes.push(items.len());
            self.pending.extend(items);
            if let Some(message) = self.pending.pop_front() {
                return Ok(Some(message));
            }
        }
    }

    /// Subscribes to `channel` with `options` (and `since` when given); returns
    /// `subscribed`.
    pub async fn subscribe_with(&mut self, channel: &str, options: Value, since: Option<Value>) -> Value {
        let mut command = serde_json::json!({"action":"subscribe","channels":[channel],"options":options});
        if let Some(since) = since {
            command["since"] = since;
        }
        self.send_value(command).await;
        self.expect_type("subscribed").await
    }

    /// Skips messages until one of `type`; panics if the connection closes first.
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        for _ in 0..10_000 {
            let message = self.next().await;
            if message["type"] == kind {
                return message;
            }
        }
        panic!("no {kind} message");
    }

    /// Waits for the close and returns it; panics if it does not come within 10 s.
    pub async fn closed(&mut self) -> Closed {
        let deadline = Duration::from_secs(10);
        loop {
            match self.try_next(deadline).await {
                Err(closed) => return closed,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("connection not closed within {deadline:?}"),
            }
        }
    }

    pub async fn close(self) {
        match self.wire {
            Wire::Ws(mut ws) => {
                let _ = ws
                    .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: WsCloseCode::Normal,
                        reason: "".into(),
                    }))
                    .await;
            }
            // Hanging up is how an HTTP client leaves.
            Wire::Http(session) => drop(session),
        }
    }
}

/// A fallback session as a client holds it: the event stream, read as it comes, and
/// the id its commands are POSTed to.
pub struct HttpSession {
    addr: SocketAddr,
    token: Option<String>,
    pub id: Option<String>,
    stream: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    parser: tidewire_protocol::event_stream::EventParser,
    events: std::collections::VecDeque<tidewire_protocol::event_stream::ServerEvent>,
    ended: bool,
}

impl HttpSession {
    /// GETs `/http/stream` and waits for the session's id (or its refusal).
    pub async fn open(addr: SocketAddr, token: Option<&str>, channels: &str) -> HttpSession {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let mut session = HttpSession::get(addr, &format!("/http/stream?channels={channels}"), &auth).await;
        session.token = token.map(str::to_owned);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while session.id.is_none() {
            match session.next_event(deadline).await {
                Some(event) if event.name == "session" => session.id = Some(event.data),
                Some(event) => {
                    // Refused: keep the close for the test to read.
                    session.events.push_front(event);
                    break;
                }
                None => break,
            }
        }
        session
    }

    /// GETs an event stream at `path` with `headers` (each ending in CRLF); panics
    /// unless the answer is a 200 event stream.
    pub async fn get(addr: SocketAddr, path: &str, headers: &str) -> HttpSession {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut session = HttpSession {
            addr,
            token: None,
            id: None,
            stream,
            raw: Vec::new(),
            parser: tidewire_protocol::event_stream::EventParser::new(1 << 24),
            events: Default::default(),
            ended: false,
        };
        session.read_head().await;
        session.dechunk();
        session
    }

    async fn read_head(&mut self) {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(at) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..at]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(head.contains("content-type: text/event-stream"), "{head}");
                assert!(head.contains("transfer-encoding: chunked"), "{head}");
                self.raw.drain(..at + 4);
                return;
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("a response head within 5 s")
                .expect("read");
            assert!(read > 0, "no response head");
            self.raw.extend_from_slice(&chunk[..read]);
        }
    }

    /// Takes the complete chunks out of `raw` into the event parser.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size =
                std::str::from_utf8(&self.raw[..line_end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
            let size = size.expect("a chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            let data: Vec<u8> = self.raw[start..start + size].to_vec();
            self.raw.drain(..start + size + 2);
            let events = &mut self.events;
            self.parser.push(&data, |event| events.push_back(event)).expect("events within bounds");
        }
    }

    /// The next event before `deadline`; `None` on timeout or when the stream ended.
    pub async fn next_event(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<tidewire_protocol::event_stream::ServerEvent> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let mut chunk = [0u8; 16384];
            let read = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(read)) => read,
                Ok(Err(_)) => 0,
            };
            if read == 0 {
                self.ended = true;
                continue;
            }
            self.raw.extend_from_slice(&chunk[..read]);
            self.dechunk();
        }
    }

    /// The next frame's text; `Ok(None)` on timeout, `Err` with the close event (1006
    /// when the stream ended without one).
    async fn next_frame(&mut self, deadline: tokio::time::Instant) -> Result<Option<String>, Closed> {
        let Some(event) = self.next_event(deadline).await else {
            if self.ended {
                return Err(Closed { code: 1006, reason: String::new() });
            }
            return Ok(None);
        };
        match event.name.as_str() {
            "message" => Ok(Some(event.data)),
            // Answered as a browser does, with a command.
            "ping" => {
                let _ = self.post(r#"{"action":"ping"}"#).await;
                Ok(None)
            }
            "close" => {
                let close =
                    tidewire_protocol::event_stream::CloseEvent::decode(&event.data).expect("a close event's data");
                Err(Closed { code: close.code, reason: close.reason })
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// POSTs one command to the session with its token; the status and the body.
    pub async fn post(&self, body: &str) -> (u16, Value) {
        let id = self.id.as_deref().unwrap_or("none");
        post_command(self.addr, Some(id), self.token.as_deref(), body.as_bytes()).await
    }
}

/// POSTs `body` to `/http/send` for `session` with `token`; the status and the body.
pub async fn post_command(addr: SocketAddr, session: Option<&str>, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let session = session.map(|s| format!("Tidewire-Session: {s}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /http/send HTTP/1.1\r\nHost: {addr}\r\n{auth}{session}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // The server may answer (413) before reading a body it refuses.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let text = response.split_once("\r\n\r\n").map_or("", |(_, rest)| rest);
    let text = if response.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(text)
    } else {
        text.to_owned()
    };
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// POSTs JSON to the publish API with a token; returns (status, body).
pub async fn post_publish(server: &TestServer, token: Option<&str>, body: &str) -> (u16, Value) {
    http_request(server, "POST", "/api/publish", token, Some(body)).await
}

/// A tiny HTTP/1.1 client (one request per connection), enough for the API tests.
pub async fn http_request(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http_text(server, method, path, token, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub async fn http_text(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, text) = http_exchange(server, method, path, token, body).await;
    (status, text)
}

/// One request on its own connection: the status, the response head (lowercased) and
/// the body.
pub async fn http_exchange(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let head = head.to_ascii_lowercase();
    let text = if head.contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    (status, head, text)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Publishes `count` routing decisions on `channel` through the hub.
pub async fn publish_many(hub: &Hub, channel: &str, count: usize) {
    for i in 0..count {
        hub.publish(tidewire_protocol::NewPublication {
            channel: channel.to_owned(),
            kind: "routing-decision".to_owned(),
            data: serde_json::json!({"i": i}),
            ..Default::default()
        })
        .await
        .expect("publish");
    }
}

/// A Server-Sent Events stream read as it comes (`GET /api/trace`).
pub struct EventStream {
    stream: TcpStream,
    buffer: String,
}

impl EventStream {
    /// GETs `path` with `token`; panics unless the answer is a 200 event stream.
    pub async fn open(server: &TestServer, path: &str, token: &str) -> EventStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n", server.addr);
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut events = EventStream { stream, buffer: String::new() };
        let head = events.until("\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        events
    }

    async fn until(&mut self, end: &str) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(at) = self.buffer.find(end) {
                let taken: String = self.buffer.drain(..at + end.len()).collect();
                return taken;
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("an event within 10 s")
                .expect("read");
            assert!(read > 0, "the event stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    }

    /// The next event's name and JSON data (chunked framing and keep-alive comments
    /// skipped).
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            let block = self.until("\n\n").await;
            let (mut name, mut data) = (None, None);
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(value.trim()).ok();
                }
            }
            if let (Some(name), Some(data)) = (name, data) {
                return (name, data);
            }
        }
    }

    /// Skips events until one named `name`.
    pub async fn expect(&mut self, name: &str) -> Value {
        loop {
            let (got, data) = self.next().await;
            if got == name {
                return data;
            }
        }
    }
}

/// A node on the machine's Redis under `prefix`, ready (Redis also keeps the
/// idempotency keys that make an event read twice by the ingest sources publish once).
pub async fn redis_node(prefix: &str) -> TestServer {
    let prefix = prefix.to_owned();
    let server = TestServer::with(move |c| {
        c.redis_url = Some("redis://127.0.0.1:6379".to_owned());
        c.redis_prefix = prefix;
        c.drain_window = Duration::from_millis(100);
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http_text(&server, "GET", "/ready", None, None).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "Redis is not reachable at 127.0.0.1:6379: start it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

/// Reads on `client` until `total` distinct numbered messages (`data.n`) arrived, or
/// 30 s passed, counting how often each was delivered.
pub async fn collect_numbered(client: &mut Client, seen: &mut std::collections::BTreeMap<u64, u32>, total: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < total && tokio::time::Instant::now() < deadline {
        match client.try_next(Duration::from_millis(200)).await {
            Ok(Some(message)) => {
                if let Some(n) = message["data"]["n"].as_u64() {
                    *seen.entry(n).or_default() += 1;
                }
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

/// The sum of a metric of the node over its lines containing every `part` (`None` when
/// no line does).
pub fn metric_sum(server: &TestServer, name: &str, parts: &[&str]) -> Option<i64> {
    let text = server.hub.metrics().render();
    let values: Vec<i64> = text
        .lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as i64))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
