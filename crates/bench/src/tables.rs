//! Resampled tables: S subscribers on one keyed channel of K keys updated at R
//! updates per second, each subscription asking for `minInterval` per key.
//!
//! Every subscriber keeps its own table (key → seq of the value it holds). The run
//! prints how old each delivered value was when it arrived (a table is never further
//! behind than the oldest arrival: every key's newest value is delivered within one
//! interval), the node's CPU per delivered update, and the bytes each subscriber
//! receives per second. After the publishers stop, every subscriber's table is compared
//! with the channel's snapshot (a fresh subscription's): a table that differs is a
//! failure (exit 1).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::TablesArgs;
use crate::load::token;
use crate::process::{Node, server_bin};
use crate::scan::{Item, scan};
use tidewire_protocol::Timestamp;

const CHANNEL: &str = "bench-table";

/// What one subscriber ended with.
struct Table {
    /// Key → the seq of the value held.
    values: HashMap<String, u64>,
    updates: u64,
    bytes: u64,
    gaps: u64,
    ages: Histogram<u64>,
    /// Per arrival of a key's value: how long the table had been behind for that key.
    /// The publisher writes the keys round-robin at a steady rate, so the first value the
    /// table lacked was published one key period after the value it held: the table was
    /// behind from then until this arrival (previous arrival + its age − key period).
    staleness: Histogram<u64>,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects and subscribes with `options`; returns the socket once `subscribed` came,
/// with the frame that held it (a snapshot may follow in the same frame).
async fn subscriber(port: u16, options: &str) -> Result<(Socket, String), String> {
    let url = format!("ws://127.0.0.1:{port}/ws?token={}", token("bench-table", false));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| e.to_string())?;
    let command = format!(r#"{{"action":"subscribe","channels":["{CHANNEL}"],"options":{options}}}"#);
    ws.send(Message::Text(command.into())).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline.into(), ws.next()).await.map_err(|_| "no subscribed")?;
        match message {
            Some(Ok(Message::Text(text))) if text.as_str().contains(r#""type":"subscribed""#) => {
                return Ok((ws, text.as_str().to_owned()));
            }
            Some(Ok(Message::Text(text))) if text.as_str().contains(r#""type":"error""#) => {
                return Err(format!("subscribe refused: {text}"));
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("subscriber failed: {other:?}")),
        }
    }
}

/// Reads until `stop`, keeping the table.
async fn read(mut ws: Socket, mut stop: watch::Receiver<bool>, key_period_micros: i64) -> Table {
    let mut table = Table {
        values: HashMap::new(),
        updates: 0,
        bytes: 0,
        gaps: 0,
        ages: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        staleness: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    };
    // Key → when its value arrived, and how old it was then.
    let mut arrivals: HashMap<String, (i64, i64)> = HashMap::new();
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(Ok(Message::Text(text))) = message else {
            if matches!(message, Some(Ok(_))) {
                continue;
            }
            break;
        };
        table.bytes += text.len() as u64;
        let now = crate::load::now_micros();
        for item in scan(text.as_str()).unwrap_or_default() {
            match item {
                Item::Publication { seq, timestamp, key: Some(key) } => {
                    table.updates += 1;
                    match table.values.get_mut(key) {
                        Some(held) => *held = seq,
                        None => {
                            table.values.insert(key.to_owned(), seq);
                        }
                    }
                    // Timings for one key in eight: the readers share the machine with
                    // the node, and parsing every timestamp was most of their work.
                    let sampled = key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 8 == 0;
                    if !sampled {
                        continue;
                    }
                    if let Ok(at) = Timestamp::parse(timestamp) {
                        let age = (now - at.unix_micros()).max(1);
                        let _ = table.ages.record(age as u64);
                        if let Some((then, old_age)) = arrivals.insert(key.to_owned(), (now, age)) {
                            let behind = now - then + old_age - key_period_micros;
                            let _ = table.staleness.record(behind.max(1) as u64);
                        }
                    }
                }
                Item::Gap { from, to } => table.gaps += to - from + 1,
                _ => {}
            }
        }
    }
    table
}

