//! `tidewire-bench outbox`: the PostgreSQL outbox source from insert to subscribers.
//!
//! A node runs with a routing file that names a fresh outbox table; S subscribers read
//! its channel; the bench inserts R rows per second (a statement every 10 ms), each
//! carrying the microsecond it was inserted (`sentAt`), for D seconds. Figures: rows
//! delivered per second to all subscribers, loss, and the end-to-end latency from the
//! insert to the subscriber (the database, the notification, the batch, the publish and
//! the fan-out together).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem;
use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::load::{RunResult, connect, now_micros, progress, token};
use crate::process::{Node, server_bin};

#[derive(clap::Args, Clone, Debug)]
pub struct OutboxArgs {
    #[arg(long, short = 's', default_value_t = 100)]
    pub subscribers: usize,
    /// Rows inserted per second.
    #[arg(long, short = 'r', default_value_t = 5000)]
    pub rate: u32,
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Rows the source takes per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
    /// The database (libpq key=value or URL).
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test")]
    pub postgres_url: String,
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Extra flags for the node, e.g. `--max-batch=500` (above 3 125 rows/s a subscriber
    /// needs more than the default 50 messages per 16 ms frame).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

const CHANNEL: &str = "outbox-bench";

pub async fn run(args: &OutboxArgs) -> Result<RunResult, String> {
    let connect_db = tokio_postgres::connect(&args.postgres_url, NoTls);
    let (db, connection) = tokio::time::timeout(Duration::from_secs(5), connect_db)
        .await
        .map_err(|_| "PostgreSQL did not answer in 5 s".to_owned())?
        .map_err(|e| format!("PostgreSQL is not reachable at {}: {e}", args.postgres_url))?;
    tokio::spawn(connection);
    let table = format!("tw_bench_{:08x}", fastrand::u32(..));
    let routing = std::env::temp_dir().join(format!("{table}.toml"));
    let file = format!(
        "[[postgres]]\nname = \"bench\"\nurl = \"{}\"\ntable = \"{table}\"\nbatch = {}\n",
        args.postgres_url.replace('"', "\\\""),
        args.batch
    );
    std::fs::write(&routing, file).map_err(|e| e.to_string())?;
    let bin = server_bin(args.server_bin.as_ref())?;
    let mut extra = vec!["--ingest".to_owned(), routing.display().to_string()];
    extra.extend(args.server_args.iter().cloned());
    let node = Node::start(&bin, &extra, None).await?;
    let result = measure(args, &db, &table, &node).await;
    let _ = db.batch_execute(&format!("DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_dead;")).await;
    let _ = std::fs::remove_file(&routing);
    result
}

async fn measure(
    args: &OutboxArgs,
    db: &tokio_postgres::Client,
    table: &str,
    node: &Node,
) -> Result<RunResult, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.map_err(|e| e.to_string())?;
        if ready.get::<_, bool>(0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the node did not create {table}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tok = token("bench-outbox", false);
    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let ws = connect(node.port, &tok, CHANNEL, false).await?;
        readers.push(tokio::spawn(read(ws, stopped.clone())));
    }
    let insert = format!(
        "INSERT INTO {table} (channel, type, data) SELECT '{CHANNEL}', 'tick', \
         jsonb_build_object('n', n, 'sentAt', $3::bigint) FROM generate_series($1::bigint, $2::bigint) AS n"
    );
    let cpu_before = node.cpu_seconds();
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut owed, mut inserted) = (0.0, 0i64);
    while started.elapsed() < args.duration {
        interval.tick().await;
        owed += f64::from(args.rate) * tick.as_secs_f64();
        let count = owed.floor() as i64;
        if count == 0 {
            continue;
        }
        owed -= count as f64;
        let (from, to) = (inserted + 1, inserted + count);
        db.execute(&insert, &[&from, &to, &now_micros()]).await.map_err(|e| e.to_string())?;
        inserted = to;
        progress(&format!("  {:>4.1}s inserted {inserted:>9}", started.elapsed().as_secs_f64()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let drained = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 =
            db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.map_err(|e| e.to_string())?.get(0);
        if left == 0 || Instant::now() > drained {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cpu = node.cpu_seconds() - cpu_before;
    let _ = stop.send(true);
    let mut delivered = 0u64;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?;
    for reader in readers {
        let (count, seen) = reader.await.map_err(|e| e.to_string())?;
        delivered += count;
        histogram.add(seen).map_err(|e| e.to_string())?;
    }
    progress("");
    let expected = inserted as u64 * args.subscribers as u64;
    Ok(RunResult {
        name: "outbox".to_owned(),
        subscribers: args.subscribers,
        rate: args.rate,
        seconds: elapsed,
        published: inserted as u64,
        delivered_per_second: delivered as f64 / elapsed,
        loss_percent: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(delivered) as f64 * 100.0 / expected as f64
        },
        latency_ms: crate::load::Latency::of(&histogram),
        server_cpu_seconds: cpu,
        server_cpu_per_million: if delivered == 0 { 0.0 } else { cpu * 1e6 / delivered as f64 },
        notes: format!("batch {}, insert → subscriber latency {}", args.batch, args.server_args.join(" ")),
        ..RunResult::default()
    })
}

/// Counts the messages delivered and records each one's latency from the microsecond
/// its source stamped in it (`sentAt`); the Kafka bench reads the same way.
pub(crate) async fn read(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    mut stop: watch::Receiver<bool>,
) -> (u64, Histogram<u64>) {
    use futures_util::StreamExt;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let mut delivered = 0;
    let finder = memmem::Finder::new(br#""sentAt":"#);
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = message else {
            if matches!(message, Some(Ok(_))) {
                continue;
            }
            break;
        };
        let now = now_micros();
        let bytes = text.as_bytes();
        for at in finder.find_iter(bytes) {
            let digits = &bytes[at + 9..];
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            if let Some(sent) = std::str::from_utf8(&digits[..end]).ok().and_then(|d| d.parse::<i64>().ok()) {
                delivered += 1;
                let _ = histogram.record((now - sent).max(1) as u64);
            }
        }
    }
    (delivered, histogram)
}
