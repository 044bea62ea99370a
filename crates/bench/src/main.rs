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
//!
//! Subscribers are plain WebSocket readers that decode frames with the protocol crate
//! and count seqs and gap notices, so the figures describe the server, not a client's
//! recovery logic. Everything targets 127.0.0.1 and stops by itself.

mod load;
mod process;
mod report;

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
    #[arg(long, default_value_t = 0.0)]
    pub slow: f64,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    #[arg(long, short = 'c', default_value_t = 10_000)]
    pub connections: usize,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tidewire-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Fanout(args) => load::fanout(&args).await.map(|r| vec![r]),
            Command::Idle(args) => load::idle(&args).await.map(|r| vec![r]),
            Command::Suite(args) => load::suite(&args).await,
        }
    });
    match result {
        Ok(results) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
            } else {
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
