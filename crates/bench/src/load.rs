//! The runs: subscribers, a publisher, and the arithmetic that turns them into figures.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tidewire_protocol::Timestamp;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::process::{Node, SECRET, own_cpu_seconds, server_bin};
use crate::scan::{Item, message_timestamp, scan};
use crate::{FanoutArgs, IdleArgs, ServerArgs, SoakArgs, SuiteArgs};
use tidewire_client::core::SubscriptionEvent;
use tidewire_client::native::{Client, Config as ClientConfig, Item as ClientItem, Subscription};

/// One run's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    pub name: String,
    pub subscribers: usize,
    pub rate: u32,
    pub seconds: f64,
    pub published: u64,
    pub delivered_per_second: f64,
    pub loss_percent: f64,
    /// Share of the missing messages that gap notices announced (100 = all accounted for).
    pub gaps_account_for_percent: f64,
    pub latency_ms: Latency,
    pub server_cpu_seconds: f64,
    pub server_cpu_per_million: f64,
    /// Share of the server's CPU spent in the kernel (system time): on loopback this
    /// includes the kernel's delivery of each frame to the receiving socket.
    pub server_kernel_percent: f64,
    pub server_peak_rss_mib: f64,
    pub loadgen_cpu_seconds: f64,
    /// Idle runs: resident memory per connection.
    pub rss_per_connection_kib: f64,
    pub connects_per_second: f64,
    /// Soak: connections opened and closed by the churn, and the server RSS trend over
    /// the second half of the run (least squares, KiB per minute).
    pub churn_connections: u64,
    pub rss_trend_kib_per_min: f64,
    pub notes: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: u64,
}

impl Latency {
    /// The quantiles of a histogram of microseconds, in milliseconds.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: histogram.max() as f64 / 1000.0,
            samples: histogram.len(),
        }
    }
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub(crate) fn token(sub: &str, publish: bool) -> String {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: unix_now() + 3600,
        publish: publish.then(|| vec!["*".to_owned()]),
        ..Claims::default()
    };
    mint_hs256(SECRET, &claims).unwrap_or_default()
}

/// What one subscriber saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) delivered: u64,
    gapped: u64,
    /// Frames the scanner could not read (their messages count as lost).
    unreadable: u64,
    pub(crate) histogram: Option<Histogram<u64>>,
}

impl Seen {
    fn sampling() -> Seen {
        Seen { histogram: Histogram::new_with_bounds(1, 60_000_000, 3).ok(), ..Seen::default() }
    }

    fn record_latency(&mut self, timestamp: &str) -> bool {
        match (self.histogram.as_mut(), Timestamp::parse(timestamp)) {
            (Some(histogram), Ok(ts)) => {
                let _ = histogram.record((now_micros() - ts.unix_micros()).max(1) as u64);
                true
            }
            _ => false,
        }
    }

    /// What all `readers` saw, together.
    pub(crate) async fn total(readers: Vec<tokio::task::JoinHandle<Seen>>) -> Result<Seen, String> {
        let mut total = Seen::sampling();
        for reader in readers {
            let seen = reader.await.map_err(|e| e.to_string())?;
            total.delivered += seen.delivered;
            total.gapped += seen.gapped;
            total.unreadable += seen.unreadable;
            if let (Some(all), Some(one)) = (total.histogram.as_mut(), seen.histogram) {
                let _ = all.add(one);
            }
        }
        Ok(total)
    }
}

/// The subscribers' read buffer. tungstenite's default (128 KiB) is zeroed on every read,
/// which made that the load generator's largest cost; frames here are a few KiB.
const READ_BUFFER: usize = 4 * 1024;

const SAMPLE_EVERY: u64 = 8;

/// Source addresses the subscribers' connections take turns with. From a single
/// address, the kernel's search for a free port made connecting the load generator's
/// largest cost once a few thousand connections were open; every 127.0.0.0/8 address
/// is loopback, each with its own ports.
const SOURCE_ADDRESSES: u32 = 16;

fn next_source_address() -> std::net::SocketAddr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % u64::from(SOURCE_ADDRESSES);
    std::net::SocketAddr::from(([127, 0, 0, 2 + n as u8], 0))
}

/// A subscriber's transport: a WebSocket, or the HTTP fallback's event stream.
pub(crate) enum Subscriber {
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    Http(Box<crate::http_stream::HttpStream>),
}

