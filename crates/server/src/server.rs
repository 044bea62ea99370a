//! Binding, serving and graceful shutdown.
//!
//! Shutdown is a first-class path: on the signal, readiness goes 503 and new WebSockets
//! are refused with 503 (HTTP stays up, so load balancers can see it); every connection
//! flushes its pending frames and closes with 1012 at a random moment within the drain
//! window (so clients don't reconnect in one wave); then the listener stops, and
//! [`serve`] returns once the last connection is gone or the write timeout has passed.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::hub::Hub;
use crate::router;

/// Binds the configured address.
pub async fn bind(hub: &Hub) -> std::io::Result<TcpListener> {
    TcpListener::bind(hub.config().listen).await
}

/// Serves until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, hub: Hub, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let app = router(hub.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let draining = hub.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(connections = draining.connection_count(), "shutting down: draining connections");
            draining.begin_shutdown();
            tokio::time::sleep(draining.config().drain_window).await;
        })
        .await?;
    let config = hub.config();
    let deadline = tokio::time::Instant::now() + config.write_timeout + Duration::from_secs(1);
    while hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(remaining = hub.connection_count(), "drained");
    Ok(())
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
