//! `tidewire-bench attack`: hostile clients at full speed against a real node, while
//! healthy subscribers read a live channel.
//!
//! Two phases of the same length on one node with its default limits: a quiet one (the
//! healthy subscribers and their publisher alone) and one with every attack running at
//! once. Each attack loops until the phase ends, opening a new connection whenever the
//! node closes one, so what is measured is the node under a sustained attack, not one
//! attempt. Attackers come from their own loopback addresses (127.0.1.x), healthy
//! subscribers from theirs, as distinct machines would.
//!
//! The attackers run in a process of their own (`tidewire-bench attack-worker`) at a
//! lower scheduling priority (`nice 10`). On one machine, the attackers' CPU is the
//! node's and the healthy readers' CPU; attackers elsewhere would not take it. Niced,
//! they still send as fast as the node answers whenever a core is free, and the healthy
//! readers' latency measures the node rather than the attackers' own scheduling.
//!
//! Printed: each attack's outcomes (close codes, HTTP statuses, connections refused at
//! accept), the node's peak RSS, the healthy subscribers' loss and p99 in both phases,
//! and, with `--redis-url`, the node's Redis key count before and after.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::AttackArgs;
use crate::load::{Seen, connect, progress, publish, read, token};
use crate::process::{Node, server_bin};

/// What the attacks met, by attack and outcome.
#[derive(Default)]
struct Outcomes(Mutex<BTreeMap<(&'static str, String), u64>>);

impl Outcomes {
    fn count(&self, attack: &'static str, outcome: impl Into<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((attack, outcome.into())).or_insert(0) += 1;
    }

    fn rows(&self) -> Vec<(String, String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|((attack, outcome), n)| ((*attack).to_owned(), outcome.clone(), *n)).collect()
    }
}

/// One phase's healthy figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Healthy {
    pub published: u64,
    pub loss_percent: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The node's CPU seconds over the phase.
    pub server_cpu_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackReport {
    pub seconds_per_phase: f64,
    pub quiet: Healthy,
    pub attacked: Healthy,
    pub peak_rss_mib_quiet: f64,
    pub peak_rss_mib: f64,
    pub redis_keys_before: Option<u64>,
    pub redis_keys_after: Option<u64>,
    pub metric_series_for_disconnects: usize,
    /// attack, outcome, count
    pub outcomes: Vec<(String, String, u64)>,
}

/// A loopback source address of attacker `n` (127.0.1.x), apart from the healthy ones.
fn attacker_address(n: usize) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 1, 1 + (n % 200) as u8], 0))
}

async fn tcp_from(n: usize, port: u16) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(attacker_address(n))?;
    socket.connect(([127, 0, 0, 1], port).into()).await
}

type Ws = WebSocketStream<TcpStream>;

/// An authenticated WebSocket from attacker address `n`, with `query` appended.
async fn ws_from(n: usize, port: u16, user: &str, query: &str) -> Result<Ws, String> {
    let stream = tcp_from(n, port).await.map_err(|e| e.to_string())?;
    let url = format!("ws://127.0.0.1:{port}/ws?token={}{query}", token(user, false));
    tokio_tungstenite::client_async(url, stream).await.map(|(ws, _)| ws).map_err(|e| e.to_string())
}

/// The close code a socket ended with (`1006` without a close frame).
fn close_outcome(message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Option<String> {
    match message {
        Some(Ok(Message::Close(frame))) => Some(format!("closed {}", frame.map_or(1005, |f| u16::from(f.code)))),
        Some(Ok(_)) => None,
        // A client that does not read cannot be sent a close frame: the node gives up
        // writing it and drops the connection.
        Some(Err(_)) | None => Some("dropped (1006: no close frame got through)".to_owned()),
    }
}

/// Reads until the socket closes (or `deadline`), returning the close.
async fn drain_until_closed(ws: &mut Ws, deadline: Instant) -> String {
    loop {
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Err(_) => return "open at the end".to_owned(),
            Ok(message) => {
                if let Some(outcome) = close_outcome(message) {
                    return outcome;
                }
            }
        }
    }
}