impl From<tokio_tungstenite::WebSocketStream<TcpStream>> for Subscriber {
    fn from(ws: tokio_tungstenite::WebSocketStream<TcpStream>) -> Subscriber {
        Subscriber::Ws(Box::new(ws))
    }
}

impl Subscriber {
    /// The next frame's text; `None` when the connection ended.
    async fn next_text(&mut self) -> Option<String> {
        match self {
            Subscriber::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            },
            Subscriber::Http(http) => http.next_frame().await,
        }
    }
}

/// A TCP connection to the node from the next source address.
async fn dial(port: u16, small_buffer: bool) -> Result<TcpStream, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if small_buffer {
        let _ = socket.set_recv_buffer_size(4096);
    }
    socket.bind(next_source_address()).map_err(|e| format!("cannot bind a source address: {e}"))?;
    socket.connect(([127, 0, 0, 1], port).into()).await.map_err(|e| e.to_string())
}

/// Connects one subscriber over `transport` and waits for `subscribed`.
pub(crate) async fn connect_over(
    transport: crate::Transport,
    port: u16,
    token: &str,
    channel: &str,
    small_buffer: bool,
) -> Result<Subscriber, String> {
    match transport {
        crate::Transport::Websocket => connect(port, token, channel, small_buffer).await.map(Subscriber::from),
        crate::Transport::Http => {
            let stream = dial(port, small_buffer).await?;
            let http = crate::http_stream::HttpStream::open(stream, port, token, channel).await?;
            Ok(Subscriber::Http(Box::new(http)))
        }
    }
}

/// Connects one subscriber to `channel` and waits for `subscribed`.
pub(crate) async fn connect(
    port: u16,
    token: &str,
    channel: &str,
    small_buffer: bool,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, String> {
    let stream = dial(port, small_buffer).await?;
    let url = format!("ws://127.0.0.1:{port}/ws?token={token}&channels={channel}");
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .map_err(|_| "no subscribed in time".to_owned())?;
        match message {
            Some(Ok(Message::Text(text))) if text.as_str().contains("\"type\":\"subscribed\"") => return Ok(ws),
            Some(Ok(_)) => continue,
            other => return Err(format!("subscriber failed: {other:?}")),
        }
    }
}

/// Reads until `stop`, counting seqs and gap notices and sampling latency.
pub(crate) async fn read(subscriber: impl Into<Subscriber>, mut stop: watch::Receiver<bool>) -> Seen {
    let mut subscriber = subscriber.into();
    let mut seen = Seen::sampling();
    loop {
        let text = tokio::select! {
            text = subscriber.next_text() => text,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(text) = text else { break };
        let Some(items) = scan(&text) else {
            seen.unreadable += 1;
            continue;
        };
        for item in items {
            match item {
                Item::Gap { from, to } => seen.gapped += to.saturating_sub(from) + 1,
                Item::Control => {}
                Item::Publication { seq, timestamp, .. } => {
                    seen.delivered += 1;
                    if seq % SAMPLE_EVERY == 0 {
                        seen.record_latency(timestamp);
                    }
                }
            }
        }
    }
    seen
}

/// Publishes `rate` per second to `channel` for `duration` through one keep-alive HTTP
/// connection, in batches every 10 ms; returns how many were accepted.
pub(crate) async fn publish(
    port: u16,
    channel: &str,
    rate: u32,
    duration: Duration,
    progress: Arc<AtomicU64>,
) -> Result<u64, String> {
    let token = token("bench-publisher", true);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut owed = 0.0;
    let mut sent = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    while started.elapsed() < duration {
        interval.tick().await;
        owed += f64::from(rate) * tick.as_secs_f64();
        let count = owed.floor() as u64;
        if count == 0 {
            continue;
        }
        owed -= count as f64;
        let mut body = String::with_capacity(count as usize * 240 + 2);
        body.push('[');
        for i in 0..count {
            if i > 0 {
                body.push(',');
            }
            let n = sent + i;
            body.push_str(&format!(
                concat!(
                    r#"{{"channel":"{channel}","type":"routing-decision","data":{{"symbol":"EURUSD","side":"{}","#,
                    r#""volume":{},"routingDecision":"ABOOK","lpSelected":"OANDA","executionTimeMs":{},"#,
                    r#""spread":0.00015,"slippage":0.00002}}}}"#,
                ),
                if n % 2 == 0 { "BUY" } else { "SELL" },
                10_000 + n % 1000,
                20 + n % 30,
                // A format string from concat! cannot capture variables implicitly.
                channel = channel,
            ));
        }
        body.push(']');
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        read_response(&mut stream, &mut buffer).await?;
        sent += count;
        progress.store(sent, Ordering::Relaxed);
    }
    Ok(sent)
}

/// Reads one HTTP response (Content-Length bodies) and fails on a non-200 status.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let n = stream.read(&mut buffer[filled..]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("publisher connection closed".to_owned());
        }
        filled += n;
        let text = String::from_utf8_lossy(&buffer[..filled]);
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if filled >= end + 4 + length {
            if !text.starts_with("HTTP/1.1 200") {
                return Err(format!("publish failed: {}", text.lines().next().unwrap_or_default()));
            }
            return Ok(());
        }
    }
}

