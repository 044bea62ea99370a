//! Binding, serving and graceful shutdown.
//!
//! The accept loop is ours (on hyper directly) so the HTTP layer can enforce a handshake
//! timeout: a client that dribbles its request headers is dropped after
//! `--handshake-timeout` instead of holding a socket forever.
//!
//! Shutdown is a first-class path: on the signal, readiness goes 503 and new WebSockets
//! are refused with 503 (HTTP stays up, so load balancers can see it); every connection
//! flushes its pending frames and closes with 1012 at a random moment within the drain
//! window (so clients don't reconnect in one wave); then the listener stops, idle HTTP
//! connections are closed, and [`serve`] returns once the last WebSocket is gone or the
//! write timeout has passed.

use std::future::Future;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::hub::Hub;
use crate::router;

/// Pending connections the kernel may queue for us (capped by `net.core.somaxconn`).
/// The usual default of 128 overflows when a few hundred clients reconnect at once,
/// and every overflowed SYN costs its client a one-second retransmit.
const LISTEN_BACKLOG: u32 = 4096;

/// The largest request head (request line and headers, a token included) the server
/// buffers; larger requests are refused with 431.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Binds the configured address.
pub async fn bind(hub: &Hub) -> std::io::Result<TcpListener> {
    let addr = hub.config().listen;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves tidewire's routes until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(hub.clone());
    serve_app(listener, hub, app, shutdown).await
}

/// Serves an app that contains tidewire's routes (merged with the embedder's own) until
/// `shutdown` resolves, then drains the hub's connections.
pub async fn serve_app(
    listener: TcpListener,
    hub: Hub,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    hub.resume_serving();
    hub.start_sweeping();
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(hub.config().handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let graceful = GracefulShutdown::new();

    let draining = hub.clone();
    let stop_accepting = async move {
        shutdown.await;
        tracing::info!(connections = draining.connection_count(), "shutting down: draining connections");
        draining.begin_shutdown();
        tokio::time::sleep(draining.config().drain_window).await;
    };
    tokio::pin!(stop_accepting);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop_accepting => break,
        };
        // Counted from accept until the connection closes or becomes a WebSocket, before
        // a byte of it is read: what unauthenticated peers can hold open is bounded.
        let slot = match hub.admit_http(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let reason = match refusal {
                    crate::hub::Refusal::Node => "http_node",
                    _ => "http_address",
                };
                hub.metrics().refused_connections.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
                tracing::debug!(%peer, limit = reason, "refused an HTTP connection");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        dead_peers_end(&stream, hub.config());
        if hub.config().send_buffer > 0 {
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(hub.config().send_buffer) {
                tracing::debug!(%peer, "cannot set the send buffer size: {e}");
            }
        }
        let app = app.clone();
        let loopback_only = hub.config().listen.ip().is_loopback();
        let place = crate::hub::HttpPlace::new(slot);
        let requests_place = place.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(requests_place.clone());
            let app = app.clone();
            async move {
                if loopback_only && !names_loopback(&request) {
                    // DNS rebinding: see `http::origin`.
                    return Ok(foreign_host());
                }
                app.oneshot(request).await
            }
        });
        let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Resolves when the connection closes, or hands its socket to a WebSocket.
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
            drop(place);
        });
    }
    drop(listener);

    let config = hub.config();
    let deadline = tokio::time::Instant::now() + config.write_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
    while hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(remaining = hub.connection_count(), "drained");
    Ok(())
}

/// A peer that vanished without closing (a pulled cable, a crashed proxy) or that
/// stopped acknowledging what it is sent (a zero receive window) ends at the TCP level
/// too: keepalive probes after 30 s of silence, and on Linux no sent byte stays
/// unacknowledged longer than the heartbeat and pong timeout together (with a margin).
/// The connection loop's own pings catch the same on WebSockets and fallback sessions;
/// a one-way stream, which cannot answer pings, relies on this.
fn dead_peers_end(stream: &tokio::net::TcpStream, config: &crate::Config) {
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket.set_tcp_keepalive(&probes);
    #[cfg(target_os = "linux")]
    {
        let patience = config.heartbeat_interval + config.pong_timeout + Duration::from_secs(10);
        let _ = socket.set_tcp_user_timeout(Some(patience.max(config.write_timeout)));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = config;
}

/// Whether a request's `Host` (when it has one) names loopback.
fn names_loopback<B>(request: &hyper::Request<B>) -> bool {
    match request.headers().get(hyper::header::HOST) {
        None => true,
        Some(host) => host.to_str().is_ok_and(crate::http::origin::is_loopback_host),
    }
}

fn foreign_host() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        hyper::StatusCode::FORBIDDEN,
        "this node listens on loopback only and answers only requests to a loopback host name",
    )
        .into_response()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