/// Sends `command` every `every` (and reads everything, unless `unread`) until the node
/// closes the connection; returns the close.
async fn command_flood(ws: &mut Ws, command: &str, every: Duration, unread: bool, deadline: Instant) -> String {
    let mut ticks = tokio::time::interval(every);
    loop {
        if Instant::now() >= deadline {
            return "open at the end".to_owned();
        }
        tokio::select! {
            _ = ticks.tick() => {
                if ws.send(Message::Text(command.to_owned().into())).await.is_err() {
                    return drain_until_closed(ws, Instant::now() + Duration::from_secs(2)).await;
                }
            }
            message = ws.next(), if !unread => {
                if let Some(outcome) = close_outcome(message) {
                    return outcome;
                }
            }
        }
    }
}

/// Sends frames as fast as the socket takes them, reading nothing, until the node closes
/// the connection.
async fn frame_flood(ws: &mut Ws, frame: Message, deadline: Instant) -> String {
    loop {
        if Instant::now() >= deadline {
            return "open at the end".to_owned();
        }
        if ws.send(frame.clone()).await.is_err() {
            return drain_until_closed(ws, Instant::now() + Duration::from_secs(2)).await;
        }
    }
}

const PAUSE: Duration = Duration::from_millis(20);

/// Runs `attack` in `workers` loops until `deadline`, counting what each round met.
fn spawn_workers<F, Fut>(
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    outcomes: &Arc<Outcomes>,
    name: &'static str,
    workers: usize,
    first_address: usize,
    deadline: Instant,
    attack: F,
) where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    for worker in 0..workers {
        let (outcomes, attack) = (outcomes.clone(), attack.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while Instant::now() < deadline {
                round += 1;
                let outcome = attack(first_address + worker, round).await;
                outcomes.count(name, outcome);
                // A breath between rounds: at the pace of a few hundred new connections
                // a second per attack, the node's answers, not the load generator's own
                // CPU, are what is measured on a shared machine.
                tokio::time::sleep(PAUSE).await;
            }
        }));
    }
}

/// The Redis keys under `prefix` (SCAN, so a shared Redis is not blocked).
async fn redis_key_count(url: &str, prefix: &str) -> Result<u64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let mut cursor = 0u64;
    let mut count = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        count += keys.len() as u64;
        if next == 0 {
            return Ok(count);
        }
        cursor = next;
    }
}

/// One phase: healthy subscribers and their publisher for `duration`, with the attacks
/// when `attack` is set; returns the healthy figures.
async fn phase(node: &Node, args: &AttackArgs, outcomes: Option<&Arc<Outcomes>>) -> Result<Healthy, String> {
    let port = node.port;
    let channel = "live";
    let (stop, stopped) = watch::channel(false);
    let tok = token("healthy", false);
    let mut readers = Vec::new();
    for _ in 0..args.healthy {
        readers.push(tokio::spawn(read(connect(port, &tok, channel, false).await?, stopped.clone())));
    }
    let worker = match outcomes {
        Some(_) => Some(spawn_attack_worker(port, args.duration)?),
        None => None,
    };
    let cpu_before = node.cpu_seconds();
    let sent = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let (rate, duration, sent) = (args.rate, args.duration, sent.clone());
        async move { publish(port, channel, rate, duration, sent).await }
    });
    let started = Instant::now();
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        progress(&format!(
            "  {} {:>4.1}s published {:>7}  server RSS {:>7.1} MiB",
            if outcomes.is_some() { "attacked" } else { "quiet" },
            started.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            node.rss_kib().0 as f64 / 1024.0
        ));
    }
    let published = publisher.await.map_err(|e| e.to_string())??;
    let server_cpu_seconds = node.cpu_seconds() - cpu_before;
    if let (Some(worker), Some(outcomes)) = (worker, outcomes) {
        let output = tokio::task::spawn_blocking(move || worker.wait_with_output())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let rows: Vec<(String, String, u64)> =
            serde_json::from_slice(&output.stdout).map_err(|e| format!("the attack worker's report: {e}"))?;
        let mut map = outcomes.0.lock().unwrap_or_else(|p| p.into_inner());
        for (attack, outcome, count) in rows {
            let attack: &'static str = ATTACKS.iter().find(|name| **name == attack).copied().unwrap_or("other");
            *map.entry((attack, outcome)).or_insert(0) += count;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop.send(true);
    let seen = Seen::total(readers).await?;
    progress("");
    let expected = published * args.healthy as u64;
    let histogram = seen.histogram.ok_or("cannot make a latency histogram")?;
    Ok(Healthy {
        published,
        loss_percent: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(seen.delivered) as f64 * 100.0 / expected as f64
        },
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: histogram.max() as f64 / 1000.0,
        server_cpu_seconds,
    })
}