/// The channel's latest values (key → seq), from a fresh subscription's snapshot.
async fn snapshot(port: u16) -> Result<HashMap<String, u64>, String> {
    let (mut ws, mut text) = subscriber(port, r#"{"snapshotEnd":true}"#).await?;
    let mut values = HashMap::new();
    loop {
        for one in serde_json::from_str::<Vec<serde_json::Value>>(&text).map_err(|e| e.to_string())? {
            if one["type"] == "snapshot-end" {
                return Ok(values);
            }
            if let (Some(key), Some(seq)) = (one["key"].as_str(), one["seq"].as_u64()) {
                values.insert(key.to_owned(), seq);
            }
        }
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.map_err(|_| "no snapshot-end")?;
        if let Some(Ok(Message::Text(next))) = message {
            text = next.as_str().to_owned();
        } else {
            text = "[]".to_owned();
        }
    }
}

/// Publishes `rate` keyed updates per second over `keys` keys for `duration`, through
/// keep-alive HTTP connections in batches every 10 ms.
async fn publish(port: u16, keys: u32, rate: u32, duration: Duration) -> Result<u64, String> {
    let token = token("bench-publisher", true);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let (mut owed, mut sent) = (0.0, 0u64);
    let mut buffer = vec![0u8; 64 * 1024];
    while started.elapsed() < duration {
        interval.tick().await;
        owed += f64::from(rate) * tick.as_secs_f64();
        let count = owed.floor() as u64;
        owed -= count as f64;
        if count == 0 {
            continue;
        }
        let items: Vec<String> = (sent..sent + count)
            .map(|n| {
                let (key, quality, latency) = (n % u64::from(keys), 90 + n % 10, 10 + n % 40);
                let data = format!(r#"{{"quality":{quality},"latencyMs":{latency},"quotes":{n}}}"#);
                format!(r#"{{"channel":"{CHANNEL}","type":"lp-metrics","key":"LP{key}","data":{data}}}"#)
            })
            .collect();
        let body = format!("[{}]", items.join(","));
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let n = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buffer[..n]);
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("publish failed: {}", head.lines().next().unwrap_or_default()));
        }
        // The reply is small; read the rest of it if it came in two parts.
        if !head.contains("\r\n\r\n") {
            let _ = stream.read(&mut buffer).await;
        }
        sent += count;
    }
    Ok(sent)
}

pub async fn run(args: &TablesArgs) -> Result<(), String> {
    let bin = server_bin(args.server_bin.as_ref())?;
    let batch = format!("--max-publish-batch={}", (args.rate / 100).max(100));
    let node = Node::start(&bin, &[batch], None).await?;
    let options = format!(r#"{{"minInterval":{}}}"#, args.min_interval_ms);
    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let (ws, _) = subscriber(node.port, &options).await?;
        let key_period = i64::from(args.keys) * 1_000_000 / i64::from(args.rate.max(1));
        readers.push(tokio::spawn(read(ws, stopped.clone(), key_period)));
    }
    println!(
        "tables: {} subscribers, {} keys, {} updates/s, minInterval {} ms, {:?}",
        args.subscribers, args.keys, args.rate, args.min_interval_ms, args.duration
    );
    let cpu_before = node.cpu_seconds();
    let own_before = crate::process::own_cpu_seconds();
    let started = Instant::now();
    let published = publish(node.port, args.keys, args.rate, args.duration).await?;
    let publishing = started.elapsed();
    let cpu = node.cpu_seconds() - cpu_before;
    let own = crate::process::own_cpu_seconds() - own_before;
    // One interval and a margin for the last outputs, then the reference.
    tokio::time::sleep(Duration::from_millis(args.min_interval_ms) + Duration::from_secs(1)).await;
    let reference = snapshot(node.port).await?;
    let _ = stop.send(true);
    let mut ages = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut staleness = ages.clone();
    let (mut updates, mut bytes, mut gaps, mut stale) = (0u64, 0u64, 0u64, 0usize);
    for reader in readers {
        let table = reader.await.map_err(|e| e.to_string())?;
        updates += table.updates;
        bytes += table.bytes;
        gaps += table.gaps;
        let _ = ages.add(&table.ages);
        let _ = staleness.add(&table.staleness);
        if table.values != reference {
            if stale == 0 {
                let differing: Vec<_> = reference
                    .iter()
                    .filter(|(key, seq)| table.values.get(*key) != Some(seq))
                    .map(|(key, seq)| format!("{key}: {seq} vs {:?}", table.values.get(key)))
                    .take(3)
                    .collect();
                eprintln!(
                    "  first differing table: {} keys (the channel has {}); e.g. {differing:?}",
                    table.values.len(),
                    reference.len()
                );
            }
            stale += 1;
        }
    }
    let seconds = publishing.as_secs_f64();
    let subscribers = args.subscribers as f64;
    println!("  published            {published} ({:.0}/s)", published as f64 / seconds);
    println!("  delivered updates    {updates} ({:.0}/s per subscriber)", updates as f64 / seconds / subscribers);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  value age on arrival p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(&ages, 0.5),
        ms(&ages, 0.99),
        ages.max() as f64 / 1000.0
    );
    println!(
        "  table behind by      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target: {} ms + one batch interval)",
        ms(&staleness, 0.5),
        ms(&staleness, 0.99),
        staleness.max() as f64 / 1000.0,
        args.min_interval_ms
    );
    println!("  bytes per subscriber {:.1} KiB/s", bytes as f64 / seconds / subscribers / 1024.0);
    println!(
        "  node CPU             {cpu:.2} s in {seconds:.1} s ({:.2} µs per delivered update)",
        cpu * 1e6 / updates.max(1) as f64
    );
    println!(
        "  load generator CPU   {own:.2} s (the {} readers and the publisher, on the same cores)",
        args.subscribers
    );
    println!("  gaps announced       {gaps}");
    println!("  tables not equal to the channel's snapshot at the end: {stale} of {}", args.subscribers);
    if stale > 0 {
        return Err(format!("{stale} subscribers did not end with the latest state"));
    }
    Ok(())
}
