//! `tidewire-bench outbox`: the PostgreSQL outbox source from insert to subscribers.
//!
//! A node runs with a routing file that names a fresh outbox table; S subscribers read
//! its channel; the bench inserts R rows per second (a statement every 10 ms), each
//! carrying the microsecond it was inserted (`sentAt`), for D seconds. Figures: rows
//! delivered per second to all subscribers, loss, and the end-to-end latency from the
//! insert to the subscriber (the database, the notification, the batch, the publish and
//! the fan-out together).

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::load::{RunResult, now_micros, progress, token};
use crate::process::{Node, server_bin};
use crate::stamped::Readers;

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
    let readers = Readers::connect(node.port, &token("bench-outbox", false), CHANNEL, args.subscribers).await?;
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
    let received = readers.finish().await?;
    progress("");
    let notes = format!("batch {}, insert → subscriber latency {}", args.batch, args.server_args.join(" "));
    Ok(received.result("outbox", args.rate, inserted as u64, elapsed, cpu, notes))
}
