//! The HTTP surface: the WebSocket endpoint, the publish API, and the operational
//! endpoints. [`router`] returns a plain axum `Router` to serve or merge into an app.

mod api;
mod ops;
mod ws;

use axum::routing::{get, post};
use axum::Router;

use crate::hub::Hub;

/// Every tidewire route, with the hub as state, plus the static files of `--web-dir`
/// at `/` when configured.
pub fn router(hub: Hub) -> Router {
    let web_dir = hub.config().web_dir.clone();
    let router = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/publish", post(api::publish))
        .route("/api/channels", get(api::channels))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .with_state(hub);
    match web_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir)),
        None => router,
    }
}
