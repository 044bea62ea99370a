//! A tidewire node for browser tests, with a control port the tests drive.
//!
//! Browser code cannot start or restart servers, so this example does it on request:
//!
//! - `GET /token?sub=NAME` → a one-hour token that may subscribe anywhere and publish
//!   everywhere;
//! - `GET /publish?channel=C&count=N` → publishes N routing decisions on C, answers the
//!   last seq;
//! - `GET /restart?down_ms=MS&publish=N&channel=C` → drains the WebSocket listener (clients
//!   get 1012), publishes N messages into the same hub while it is down, waits MS, and
//!   serves the same hub on the same port again, answering once it listens;
//! - `GET /subscribers?channel=C` → how many connections the node has subscribed to C
//!   (what the server holds, not what a client believes);
//! - `GET /info` → `{"ws": "ws://…/ws", "blocked": "ws://…/ws", "refused": N}`: `blocked`
//!   reaches the node through a proxy that refuses every WebSocket upgrade (403), as
//!   inspecting proxies on bank networks do, and passes plain HTTP through; `refused`
//!   counts the upgrades it refused.
//!
//! Every answer carries `Access-Control-Allow-Origin: *`, because the test page runs on
//! another origin. It prints `FIXTURE ws=… control=…` when ready.
//!
//! `cargo run -p tidewire-server --example fixture -- [WS_PORT] [CONTROL_PORT]` (0 = any).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tidewire_server::{Config, Hub, server};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};

const SECRET: &str = "fixture-secret-of-at-least-32-bytes";

/// The running server: how to stop it, and its task.
type Running = (oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

struct Fixture {
    hub: Hub,
    ws_addr: SocketAddr,
    running: Mutex<Option<Running>>,
    /// WebSocket upgrades the blocking proxy refused.
    refused: AtomicU64,
}

/// Forwards each connection to the node, unless its first request asks for a WebSocket
/// upgrade: that one gets 403 and is closed.
async fn blocking_proxy(listener: TcpListener, fixture: Arc<Fixture>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut client, _)) = listener.accept().await else { continue };
        let fixture = fixture.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match client.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            if String::from_utf8_lossy(&head).to_ascii_lowercase().contains("upgrade: websocket") {
                fixture.refused.fetch_add(1, Ordering::Relaxed);
                let _ =
                    client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                return;
            }
            let Ok(mut node) = tokio::net::TcpStream::connect(fixture.ws_addr).await else { return };
            if node.write_all(&head).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            }
        });
    }
}

impl Fixture {
    async fn serve(self: &Arc<Self>) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.ws_addr).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, self.hub.clone(), async move {
            let _ = stopped.await;
        }));
        *self.running.lock().await = Some((stop, task));
        Ok(())
    }
}

type Params = Query<HashMap<String, String>>;

fn cors(body: String) -> impl IntoResponse {
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (header::CACHE_CONTROL, "no-store")], body)
}

async fn publish(hub: &Hub, channel: &str, count: u64) -> u64 {
    let publisher = hub.publisher();
    let mut last = 0;
    for i in 0..count {
        // A routing decision of the desk's catalogue, written out: the gateway (and so
        // its fixture) knows no catalogue; the browser test reads it back typed.
        let data = serde_json::json!({
            "symbol": "EURUSD",
            "side": if i % 2 == 0 { "BUY" } else { "SELL" },
            "volume": 1000.0 + i as f64,
            "routingDecision": if i % 3 == 0 { "BBOOK" } else { "ABOOK" },
            "lpSelected": "OANDA",
            "executionTimeMs": 10 + i % 40,
            "spread": 0.00015,
            "slippage": 0.00002,
        });
        let publication = tidewire_protocol::NewPublication {
            channel: channel.to_owned(),
            kind: "routing-decision".into(),
            data,
            ..Default::default()
        };
        last = publisher.publish(publication).await.map(|a| a.seq).unwrap_or(0);
    }
    last
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<u16> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let ws_port = args.first().copied().unwrap_or(0);
    let control_port = args.get(1).copied().unwrap_or(0);

    let mut config = Config::for_tests(SECRET);
    config.allowed_origins = vec!["*".into()];
    config.drain_window = Duration::from_millis(100);
    config.heartbeat_interval = Duration::from_secs(5);
    let hub = Hub::new(config).expect("hub");
    // Reserve the WebSocket port once, so restarts reuse the same address.
    let ws_addr = TcpListener::bind(("127.0.0.1", ws_port)).await?.local_addr()?;
    let fixture = Arc::new(Fixture { hub, ws_addr, running: Mutex::new(None), refused: AtomicU64::new(0) });
    fixture.serve().await?;
    let proxy = TcpListener::bind(("127.0.0.1", 0)).await?;
    let proxy_addr = proxy.local_addr()?;
    tokio::spawn(blocking_proxy(proxy, fixture.clone()));

    let control = Router::new()
        .route(
            "/token",
            get(|Query(q): Params| async move {
                let sub = q.get("sub").cloned().unwrap_or_else(|| "browser".into());
                let claims =
                    Claims { sub, exp: unix_now() + 3600, publish: Some(vec!["*".into()]), ..Claims::default() };
                cors(mint_hs256(SECRET, &claims).unwrap_or_default())
            }),
        )
        .route(
            "/publish",
            get(|State(f): State<Arc<Fixture>>, Query(q): Params| async move {
                let channel = q.get("channel").cloned().unwrap_or_else(|| "routing-metrics".into());
                let count = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                cors(publish(&f.hub, &channel, count).await.to_string())
            }),
        )
        .route(
            "/restart",
            get(|State(f): State<Arc<Fixture>>, Query(q): Params| async move {
                let down = Duration::from_millis(q.get("down_ms").and_then(|d| d.parse().ok()).unwrap_or(300));
                if let Some((stop, task)) = f.running.lock().await.take() {
                    let _ = stop.send(());
                    let _ = task.await;
                }
                let during = q.get("publish").and_then(|c| c.parse().ok()).unwrap_or(0);
                if during > 0 {
                    let channel = q.get("channel").cloned().unwrap_or_else(|| "routing-metrics".into());
                    publish(&f.hub, &channel, during).await;
                }
                tokio::time::sleep(down).await;
                match f.serve().await {
                    Ok(()) => cors("restarted".into()),
                    Err(e) => cors(format!("restart failed: {e}")),
                }
            }),
        )
        .route(
            "/subscribers",
            get(|State(f): State<Arc<Fixture>>, Query(q): Params| async move {
                let channel = q.get("channel").cloned().unwrap_or_default();
                let channels = f.hub.channels().await;
                let count = channels.iter().find(|c| c.channel == channel).map_or(0, |c| c.subscribers);
                cors(count.to_string())
            }),
        )
        .route(
            "/info",
            get(move |State(f): State<Arc<Fixture>>| async move {
                let refused = f.refused.load(Ordering::Relaxed);
                cors(format!(
                    r#"{{"ws":"ws://{}/ws","blocked":"ws://{proxy_addr}/ws","refused":{refused}}}"#,
                    f.ws_addr
                ))
            }),
        )
        .with_state(fixture.clone());
    let control_listener = TcpListener::bind(("127.0.0.1", control_port)).await?;
    let control_addr = control_listener.local_addr()?;
    println!("FIXTURE ws=ws://{}/ws control=http://{control_addr}", fixture.ws_addr);
    axum::serve(control_listener, control).await
}
