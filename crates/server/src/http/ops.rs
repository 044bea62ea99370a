//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::hub::Hub;

/// Liveness: the process answers; with the connection count.
pub async fn health(State(hub): State<Hub>) -> impl IntoResponse {
    Json(json!({ "status": "ok", "connections": hub.connection_count() }))
}

/// Readiness: 503 while draining, and while the broker (Redis) is unreachable.
pub async fn ready(State(hub): State<Hub>) -> impl IntoResponse {
    if hub.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })))
    } else if !hub.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": "the broker is unreachable" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    }
}

/// The content type of what [`Metrics::render`](crate::metrics::Metrics::render) writes.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics in the OpenMetrics text format (which Prometheus scrapes natively), served
/// as what it is: under the older text format's content type, parsers of that format
/// would read each counter as an untyped metric named `x_total`.
pub async fn metrics(State(hub): State<Hub>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], hub.metrics().render())
}