/// Subscribers through the native client crate, spread over the nodes: each a
/// `tidewire_client::native::Client` with one subscription, read until `stop`.
async fn connect_clients(
    nodes: &[Node],
    count: usize,
    channel: &str,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<Seen>>, String> {
    let tok = token("bench-subscriber", false);
    let clients = concurrently(count, 250, "connecting clients", |i| {
        let url = format!("ws://127.0.0.1:{}/ws", nodes[i % nodes.len()].port);
        let (tok, channel) = (tok.clone(), channel.to_owned());
        async move { subscribe_client(&url, &tok, &channel).await }
    })
    .await?;
    let readers = clients
        .into_iter()
        .map(|(client, subscription)| tokio::spawn(read_client(client, subscription, stop.clone())))
        .collect();
    Ok(readers)
}

async fn subscribe_client(url: &str, token: &str, channel: &str) -> Result<(Client, Subscription), String> {
    let client = Client::connect(ClientConfig::new(url).token(token));
    let mut subscription = client.subscribe(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline.into(), subscription.next()).await {
            Ok(Some(ClientItem::Event(SubscriptionEvent::Subscribed { .. }))) => {
                return Ok((client, subscription));
            }
            Ok(Some(ClientItem::Event(SubscriptionEvent::Refused { code, message }))) => {
                return Err(format!("subscription refused: {code}: {message}"));
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err("the client stopped before subscribing".to_owned()),
            Err(_) => return Err(format!("client not subscribed to {channel} within 30 s")),
        }
    }
}

/// Counts what a client delivers. The client closes gaps itself (it recovers with
/// `since`), so anything missing at the end is loss that recovery could not repair.
async fn read_client(client: Client, mut subscription: Subscription, mut stop: watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::sampling();
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            _ = stop.wait_for(|s| *s) => break,
        };
        match item {
            Some(ClientItem::Message(delivery)) => {
                seen.delivered += 1;
                if delivery.seq % SAMPLE_EVERY == 0
                    && !message_timestamp(&delivery.json).is_some_and(|ts| seen.record_latency(ts))
                {
                    seen.unreadable += 1;
                }
            }
            Some(ClientItem::Event(_)) => {}
            None => break,
        }
    }
    drop(subscription);
    client.close().await;
    seen
}

async fn start_nodes(server: &ServerArgs) -> Result<Vec<Node>, String> {
    let bin = server_bin(server.server_bin.as_ref())?;
    if server.nodes > 1 && server.redis_url.is_none() {
        return Err("--nodes above 1 needs --redis-url".to_owned());
    }
    let prefix = format!("tw-bench-{:08x}", fastrand::u32(..));
    let mut nodes = Vec::new();
    for _ in 0..server.nodes.max(1) {
        nodes.push(
            Node::start(&bin, &server.server_args, server.redis_url.as_deref().map(|u| (u, prefix.as_str()))).await?,
        );
    }
    Ok(nodes)
}

/// Runs `count` connects with at most `in_flight` under way at once, each in its own
/// task (so they spread over the runtime's threads), reporting progress as `label`; the
/// first failure stops it. A sliding window rather than batches: waiting for a whole
/// batch to finish left the cores idle while its slowest handshakes completed. Results
/// come in completion order.
async fn concurrently<T, F, Fut>(count: usize, in_flight: usize, label: &str, connect: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut done = Vec::with_capacity(count);
    let mut joined = futures_util::stream::iter(0..count).map(|i| tokio::spawn(connect(i))).buffer_unordered(in_flight);
    while let Some(result) = joined.next().await {
        done.push(result.map_err(|e| e.to_string())??);
        if done.len() % 250 == 0 || done.len() == count {
            progress(&format!("  {label}: {}/{count}", done.len()));
        }
    }
    Ok(done)
}

