//! The HTTP surface: the WebSocket endpoint, the publish API, and the operational
//! endpoints. [`router`] returns a plain axum `Router` to serve or merge into an app.

mod api;
pub mod fallback;
mod operator;
mod ops;
pub mod origin;
mod ws;

use std::net::IpAddr;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};

use crate::hub::Hub;

/// Every tidewire route, with the hub as state, plus the static files of `--web-dir`
/// at `/` when configured.
pub fn router(hub: Hub) -> Router {
    let web_dir = hub.config().web_dir.clone();
    // What a page's script reads with fetch: CORS for the origins the WebSocket allows.
    let transports = Router::new()
        .route("/http/stream", get(fallback::stream))
        .route("/http/send", post(fallback::send))
        .route("/sse", get(fallback::events))
        .layer(cors(&hub));
    let router = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/publish", post(api::publish))
        .route("/api/channels", get(api::channels))
        .route("/api/disconnect", post(operator::disconnect))
        .route("/api/unsubscribe", post(operator::unsubscribe))
        .route("/api/history", get(operator::history))
        .route("/api/info", get(operator::info))
        .route("/api/revoke", post(operator::revoke))
        .route("/api/presence", get(operator::presence))
        .route("/api/connections", get(operator::connections))
        .route("/api/trace", get(operator::trace))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .merge(transports)
        .with_state(hub);
    match web_dir {
        Some(dir) => router.fallback_service(static_files(dir)),
        None => router,
    }
}

/// Cross-origin reads of the HTTP transports, for the pages `--allowed-origins` allows
/// (the same rule as the WebSocket's Origin check), with the headers they send.
fn cors(hub: &Hub) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let hub = hub.clone();
    let allowed = AllowOrigin::predicate(move |_, parts: &axum::http::request::Parts| {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        origin::allowed(&hub, peer, &parts.headers)
    });
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(fallback::SESSION_HEADER),
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The files of `--web-dir` (the dashboard, the operator console), never framed by
/// another page (clickjacking) and never sniffed into another type.
fn static_files(
    dir: std::path::PathBuf,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response<tower_http::services::fs::ServeFileSystemResponseBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    use axum::http::{HeaderValue, header};
    use tower_http::set_header::SetResponseHeaderLayer;
    tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .service(tower_http::services::ServeDir::new(dir))
}

/// The channels of a comma-separated `channels` query parameter.
pub(crate) fn channel_list(list: Option<&str>) -> Vec<String> {
    list.map(|list| list.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The client's address: the TCP peer's, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not itself a trusted proxy (read from
/// the right, since each proxy appends what it saw; what a client wrote on the left is
/// not believed).
pub(crate) fn client_address(hub: &Hub, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let config = hub.config();
    if !config.is_trusted_proxy(peer) {
        return peer;
    }
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|hop| hop.trim().parse().ok()).collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !config.is_trusted_proxy(hop) {
            break;
        }
    }
    client
}
