//! The HTTP transports, for where a WebSocket cannot go.
//!
//! - **The fallback session**: `GET /http/stream` answers an event stream that carries
//!   the WebSocket protocol's frames (its first event names the session), and
//!   `POST /http/send` delivers one command to that session. The connection loop is
//!   the WebSocket's (see `connection::http_link`), so batching, backpressure,
//!   gaps, recovery, limits, metrics and the drain are the same. The token travels in
//!   the `Authorization` header only, never in a URL a proxy would log; each POST
//!   carries it again, and a session takes commands only from its own user (or, for a
//!   session without a token, from whoever holds its unguessable id).
//! - **The one-way stream**: `GET /sse?channels=…` streams those channels' messages as
//!   events a bare `EventSource` or `curl -N` reads, resumed from `Last-Event-ID`.
//!
//! Both take connections without a token when `--anonymous-channels` allows them.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::ws::Message;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidewire_protocol::ErrorCode;
use tidewire_protocol::event_stream::StreamIds;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

use super::api::{BodyRefusal, error_response, read_body_within};
use crate::connection::http_link::{self, Format, OneWay, Registry, Undeliverable};
use crate::connection::{self, Greeting};
use crate::hub::Hub;

/// The most channels one one-way stream names: each publication's event id carries a
/// position for every one of them, so the id's size (and the work per event) is bounded.
pub const MAX_STREAM_CHANNELS: usize = 32;

/// The header naming the fallback session a POSTed command is for.
pub const SESSION_HEADER: &str = "tidewire-session";

#[derive(Debug, Default, Deserialize)]
pub struct StreamParams {
    /// Comma-separated channels to subscribe to at connect.
    channels: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    channels: Option<String>,
    /// For `EventSource`, which cannot send headers (prefer the header elsewhere:
    /// URLs end up in proxies' logs).
    token: Option<String>,
}

/// The Origin and drain checks every HTTP transport makes first.
#[allow(clippy::result_large_err)]
fn admit(hub: &Hub, peer: Option<std::net::IpAddr>, headers: &HeaderMap) -> Result<(), Response> {
    if !super::origin::allowed(hub, peer, headers) {
        tracing::warn!(origin = ?headers.get(header::ORIGIN), "refused an HTTP stream from a disallowed origin");
        return Err((StatusCode::FORBIDDEN, "origin not allowed").into_response());
    }
    // A page may not make its visitors' browsers hold streams for it by naming one as
    // an image or a frame (requests that carry no Origin to check): a browser says so.
    let mode = headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok());
    if matches!(mode, Some("no-cors" | "navigate")) {
        return Err((StatusCode::FORBIDDEN, "open streams with fetch or EventSource").into_response());
    }
    if hub.is_draining() {
        return Err(error_response(ErrorCode::Unavailable, "node is shutting down"));
    }
    Ok(())
}