pub(crate) fn progress(line: &str) {
    eprint!("\r\x1b[2K{line}");
    let _ = std::io::stderr().flush();
}

pub async fn fanout(args: &FanoutArgs) -> Result<RunResult, String> {
    let nodes = start_nodes(&args.server).await?;
    let channel = "bench";
    let slow_count = ((args.subscribers as f64) * args.slow).round() as usize;
    let fast_count = args.subscribers - slow_count;
    let (stop, stopped) = watch::channel(false);

    // Subscribers, spread over the nodes, connected a few hundred at a time.
    let mut readers = Vec::with_capacity(fast_count);
    let mut stalled = Vec::with_capacity(slow_count);
    if args.via_client {
        readers = connect_clients(&nodes, args.subscribers, channel, &stopped).await?;
    } else {
        let tok = token("bench-subscriber", false);
        let sockets = concurrently(args.subscribers, 250, "connecting subscribers", |i| {
            let (port, slow, tok) = (nodes[i % nodes.len()].port, i >= fast_count, tok.clone());
            let transport = args.transport;
            async move { connect_over(transport, port, &tok, channel, slow).await.map(|ws| (slow, ws)) }
        })
        .await?;
        for (slow, ws) in sockets {
            if slow {
                stalled.push(ws);
            } else {
                readers.push(tokio::spawn(read(ws, stopped.clone())));
            }
        }
    }

    // Publish and watch.
    let cpu_before: f64 = nodes.iter().map(Node::cpu_seconds).sum();
    let kernel_before: f64 = nodes.iter().map(Node::kernel_cpu_seconds).sum();
    let own_before = own_cpu_seconds();
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let publisher = tokio::spawn({
        let (port, rate, duration, sent) = (nodes[0].port, args.rate, args.duration, sent.clone());
        async move { publish(port, channel, rate, duration, sent).await }
    });
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss: u64 = nodes.iter().map(|n| n.rss_kib().0).sum();
        progress(&format!(
            "  {:>4.1}s published {:>9}  server RSS {:>7.1} MiB",
            started.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            rss as f64 / 1024.0
        ));
    }
    let published = publisher.await.map_err(|e| e.to_string())??;
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last frames arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu: f64 = nodes.iter().map(Node::cpu_seconds).sum::<f64>() - cpu_before;
    let kernel: f64 = nodes.iter().map(Node::kernel_cpu_seconds).sum::<f64>() - kernel_before;
    let own = own_cpu_seconds() - own_before;
    let peak: u64 = nodes.iter().map(|n| n.rss_kib().1).sum();
    let _ = stop.send(true);
    drop(stalled);

    let Seen { delivered, gapped, unreadable, histogram } = Seen::total(readers).await?;
    let histogram = histogram.ok_or("cannot make a latency histogram")?;
    progress("");
    let expected = published * fast_count as u64;
    let missing = expected.saturating_sub(delivered);
    Ok(RunResult {
        name: format!(
            "fanout{}{}{}{}",
            if args.server.nodes > 1 {
                " cross-node"
            } else if args.server.redis_url.is_some() {
                " redis"
            } else {
                ""
            },
            if args.slow > 0.0 { " +slow" } else { "" },
            if args.via_client { " via client" } else { "" },
            if args.transport == crate::Transport::Http { " http" } else { "" }
        ),
        subscribers: args.subscribers,
        rate: args.rate,
        seconds: elapsed,
        published,
        delivered_per_second: delivered as f64 / elapsed,
        loss_percent: if expected == 0 { 0.0 } else { missing as f64 * 100.0 / expected as f64 },
        // Through the client crate gaps are recovered, not announced to the bench.
        gaps_account_for_percent: if args.via_client && missing > 0 {
            f64::NAN
        } else {
            accounted_for(missing, gapped)
        },
        latency_ms: Latency::of(&histogram),
        server_cpu_seconds: cpu,
        server_cpu_per_million: if delivered == 0 { 0.0 } else { cpu * 1e6 / delivered as f64 },
        server_kernel_percent: if cpu > 0.0 { kernel * 100.0 / cpu } else { 0.0 },
        server_peak_rss_mib: peak as f64 / 1024.0,
        loadgen_cpu_seconds: own,
        notes: with_unreadable(args.server.server_args.join(" "), unreadable),
        ..RunResult::default()
    })
}

