//! Running a node as a process: what the `tidewire` binary does, for any binary that
//! embeds the gateway and adds routes of its own (the desk demo is one).
//!
//! [`run`] sets up logging, raises the open-file limit, tunes the allocator, starts the
//! runtime, the hub and the configured ingest sources, binds, lets the caller extend the
//! router (more routes, tasks publishing into the hub), then serves until SIGTERM or
//! Ctrl-C and drains. Everything that fails on the way is logged and becomes a failing
//! exit code, never a panic.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;

use crate::config::LogFormat;
use crate::{Config, Hub, server};

/// Runs a node until it is told to stop. `extend` gets the hub, the bound address and
/// the gateway's router, and returns the router to serve (`|_, _, app| app` for the
/// plain gateway); it runs inside the runtime, so it may spawn tasks.
pub fn run(config: Config, extend: impl FnOnce(&Hub, SocketAddr, Router) -> Router) -> ExitCode {
    init_logging(config.log_format);
    use_one_malloc_arena();
    raise_open_file_limit();
    if config.allowed_origins.iter().any(|o| o == "*") {
        tracing::warn!("--allowed-origins '*': any web page may open connections with a user's token");
    }
    if let Some(dir) = config.web_dir.as_ref().filter(|d| !d.join("index.html").exists()) {
        tracing::warn!(dir = %dir.display(), "no index.html in the web directory (build it with `cargo xtask web`)");
    }
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
        let mut sources = Vec::new();
        if let Some(path) = hub.config().ingest.clone() {
            match crate::ingest::IngestConfig::load(&path) {
                Ok(ingest) => sources = crate::ingest::start(&hub, ingest),
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
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                tracing::error!("cannot read the bound address: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = extend(&hub, addr, crate::router(hub.clone()));
        tracing::info!(%addr, "tidewire listening (ws://{addr}/ws)");
        let served = server::serve_app(listener, hub, app, server::signal()).await;
        // The sources stop with the drain; let them finish (a last commit) for a while.
        let finished = futures_util::future::join_all(sources);
        if tokio::time::timeout(std::time::Duration::from_secs(10), finished).await.is_err() {
            tracing::warn!("ingest sources did not stop within 10 s");
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
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