/// The attacks' names, as reports carry them.
const ATTACKS: [&str; 12] = [
    "reply flood, reading",
    "reply flood, not reading",
    "snapshot resubscribe",
    "binary flood",
    "ping flood",
    "?channels= of 300",
    "random subscribes",
    "random close codes",
    "unauthenticated 2 MB publish",
    "slow 1 MB publish body",
    "idle TCP from one address",
    "other",
];

/// Starts `tidewire-bench attack-worker` against `port`, niced (see the module docs).
fn spawn_attack_worker(port: u16, duration: Duration) -> Result<std::process::Child, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    std::process::Command::new("nice")
        .args(["-n", "10"])
        .arg(me)
        .args(["attack-worker", "--port", &port.to_string(), "--duration", &format!("{}ms", duration.as_millis())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the attack worker: {e}"))
}

/// The attack worker: every attack against `port` for `duration`, then the outcomes as
/// JSON on stdout.
pub async fn attack_worker(port: u16, duration: Duration) -> Result<(), String> {
    let outcomes = Arc::new(Outcomes::default());
    let mut tasks = Vec::new();
    start_attacks(&mut tasks, &outcomes, port, Instant::now() + duration);
    for task in tasks {
        let _ = task.await;
    }
    println!("{}", serde_json::to_string(&outcomes.rows()).map_err(|e| e.to_string())?);
    Ok(())
}

/// Every attack, each in its own loops, until `deadline`.
fn start_attacks(tasks: &mut Vec<tokio::task::JoinHandle<()>>, outcomes: &Arc<Outcomes>, port: u16, deadline: Instant) {
    let unsubscribe_128 = {
        let channels: Vec<String> = (0..128).map(|i| format!("never-subscribed-{i:03}")).collect();
        serde_json::json!({"action":"unsubscribe","id":"x".repeat(64),"channels":channels}).to_string()
    };

    // Replies asked for faster than frames carry them, read or not: 4002.
    for (name, unread, first) in [("reply flood, reading", false, 0), ("reply flood, not reading", true, 4)] {
        let command = unsubscribe_128.clone();
        spawn_workers(tasks, outcomes, name, 4, first, deadline, move |n, round| {
            let command = command.clone();
            async move {
                match ws_from(n, port, &format!("mallory-{n}-{round}"), "").await {
                    Ok(mut ws) => command_flood(&mut ws, &command, Duration::from_millis(10), unread, deadline).await,
                    Err(e) => format!("refused: {}", short(&e)),
                }
            }
        });
    }
    // The keyed snapshot asked for again and again: 4002.
    spawn_workers(tasks, outcomes, "snapshot resubscribe", 4, 8, deadline, move |n, round| async move {
        match ws_from(n, port, &format!("snap-{n}-{round}"), "").await {
            Ok(mut ws) => {
                command_flood(
                    &mut ws,
                    r#"{"action":"subscribe","channels":["book"]}"#,
                    Duration::from_millis(2),
                    true,
                    deadline,
                )
                .await
            }
            Err(e) => format!("refused: {}", short(&e)),
        }
    });
    // Frames the rate limiter must count: 1008.
    for (name, frame, first) in [
        ("binary flood", Message::Binary(vec![0u8; 64].into()), 12),
        ("ping flood", Message::Ping(vec![1u8].into()), 14),
    ] {
        spawn_workers(tasks, outcomes, name, 2, first, deadline, move |n, round| {
            let frame = frame.clone();
            async move {
                match ws_from(n, port, &format!("flood-{n}-{round}"), "").await {
                    Ok(mut ws) => frame_flood(&mut ws, frame, deadline).await,
                    Err(e) => format!("refused: {}", short(&e)),
                }
            }
        });
    }
    // A `?channels=` list longer than a connection may hold: one error, then nothing.
    let many: String = (0..300).map(|i| format!("q{i}")).collect::<Vec<_>>().join(",");
    spawn_workers(tasks, outcomes, "?channels= of 300", 2, 16, deadline, move |n, round| {
        let query = format!("&channels={many}");
        async move {
            let Ok(mut ws) = ws_from(n, port, &format!("query-{n}-{round}"), &query).await else {
                return "refused".to_owned();
            };
            let mut errors = 0;
            let until = Instant::now() + Duration::from_millis(300);
            while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(until.into(), ws.next()).await {
                errors += text.as_str().matches("TOO_MANY_CHANNELS").count();
            }
            let _ = ws.close(None).await;
            format!("{errors} TOO_MANY_CHANNELS error(s)")
        }
    });
    // Random channel names nobody publishes, subscribed and left: nothing lasts.
    spawn_workers(tasks, outcomes, "random subscribes", 4, 18, deadline, move |n, round| async move {
        let Ok(mut ws) = ws_from(n, port, &format!("random-{n}"), "").await else { return "refused".to_owned() };
        let names: Vec<String> = (0..128).map(|_| format!("r-{:016x}", fastrand::u64(..))).collect();
        let subscribe = serde_json::json!({"action":"subscribe","channels":names}).to_string();
        let unsubscribe = serde_json::json!({"action":"unsubscribe","channels":names}).to_string();
        let _ = ws.send(Message::Text(subscribe.into())).await;
        let _ = ws.send(Message::Text(unsubscribe.into())).await;
        let until = Instant::now() + Duration::from_millis(200);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until.into(), ws.next()).await {}
        let _ = ws.close(None).await;
        let _ = round;
        "128 subscribed and left".to_owned()
    });
    // Close codes of the client's choosing: counted as `other`.
    spawn_workers(tasks, outcomes, "random close codes", 1, 22, deadline, move |n, round| async move {
        let Ok(mut ws) = ws_from(n, port, &format!("closer-{n}-{round}"), "").await else {
            return "refused".to_owned();
        };
        let code = 3000 + fastrand::u16(..2000);
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame { code: code.into(), reason: "".into() };
        let _ = ws.close(Some(frame)).await;
        "closed with a random code".to_owned()
    });
    // Unauthenticated publishes that announce 2 MB and send none of it, from 8 addresses.
    spawn_workers(tasks, outcomes, "unauthenticated 2 MB publish", 64, 30, deadline, move |n, _| async move {
        let head = "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                    Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n";
        http_outcome(n % 8 + 30, port, head, b"", deadline).await
    });
    // Authenticated publishes whose bodies dribble in: 503 (body memory) or 408 (timeout).
    let publisher = token("slow-publisher", true);
    spawn_workers(tasks, outcomes, "slow 1 MB publish body", 96, 40, deadline, move |n, _| {
        let publisher = publisher.clone();
        async move {
            let head = format!(
                "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {publisher}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            );
            http_outcome(n % 4 + 40, port, &head, b"[", deadline).await
        }
    });
    // Idle TCP connections that never send a byte, 600 from one address.
    spawn_workers(tasks, outcomes, "idle TCP from one address", 600, 50, deadline, move |_, _| async move {
        let Ok(mut stream) = tcp_from(50, port).await else { return "connect failed".to_owned() };
        let mut byte = [0u8; 1];
        let outcome = match tokio::time::timeout_at(deadline.into(), stream.read(&mut byte)).await {
            Err(_) => "held open",
            Ok(Ok(0)) | Ok(Err(_)) => "closed by the node at accept",
            Ok(Ok(_)) => "answered",
        };
        // The attack is holding many: a refused one waits for the end rather than
        // turning into a connect flood.
        tokio::time::sleep_until(deadline.into()).await;
        outcome.to_owned()
    });
}

/// Sends a request head (and `body`), then reads the status; "refused at accept" when
/// the node closes without answering.
async fn http_outcome(address: usize, port: u16, head: &str, body: &[u8], deadline: Instant) -> String {
    let Ok(mut stream) = tcp_from(address, port).await else { return "connect failed".to_owned() };
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return "refused at accept".to_owned();
    }
    let mut response = vec![0u8; 1024];
    let until = deadline.max(Instant::now() + Duration::from_secs(1)) + Duration::from_secs(15);
    match tokio::time::timeout_at(until.into(), stream.read(&mut response)).await {
        Err(_) => "no answer".to_owned(),
        Ok(Ok(0)) | Ok(Err(_)) => "refused at accept".to_owned(),
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&response[..n]);
            format!("HTTP {}", text.split(' ').nth(1).unwrap_or("?"))
        }
    }
}

