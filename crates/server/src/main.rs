//! The `tidewire` binary: `serve` (the default), `token` and `healthcheck`.
//!
//! The gateway alone: the desk demo is `tidewire-desk` (crates/desk), which embeds the
//! same node ([`tidewire_server::process::run`]) with its catalogue and routes.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tidewire_server::Config;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};

/// A real-time pub/sub gateway: typed, batched, authenticated updates to browsers over WebSocket.
#[derive(Parser)]
#[command(name = "tidewire", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default; the same flags work without the subcommand).
    Serve {
        #[command(flatten)]
        config: Box<Config>,
    },
    /// Mint an HS256 token with the configured secret (for development).
    Token {
        /// The HS256 secret the gateway verifies with.
        #[arg(long, env = "TIDEWIRE_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Channel patterns the token may subscribe to, comma-separated (default: every shared channel).
        #[arg(long, value_delimiter = ',')]
        channels: Option<Vec<String>>,
        /// Channel patterns the token may publish to, comma-separated (default: none).
        #[arg(long, value_delimiter = ',')]
        publish: Option<Vec<String>>,
        /// Grant the operator endpoints (`/api/…` beyond publishing) and the console; never for browsers.
        #[arg(long)]
        operator: bool,
        /// Lifetime, e.g. 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Exit 0 when the gateway at --url answers /health (for container health checks).
    Healthcheck {
        #[arg(long, env = "TIDEWIRE_HEALTHCHECK_URL", default_value = "http://127.0.0.1:7999/health")]
        url: String,
    },
}

/// Runs the gateway alone.
fn serve(config: Config) -> ExitCode {
    tidewire_server::process::run(config, |_, _, app| app)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else { return serve(cli.config) };
    match command {
        Command::Serve { config } => serve(*config),
        Command::Token { jwt_secret, sub, channels, publish, operator, ttl } => {
            let Some(secret) = jwt_secret else {
                eprintln!("tidewire token: --jwt-secret (TIDEWIRE_JWT_SECRET) is required");
                return ExitCode::FAILURE;
            };
            // `iat` and a random `jti`, so the token can be revoked by either.
            let (now, jti) = (unix_now(), format!("{:016x}", fastrand::u64(..)));
            let claims = Claims {
                sub,
                exp: now + ttl.as_secs(),
                channels,
                publish,
                operator,
                iat: Some(now),
                jti: Some(jti),
                ..Claims::default()
            };
            match mint_hs256(&secret, &claims) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tidewire token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { url } => healthcheck(&url),
    }
}

/// A minimal HTTP/1.1 GET, so a container without curl can check itself.
fn healthcheck(url: &str) -> ExitCode {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("healthcheck: only http:// URLs are supported");
        return ExitCode::FAILURE;
    };
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let result = (|| -> std::io::Result<String> {
        let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(authority)?.collect();
        let addr = addrs.first().ok_or_else(|| std::io::Error::other("no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })();
    match result {
        Ok(response) if response.starts_with("HTTP/1.1 200") => {
            println!("{}", response.split("\r\n\r\n").nth(1).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("healthcheck: {}", response.lines().next().unwrap_or("empty response"));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
