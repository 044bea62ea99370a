//! `GET /ws`: the WebSocket handshake.
//!
//! Checked before the upgrade, with plain HTTP answers: the Origin (403) and whether the
//! node is draining (503). Everything about the token is answered after the upgrade with
//! a close code (4500 missing, 4501 invalid, 4502 expired) whose reason starts with the
//! error code, because browsers hide HTTP statuses of failed handshakes and a client
//! must be able to tell "sign in again" from "the network is down".
//!
//! The token may come as `?token=`, as `Authorization: Bearer`, or (for browsers, which
//! cannot set headers) as a `tidewire.token.<jwt>` subprotocol offered next to
//! `tidewire.v1`, which the server then selects. Tokens are never logged.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidewire_protocol::ErrorCode;

use super::api::error_response;
use crate::auth::{PROTOCOL_NAME, TOKEN_PROTOCOL_PREFIX};
use crate::connection;
use crate::hub::Hub;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    token: Option<String>,
    /// Comma-separated channels to subscribe to at connect.
    channels: Option<String>,
}

pub async fn upgrade(
    State(hub): State<Hub>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let peer_ip = peer.as_ref().map(|Extension(ConnectInfo(a))| a.ip());
    if !super::origin::allowed(&hub, peer_ip, &headers) {
        tracing::warn!(origin = ?headers.get(header::ORIGIN), "refused a WebSocket from a disallowed origin");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if hub.is_draining() {
        return error_response(ErrorCode::Unavailable, "node is shutting down");
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return error_response(
                ErrorCode::BadRequest,
                format!("not a WebSocket handshake: {}", rejection.body_text()),
            );
        }
    };
    let token = token(&params, &headers, &ws);
    let auth = hub.authenticate_connection(token.as_deref());
    let greeting = connection::Greeting { channels: super::channel_list(params.channels.as_deref()), since: None };
    let address = peer_ip.map(|ip| super::client_address(&hub, ip, &headers));
    let config = hub.config();
    ws.protocols([PROTOCOL_NAME])
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes)
        .read_buffer_size(256)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection::serve(socket, hub, auth, greeting, address))
}

fn token(params: &Params, headers: &HeaderMap, ws: &WebSocketUpgrade) -> Option<String> {
    if let Some(token) = params.token.as_deref().filter(|t| !t.is_empty()) {
        return Some(token.to_owned());
    }
    if let Some(token) = super::bearer_token(headers) {
        return Some(token.to_owned());
    }
    ws.requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
        .map(str::to_owned)
}