fn short(error: &str) -> String {
    error.chars().take(60).collect()
}

/// Publishes 1000 keys of about 400 bytes on `book`: the snapshot the resubscribe attack
/// asks for.
async fn fill_book(port: u16) -> Result<(), String> {
    let tok = token("book-publisher", true);
    for chunk in 0..10 {
        let items: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                let key = format!("k{}", chunk * 100 + i);
                serde_json::json!({"channel":"book","type":"row","key":key,"data":{"pad":"x".repeat(400)}})
            })
            .collect();
        let body = serde_json::Value::Array(items).to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
        if !response.starts_with("HTTP/1.1 200") {
            return Err(format!("cannot fill the book: {}", response.lines().next().unwrap_or_default()));
        }
    }
    Ok(())
}

pub async fn attack(args: &AttackArgs) -> Result<AttackReport, String> {
    let bin = server_bin(args.server_bin.as_ref())?;
    let prefix = format!("tw-attack-{:08x}", fastrand::u32(..));
    let node =
        Node::start_with_defaults(&bin, &args.server_args, args.redis_url.as_deref().map(|u| (u, prefix.as_str())))
            .await?;
    fill_book(node.port).await?;
    let quiet = phase(&node, args, None).await?;
    let peak_quiet = node.rss_kib().1;
    // The quiet phase made the keys the healthy channel needs: what the attacks add is
    // what changes from here.
    let keys_before = match &args.redis_url {
        Some(url) => Some(redis_key_count(url, &prefix).await?),
        None => None,
    };
    let outcomes = Arc::new(Outcomes::default());
    let attacked = phase(&node, args, Some(&outcomes)).await?;
    let peak = node.rss_kib().1;
    // Swept channels and expiring keys have had time to go.
    let keys_after = match &args.redis_url {
        Some(url) => Some(redis_key_count(url, &prefix).await?),
        None => None,
    };
    let metrics = crate::process::http_get(node.port, "/metrics").await.map_err(|e| e.to_string())?;
    let series = metrics.lines().filter(|l| l.starts_with("tidewire_disconnects_total{")).count();
    Ok(AttackReport {
        seconds_per_phase: args.duration.as_secs_f64(),
        quiet,
        attacked,
        peak_rss_mib_quiet: peak_quiet as f64 / 1024.0,
        peak_rss_mib: peak as f64 / 1024.0,
        redis_keys_before: keys_before,
        redis_keys_after: keys_after,
        metric_series_for_disconnects: series,
        outcomes: outcomes.rows(),
    })
}

