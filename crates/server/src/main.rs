//! The `tidewire` binary: `serve` (the default), `token` and `healthcheck`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tidewire_server::config::LogFormat;
use tidewire_server::{Config, Hub, server};

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
        /// Grant the operator endpoints (`GET /api/channels`); never for browsers.
        #[arg(long)]
        operator: bool,
        /// Lifetime, e.g. 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Run the gateway with a synthetic trading desk publishing and the dashboard at `/`.
    Demo {
        #[command(flatten)]
        config: Box<Config>,
        /// Routing decisions published per second.
        #[arg(long, env = "TIDEWIRE_DEMO_RATE", default_value_t = 300)]
        rate: u32,
    },
    /// Exit 0 when the gateway at --url answers /health (for container health checks).
    Healthcheck {
        #[arg(long, env = "TIDEWIRE_HEALTHCHECK_URL", default_value = "http://127.0.0.1:7999/health")]
        url: String,
    },
}

/// Where `tidewire demo` listens unless told otherwise: this machine only. The demo hands
/// a token to anyone who asks (`/demo/token`), which is only safe on loopback.
const DEMO_LISTEN: &str = "127.0.0.1:7999";

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let Some(command) = cli.command else { return serve(cli.config, None) };
    match command {
        Command::Serve { config } => serve(*config, None),
        Command::Demo { mut config, rate } => {
            let listen_given = matches
                .subcommand_matches("demo")
                .and_then(|demo| demo.value_source("listen"))
                .is_some_and(|source| source != clap::parser::ValueSource::DefaultValue);
            if !listen_given {
                config.listen = DEMO_LISTEN.parse().unwrap_or(config.listen);
            }
            serve(*config, Some(rate))
        }
        Command::Token { jwt_secret, sub, channels, publish, operator, ttl } => {
            let Some(secret) = jwt_secret else {
                eprintln!("tidewire token: --jwt-secret (TIDEWIRE_JWT_SECRET) is required");
                return ExitCode::FAILURE;
            };
            let claims =
                Claims { sub, exp: unix_now() + ttl.as_secs(), channels, publish, operator, ..Claims::default() };
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEWIRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// The secret `tidewire demo` uses when none is configured.
const DEMO_SECRET: &str = "tidewire-demo-secret-never-use-in-production";

/// Runs the gateway; with `demo_rate`, also the synthetic desk, the dashboard and the
/// demo token endpoint.
fn serve(mut config: Config, demo_rate: Option<u32>) -> ExitCode {
    init_logging(config.log_format);
    use_one_malloc_arena();
    raise_open_file_limit();
    if demo_rate.is_some() {
        if config.jwt_secret.is_none() {
            tracing::warn!("demo: no --jwt-secret given, using the built-in demo secret (never do this in production)");
            config.jwt_secret = Some(DEMO_SECRET.to_owned());
        }
        if config.web_dir.is_none() {
            config.web_dir = Some("web/dist".into());
        }
    }
    if config.allowed_origins.iter().any(|o| o == "*") {
        tracing::warn!("--allowed-origins '*': any web page may open connections with a user's token");
    }
    if let Some(dir) = config.web_dir.as_ref().filter(|d| !d.join("index.html").exists()) {
        tracing::warn!(dir = %dir.display(), "no index.html in the web directory (build it with `cargo xtask web`)");
    }
    let secret = config.jwt_secret.clone().unwrap_or_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let hub = match Hub::new(config) {
            Ok(hub) => hub,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(path) = hub.config().ingest.clone() {
            match tidewire_server::ingest::IngestConfig::load(&path) {
                Ok(ingest) => tidewire_server::ingest::start(&hub, ingest),
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let listener = match server::bind(&hub).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(listen = %hub.config().listen, "cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut app = tidewire_server::router(hub.clone());
        if let Some(rate) = demo_rate {
            tokio::spawn(tidewire_server::demo::run_publisher(hub.clone(), rate));
            let token_secret = secret.clone();
            app = app.route(
                "/demo/token",
                axum::routing::get(move || {
                    let secret = token_secret.clone();
                    async move {
                        let user = format!("viewer-{:04x}", fastrand::u16(..));
                        tidewire_server::demo::demo_token(&secret, &user).unwrap_or_default()
                    }
                }),
            );
            let browse = addr.replace("0.0.0.0", "127.0.0.1");
            let token = tidewire_server::demo::demo_token(&secret, "demo").unwrap_or_default();
            tracing::info!(rate, "demo publisher running");
            println!(
                concat!(
                    "\n",
                    "  tidewire demo: open http://{browse}/\n",
                    "  WebSocket:     ws://{browse}/ws\n",
                    "  dev token:     {token}\n",
                ),
                // A format string from concat! cannot capture variables implicitly.
                browse = browse,
                token = token,
            );
        }
        tracing::info!(%addr, "tidewire listening (ws://{addr}/ws)");
        match server::serve_app(listener, hub, app, server::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
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

/// Raises the soft limit on open files to the hard limit: every connection is a file,
/// and a soft limit of 1024 (a common default) would refuse connections long before
/// memory or CPU run short. Going past the hard limit is the operator's decision
/// (`ulimit -Hn`, `LimitNOFILE=`, the container runtime's `--ulimit nofile`).
fn raise_open_file_limit() {
    #[cfg(unix)]
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// With glibc's allocator, keeps all threads' allocations in one arena, unless the
/// operator chose otherwise (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`). Measured on two cores; on many cores, one arena may contend.
///
/// Fan-out allocates on one runtime thread what another frees (a publication queued by
/// the publisher's thread, framed and released by each connection's). glibc's default of
/// an arena per thread then keeps freed memory spread over several arenas: 10 000 idle
/// connections cost 4.1 KiB each with it and 3.8 KiB with one arena, for no measurable
/// difference in CPU at a million deliveries a second (docs/performance.md).
#[allow(unsafe_code)] // the one FFI call; see the SAFETY note
fn use_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|tunables| tunables.contains("arena_max"))
    {
        // SAFETY: mallopt only adjusts allocator parameters; it is called before the
        // runtime starts its threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
