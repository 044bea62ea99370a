//! `tidewire-bench`: drives real `tidewire` processes over loopback and prints figures.
//!
//! - `fanout`: S subscribers on one channel, R publications per second for D seconds
//!   (about 200-byte routing decisions, published through `POST /api/publish` in small
//!   batches). Reports delivered msgs/s, loss (and how much of it gap notices account
//!   for), latency percentiles from the server's acceptance of a publication to its
//!   arrival at a subscriber (HDR histogram, every 8th message sampled), server CPU
//!   seconds (per million deliveries) and peak RSS, and the load generator's own CPU.
//!   `--nodes 2 --redis-url …` spreads subscribers over two Redis-backed nodes and
//!   publishes through the first.
//! - `idle`: C subscribed connections that receive nothing: server RSS per connection
//!   and authenticated connects per second.
//! - `suite`: the default runs, as one table.
//! - `attack`: hostile clients at full speed against one node with its default limits
//!   while healthy subscribers read a live channel: each attack's outcome, the node's
//!   peak RSS, the healthy subscribers' loss and p99 against a quiet run, and the Redis
//!   key count.
//!
//! - `tables`: resampled keyed tables (`tables.rs`).
//! - `deltas`: the bytes field deltas save on the demo desk's channels, against the
//!   alternatives (`deltas.rs`; in process, on virtual time).
//!
//! Subscribers are plain WebSocket readers that read each frame's seqs, timestamps and
//! gap notices, so the figures describe the server, not a client's recovery logic;
//! `--via-client` subscribes through the native client crate instead (one suite run
//! does). Everything targets 127.0.0.1 and stops by itself.