/// The report as text, with the targets.
pub fn print(report: &AttackReport) {
    println!("attacks ({:.0} s, all at once, against one node with its default limits):", report.seconds_per_phase);
    let mut last = String::new();
    for (attack, outcome, count) in &report.outcomes {
        let name = if *attack == last { String::new() } else { attack.clone() };
        println!("  {name:<32} {count:>7} × {outcome}");
        last = attack.clone();
    }
    println!("  tidewire_disconnects_total series: {}", report.metric_series_for_disconnects);
    let row = |label: &str, h: &Healthy| {
        println!(
            "  {label:<10} published {:>7}, loss {:.3}%, p99 {:>6.1} ms, max {:>6.1} ms (node CPU {:.1} s)",
            h.published, h.loss_percent, h.p99_ms, h.max_ms, h.server_cpu_seconds
        );
    };
    println!("healthy subscribers:");
    row("quiet", &report.quiet);
    row("attacked", &report.attacked);
    println!(
        "server peak RSS: {:.1} MiB quiet, {:.1} MiB through the attacks",
        report.peak_rss_mib_quiet, report.peak_rss_mib
    );
    if let (Some(before), Some(after)) = (report.redis_keys_before, report.redis_keys_after) {
        println!("Redis keys under the node's prefix: {before} before, {after} after");
    }
    let p99_delta = report.attacked.p99_ms - report.quiet.p99_ms;
    let targets = [
        ("server RSS under 256 MiB", report.peak_rss_mib < 256.0),
        ("healthy subscribers lose nothing", report.attacked.loss_percent == 0.0),
        ("healthy p99 within +10 ms of the quiet run", p99_delta <= 10.0),
        ("Redis key count flat", report.redis_keys_before == report.redis_keys_after),
    ];
    println!("targets:");
    for (target, met) in targets {
        println!("  {} {target}", if met { "met    " } else { "NOT MET" });
    }
    println!("  (healthy p99 {:+.1} ms under attack)", p99_delta);
}