/// Runs the connection loop on `link` in a task of its own, and answers with its event
/// stream: never cached, transformed or buffered by proxies that honour the headers,
/// and the last response of its connection (which gave its place in the HTTP limits to
/// the session: see [`crate::hub::HttpPlace`]).
fn serve_stream(
    hub: Hub,
    (link, feed): (http_link::HttpLink, http_link::Feed),
    auth: Result<crate::auth::Grant, crate::auth::AuthError>,
    greeting: Greeting,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> Response {
    let address = peer.map(|ip| super::client_address(&hub, ip, headers));
    tokio::spawn(connection::serve(link, hub, auth, greeting, address));
    let mut response = Body::from_stream(feed).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, no-transform"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The HTTP connection's place, for the session to give back once admitted.
fn http_place(place: Option<Extension<crate::hub::HttpPlace>>) -> Option<crate::hub::HttpSlot> {
    place.and_then(|Extension(place)| place.take())
}

/// `GET /http/stream`: opens a fallback session.
pub async fn stream(
    State(hub): State<Hub>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    place: Option<Extension<crate::hub::HttpPlace>>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Response {
    let peer_ip = peer.as_ref().map(|Extension(ConnectInfo(a))| a.ip());
    if let Err(refused) = admit(&hub, peer_ip, &headers) {
        return refused;
    }
    let auth = hub.authenticate_connection(super::bearer_token(&headers));
    let (registration, inbound) = match &auth {
        Ok(grant) => match Registry::open(hub.fallback_sessions(), &grant.user) {
            Ok((registration, inbound)) => (Some(registration), inbound),
            Err(e) => {
                tracing::error!("cannot make a session id: {e}");
                return error_response(ErrorCode::InternalError, "cannot make a session id");
            }
        },
        // Refused: the loop sends the close event, and no command can come.
        Err(_) => (None, mpsc::channel(1).1),
    };
    let link = http_link::link(Format::Frames, inbound, registration, http_place(place));
    let greeting = Greeting { channels: super::channel_list(params.channels.as_deref()), since: None };
    serve_stream(hub, link, auth, greeting, peer_ip, &headers)
}

/// `POST /http/send`: commands for the session the `Tidewire-Session` header names, one
/// per line (at most `http_link::INBOUND_COMMANDS`, 16), with the same token as the
/// stream's user (none for a session without a token). Answers 204 once the session has
/// them all; their replies come on the stream. A session reads one POST at a time, and
/// takes its commands all or none.
pub async fn send(
    State(hub): State<Hub>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer_ip = peer.as_ref().map(|Extension(ConnectInfo(a))| a.ip());
    if !super::origin::allowed(&hub, peer_ip, &headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::trim) else {
        return error_response(
            ErrorCode::BadRequest,
            "a Tidewire-Session header must name the session (the stream's first event)",
        );
    };
    let unknown = || error_response(ErrorCode::UnknownSession, "no such session; open a new stream");
    let Some(door) = hub.fallback_sessions().door(id) else { return unknown() };
    if !door.user.is_empty() {
        match super::api::bearer(&hub, &headers) {
            // Someone else's session is answered like a missing one: its existence is
            // not theirs to learn.
            Ok(grant) if grant.user == door.user => {}
            Ok(_) => return unknown(),
            Err(refused) => return refused,
        }
    }
    // Room first, then the body: a session never has more than one body being read.
    let Some(_claim) = door.claim() else { return busy(&hub, "the session is reading another POST") };
    let per_command = hub.config().max_message_bytes;
    let per_post = per_command * http_link::INBOUND_COMMANDS;
    let bytes = match read_body_within(&hub, &headers, body, per_post).await {
        Ok(bytes) => bytes,
        Err(BodyRefusal::TooBig { declared, .. }) => {
            return too_big(&hub, &door, declared.unwrap_or(per_post + 1), per_command);
        }
        Err(refusal) => return refusal.response(&hub),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        // As on a WebSocket: 1007.
        let _ = door.deliver(vec![Err(axum::Error::new(WsError::Utf8("not UTF-8".into())))]);
        return error_response(ErrorCode::BadRequest, "the commands are not valid UTF-8");
    };
    let lines: Vec<&str> = text.strip_suffix('\n').unwrap_or(text).split('\n').collect();
    if lines.len() > http_link::INBOUND_COMMANDS {
        return error_response(
            ErrorCode::BadRequest,
            format!("at most {} commands in one POST, one per line", http_link::INBOUND_COMMANDS),
        );
    }
    if let Some(line) = lines.iter().find(|line| line.len() > per_command) {
        return too_big(&hub, &door, line.len(), per_command);
    }
    let items = lines.into_iter().map(|line| Ok(Message::Text(line.trim_end_matches('\r').to_owned().into())));
    match door.deliver(items.collect()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(Undeliverable::Unknown) => unknown(),
        Err(Undeliverable::Full) => {
            busy(&hub, format!("the session has up to {} commands it has not read yet", http_link::INBOUND_COMMANDS))
        }
    }
}

/// 429 with `Retry-After: 1`: the session has no room now.
fn busy(hub: &Hub, why: impl Into<String>) -> Response {
    hub.metrics().rate_limited.inc();
    let mut response = error_response(ErrorCode::RateLimitExceeded, why);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A command larger than `--max-message-bytes`: as on a WebSocket, the session closes
/// (1009), and the POST is answered 413.
fn too_big(hub: &Hub, door: &http_link::Door, size: usize, max_size: usize) -> Response {
    let error = WsError::Capacity(CapacityError::MessageTooLong { size, max_size });
    let _ = door.deliver(vec![Err(axum::Error::new(error))]);
    BodyRefusal::TooBig { limit: max_size, declared: Some(size) }.response(hub)
}

/// `GET /sse?channels=a,b`: a one-way stream of those channels (see
/// [`tidewire_protocol::event_stream`]), resumed from `Last-Event-ID`.
pub async fn events(
    State(hub): State<Hub>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    place: Option<Extension<crate::hub::HttpPlace>>,
    headers: HeaderMap,
    Query(params): Query<EventsParams>,
) -> Response {
    let peer_ip = peer.as_ref().map(|Extension(ConnectInfo(a))| a.ip());
    if let Err(refused) = admit(&hub, peer_ip, &headers) {
        return refused;
    }
    let channels = super::channel_list(params.channels.as_deref());
    let max = hub.config().max_channels.min(MAX_STREAM_CHANNELS);
    if channels.is_empty() || channels.len() > max {
        return error_response(ErrorCode::BadRequest, format!("name 1 to {max} channels: ?channels=a,b"));
    }
    if channels.iter().enumerate().any(|(i, c)| channels[..i].contains(c)) {
        return error_response(ErrorCode::BadRequest, "a channel is named twice");
    }
    let token = super::bearer_token(&headers).or(params.token.as_deref().filter(|t| !t.is_empty()));
    let auth = hub.authenticate_connection(token);
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| StreamIds::decode(id.trim(), channels.len()));
    let one_way = OneWay::new(channels.clone());
    let since = resumed.map(|ids| one_way.since(&ids)).unwrap_or_default();
    let greeting = Greeting { channels, since: (!since.is_empty()).then(|| Box::new(since)) };
    // No sender: nothing comes in on a one-way stream.
    let link = http_link::link(Format::Messages(one_way), mpsc::channel(1).1, None, http_place(place));
    serve_stream(hub, link, auth, greeting, peer_ip, &headers)
}