pub async fn idle(args: &IdleArgs) -> Result<RunResult, String> {
    let nodes = start_nodes(&args.server).await?;
    let node = &nodes[0];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, _) = node.rss_kib();
    let tok = token("bench-idle", false);
    let cpu_before = node.cpu_seconds();
    let own_before = own_cpu_seconds();
    let started = Instant::now();
    let sockets = concurrently(args.connections, 500, "connected", |_| {
        let (port, tok, transport) = (node.port, tok.clone(), args.transport);
        async move { connect_over(transport, port, &tok, "idle", false).await }
    })
    .await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    let server_cpu = node.cpu_seconds() - cpu_before;
    let own_cpu = own_cpu_seconds() - own_before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, peak) = node.rss_kib();
    // Open until measured.
    drop(sockets);
    progress("");
    Ok(RunResult {
        name: if args.transport == crate::Transport::Http { "idle http" } else { "idle" }.to_owned(),
        subscribers: args.connections,
        seconds: connect_seconds,
        server_peak_rss_mib: peak as f64 / 1024.0,
        rss_per_connection_kib: after.saturating_sub(before) as f64 / args.connections as f64,
        connects_per_second: args.connections as f64 / connect_seconds,
        server_cpu_seconds: server_cpu,
        loadgen_cpu_seconds: own_cpu,
        notes: format!(
            "RSS {:.1} → {:.1} MiB; server CPU {:.0} µs per connect",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            server_cpu * 1e6 / args.connections as f64
        ),
        ..RunResult::default()
    })
}

pub async fn suite(args: &SuiteArgs) -> Result<Vec<RunResult>, String> {
    let server = |extra: &[&str], redis: Option<String>, nodes: usize| ServerArgs {
        server_bin: args.server_bin.clone(),
        server_args: extra.iter().map(|s| (*s).to_owned()).collect(),
        redis_url: redis,
        nodes,
    };
    let run = |subscribers, rate, slow, server| FanoutArgs {
        subscribers,
        rate,
        duration: args.duration,
        slow,
        server,
        via_client: false,
        transport: crate::Transport::Websocket,
    };
    let mut results = Vec::new();
    let plan = [
        run(1000, 1000, 0.0, server(&[], None, 1)),
        FanoutArgs { transport: crate::Transport::Http, ..run(1000, 1000, 0.0, server(&[], None, 1)) },
        run(100, 10_000, 0.0, server(&[], None, 1)),
        run(100, 10_000, 0.0, server(&["--max-batch=200", "--batch-interval=8ms"], None, 1)),
        run(10_000, 100, 0.0, server(&[], None, 1)),
        run(1000, 1000, 0.1, server(&[], None, 1)),
        FanoutArgs { via_client: true, ..run(100, 1000, 0.0, server(&[], None, 1)) },
    ];
    for fanout_args in plan {
        eprintln!(
            "fanout S={} R={} slow={}{}{}",
            fanout_args.subscribers,
            fanout_args.rate,
            fanout_args.slow,
            if fanout_args.via_client { " via the client crate" } else { "" },
            if fanout_args.transport == crate::Transport::Http { " over the HTTP fallback" } else { "" }
        );
        results.push(fanout(&fanout_args).await?);
    }
    if let Some(url) = &args.redis_url {
        for nodes in [1, 2] {
            eprintln!("fanout S=1000 R=1000 redis nodes={nodes}");
            results.push(fanout(&run(1000, 1000, 0.0, server(&[], Some(url.clone()), nodes))).await?);
        }
    }
    for transport in [crate::Transport::Websocket, crate::Transport::Http] {
        eprintln!("idle C={} {transport:?}", args.connections);
        // A fallback session holds its HTTP connection, which the HTTP limits count.
        let limits: &[&str] = match transport {
            crate::Transport::Http => &["--max-http-connections=200000", "--max-http-connections-per-ip=100000"],
            crate::Transport::Websocket => &[],
        };
        results
            .push(idle(&IdleArgs { connections: args.connections, transport, server: server(limits, None, 1) }).await?);
    }
    Ok(results)
}