mod attack;
mod deltas;
mod http_stream;
mod kafka;
mod load;
mod outbox;
mod process;
mod report;
mod scan;
mod stamped;
mod tables;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tidewire-bench", about = "Load generator and benchmarks for tidewire")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the results as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// One fan-out run.
    Fanout(FanoutArgs),
    /// Idle subscribed connections: memory per connection and connects per second.
    Idle(IdleArgs),
    /// The default runs.
    Suite(SuiteArgs),
    /// Mixed load for a long time (connection and subscription churn plus publishes):
    /// healthy subscribers must lose nothing and RSS must not trend upward. Fails
    /// (exit 1) when either does not hold.
    Soak(SoakArgs),
    /// Hostile clients at full speed while healthy subscribers read (see the module docs).
    Attack(AttackArgs),
    /// Resampled tables: subscribers asking `minInterval` per key on one keyed channel
    /// (see `tables.rs`). Fails (exit 1) when a table does not end at the latest state.
    Tables(TablesArgs),
    /// Field deltas on the demo's LP and exposure channels: bytes with and without, and
    /// the alternatives (see `deltas.rs`). Fails (exit 1) when a rebuilt value differs.
    Deltas(DeltasArgs),
    /// The PostgreSQL outbox source from insert to subscribers (see `outbox.rs`).
    Outbox(outbox::OutboxArgs),
    /// The Kafka source from producer to subscribers (see `kafka.rs`).
    Kafka(kafka::KafkaArgs),
    /// The attackers of `attack`, in their own process (started by it).
    #[command(hide = true)]
    AttackWorker {
        #[arg(long)]
        port: u16,
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Args, Clone, Debug)]
pub struct AttackArgs {
    /// Length of each phase (quiet, then attacked).
    #[arg(long, short = 'd', default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Healthy subscribers.
    #[arg(long, default_value_t = 50)]
    pub healthy: usize,
    /// Publications per second on the healthy channel.
    #[arg(long, short = 'r', default_value_t = 200)]
    pub rate: u32,
    /// Run the node on this Redis (and count its keys).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Fail (exit 1) unless the node stays under this peak RSS (MiB) and the healthy
    /// subscribers lose nothing.
    #[arg(long)]
    pub check_rss_mib: Option<f64>,
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Extra flags for the node.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

#[derive(Args, Clone, Debug)]
pub struct DeltasArgs {
    /// Virtual time the desk runs for.
    #[arg(long, short = 'd', default_value = "1h", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Routing decisions per second (the demo's default).
    #[arg(long, short = 'r', default_value_t = 300)]
    pub rate: u32,
}

#[derive(Args, Clone, Debug)]
pub struct TablesArgs {
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// Keys of the channel.
    #[arg(long, short = 'k', default_value_t = 500)]
    pub keys: u32,
    /// Updates per second, all keys together.
    #[arg(long, short = 'r', default_value_t = 20_000)]
    pub rate: u32,
    /// Each subscription's `minInterval` (250 ms: 4 updates per second per key).
    #[arg(long, default_value_t = 250)]
    pub min_interval_ms: u64,
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    #[arg(long, short = 'd', default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Steady subscribers that must lose nothing.
    #[arg(long, default_value_t = 50)]
    pub healthy: usize,
    /// Workers that connect, subscribe, unsubscribe and disconnect in a loop.
    #[arg(long, default_value_t = 20)]
    pub churn: usize,
    /// Publications per second on the steady channel.
    #[arg(long, short = 'r', default_value_t = 200)]
    pub rate: u32,
    /// Largest acceptable RSS trend over the second half, KiB per minute.
    #[arg(long, default_value_t = 1024.0)]
    pub max_trend_kib_per_min: f64,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// The tidewire binary (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Extra flags for every tidewire process, e.g. `--max-batch=200`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Share the channel through Redis (with --nodes 2: across two nodes).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Number of tidewire nodes (more than one needs --redis-url).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

#[derive(Args, Clone, Debug)]
pub struct FanoutArgs {
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// Publications per second.
    #[arg(long, short = 'r', default_value_t = 1000)]
    pub rate: u32,
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Fraction of subscribers that stop reading (slow consumers).
    #[arg(long, default_value_t = 0.0, conflicts_with = "via_client")]
    pub slow: f64,
    /// Subscribe through the native client crate (`tidewire_client::native`) instead
    /// of plain WebSocket readers: the figures then include the client's decoding,
    /// ordering and gap recovery, and loss is what recovery could not repair.
    #[arg(long)]
    pub via_client: bool,
    /// How the subscribers connect.
    #[arg(long, value_enum, default_value_t = Transport::Websocket, conflicts_with = "via_client")]
    pub transport: Transport,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// A subscriber's transport.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `GET /ws`.
    Websocket,
    /// The HTTP fallback's event stream (`GET /http/stream`).
    Http,
}

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    #[arg(long, short = 'c', default_value_t = 10_000)]
    pub connections: usize,
    /// How the connections are made.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args, Clone, Debug)]
pub struct SuiteArgs {
    /// Seconds per fan-out run.
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Also run the cross-node runs against this Redis.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Idle connections.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Each subscriber is an open file here as in the server: use what the hard limit allows.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("tidewire-bench: cannot raise the open-file limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tidewire-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Command::AttackWorker { port, duration } = &cli.command {
        return match runtime.block_on(attack::attack_worker(*port, *duration)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tidewire-bench attack-worker: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Command::Deltas(args) = &cli.command {
        return match deltas::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tidewire-bench deltas: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Command::Tables(args) = &cli.command {
        return match runtime.block_on(tables::run(args)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tidewire-bench: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Command::Attack(args) = &cli.command {
        return match runtime.block_on(attack::attack(args)) {
            Ok(report) => {
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                } else {
                    attack::print(&report);
                }
                let failed = args
                    .check_rss_mib
                    .is_some_and(|max| report.peak_rss_mib > max || report.attacked.loss_percent > 0.0);
                if failed {
                    eprintln!("tidewire-bench: the node failed the attack check");
                    std::process::ExitCode::FAILURE
                } else {
                    std::process::ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("tidewire-bench: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Attack(_) | Command::AttackWorker { .. } | Command::Tables(_) | Command::Deltas(_) => {
                Ok(Vec::new())
            }
            Command::Outbox(args) => outbox::run(&args).await.map(|r| vec![r]),
            Command::Kafka(args) => kafka::run(&args).await.map(|r| vec![r]),
            Command::Fanout(args) => load::fanout(&args).await.map(|r| vec![r]),
            Command::Idle(args) => load::idle(&args).await.map(|r| vec![r]),
            Command::Suite(args) => load::suite(&args).await,
            Command::Soak(args) => load::soak(&args).await.and_then(|r| {
                let healthy = r.loss_percent == 0.0 && r.rss_trend_kib_per_min <= args.max_trend_kib_per_min;
                if healthy {
                    Ok(vec![r])
                } else {
                    report::table(std::slice::from_ref(&r));
                    Err(format!(
                        "soak failed: loss {:.3}% (must be 0), RSS trend {:.0} KiB/min (at most {:.0})",
                        r.loss_percent, r.rss_trend_kib_per_min, args.max_trend_kib_per_min
                    ))
                }
            }),
        }
    });
    match result {
        Ok(results) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
            } else if !results.is_empty() {
                report::table(&results);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidewire-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