/// Mixed load for a long time: steady subscribers that must lose nothing, workers that
/// keep connecting, subscribing, unsubscribing and disconnecting, and publications on
/// both. Server RSS is sampled every second.
pub async fn soak(args: &SoakArgs) -> Result<RunResult, String> {
    let nodes = start_nodes(&args.server).await?;
    let port = nodes[0].port;
    let (stop, stopped) = watch::channel(false);
    let tok = token("soak", false);
    let mut healthy = Vec::new();
    for _ in 0..args.healthy {
        healthy.push(tokio::spawn(read(connect(port, &tok, "soak", false).await?, stopped.clone())));
    }
    let churned = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..args.churn {
        let (tok, churned, mut stopped) = (tok.clone(), churned.clone(), stopped.clone());
        workers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !*stopped.borrow() {
                round += 1;
                let channel = format!("churn-{}", (worker as u64 * 7 + round) % 50);
                if let Ok(mut ws) = connect(port, &tok, &channel, false).await {
                    use futures_util::SinkExt;
                    let other = format!("churn-{}", (round * 13) % 50);
                    let _ = ws
                        .send(Message::Text(
                            format!(r#"{{"action":"subscribe","channels":["{other}","soak"]}}"#).into(),
                        ))
                        .await;
                    let _ = tokio::time::timeout(Duration::from_millis(50 + (round % 5) * 40), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    let _ = ws
                        .send(Message::Text(format!(r#"{{"action":"unsubscribe","channels":["{other}"]}}"#).into()))
                        .await;
                    let _ = ws.close(None).await;
                    churned.fetch_add(1, Ordering::Relaxed);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = stopped.changed() => {}
                }
            }
        }));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let (rate, duration, sent) = (args.rate, args.duration, sent.clone());
        async move { publish(port, "soak", rate, duration, sent).await }
    });
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = nodes[0].rss_kib().0 as f64;
        samples.push((started.elapsed().as_secs_f64(), rss));
        progress(&format!(
            "  {:>5.0}s published {:>8}  churned {:>7}  server RSS {:>7.1} MiB",
            started.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            churned.load(Ordering::Relaxed),
            rss / 1024.0
        ));
    }
    let published = publisher.await.map_err(|e| e.to_string())??;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    let Seen { delivered, gapped, unreadable, .. } = Seen::total(healthy).await?;
    progress("");
    let expected = published * args.healthy as u64;
    let second_half: Vec<(f64, f64)> = samples.iter().copied().skip(samples.len() / 2).collect();
    let trend = slope(&second_half) * 60.0;
    let (first, last) = (samples.first().map_or(0.0, |s| s.1), samples.last().map_or(0.0, |s| s.1));
    let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    Ok(RunResult {
        name: "soak".to_owned(),
        subscribers: args.healthy,
        rate: args.rate,
        seconds: started.elapsed().as_secs_f64(),
        published,
        delivered_per_second: delivered as f64 / started.elapsed().as_secs_f64(),
        loss_percent: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(delivered) as f64 * 100.0 / expected as f64
        },
        gaps_account_for_percent: accounted_for(expected.saturating_sub(delivered), gapped),
        server_peak_rss_mib: max / 1024.0,
        churn_connections: churned.load(Ordering::Relaxed),
        rss_trend_kib_per_min: trend,
        notes: with_unreadable(
            format!("RSS {:.1} → {:.1} MiB (max {:.1})", first / 1024.0, last / 1024.0, max / 1024.0),
            unreadable,
        ),
        ..RunResult::default()
    })
}

/// Notes, plus a warning when subscribers got frames (or, through the client crate,
/// messages) they could not read.
fn with_unreadable(notes: String, unreadable: u64) -> String {
    if unreadable == 0 {
        notes
    } else {
        format!("{notes} {unreadable} UNREADABLE (frames: counted as loss; messages via the client: not sampled)")
            .trim_start()
            .to_owned()
    }
}

/// Share of the missing messages that gap notices announced (100 when none is missing).
fn accounted_for(missing: u64, gapped: u64) -> f64 {
    if missing == 0 { 100.0 } else { gapped.min(missing) as f64 * 100.0 / missing as f64 }
}

/// Least-squares slope of (x, y) points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) =
        points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
    if den == 0.0 { 0.0 } else { num / den }
}
