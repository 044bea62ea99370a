//! The operator API: orders to live connections, for tokens with `operator: true`
//! (`Authorization: Bearer`). `POST /api/disconnect` ends a user's connections, or one
//! connection, with a code that says whether to reconnect; `POST /api/unsubscribe`
//! takes them off a channel (the client is told, and does not subscribe again by
//! itself). Both answer `{"connections": n}`, how many connections of this node took
//! the order; with the Redis engine every other node is told through Redis and gives it
//! to its own (`UNAVAILABLE` when Redis cannot be reached). Errors are JSON `{code,
//! message}` like the rest of the API.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tidewire_protocol::channel::validate;
use tidewire_protocol::{CloseCode, ErrorCode};

use super::api::{error_response, operator, read_body};
use crate::hub::operator::{ConnectionInfo, MAX_LISTED, Order, Target};
use crate::hub::revocation::{MAX_REVOKED_ID_BYTES, Revocation};
use crate::hub::{Hub, invalid_channel};

/// The longest reason an operator may give (it travels in a close frame, after the
/// code's name).
pub const MAX_REASON_BYTES: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    connection: Option<String>,
    /// `false`: close with `REVOKED` (terminal) instead of `DISCONNECTED`.
    #[serde(default = "yes")]
    reconnect: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    connection: Option<String>,
    channel: String,
    #[serde(default)]
    reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// The operator's token checked, then the body read and parsed.
async fn operator_body<T: serde::de::DeserializeOwned>(
    hub: &Hub,
    headers: &HeaderMap,
    body: Body,
    shape: &str,
) -> Result<T, Response> {
    operator(hub, headers, "giving orders")?;
    let body = read_body(hub, headers, body).await?;
    serde_json::from_slice(&body).map_err(|e| error_response(ErrorCode::BadRequest, format!("expected {shape}: {e}")))
}

/// The target, refusing one that names nobody (which would be every connection).
#[allow(clippy::result_large_err)]
fn target(user: Option<String>, connection: Option<String>) -> Result<Target, Response> {
    if user.as_deref().is_none_or(str::is_empty) && connection.as_deref().is_none_or(str::is_empty) {
        return Err(error_response(ErrorCode::BadRequest, "name a user, a connection, or both"));
    }
    Ok(Target { user, connection })
}

#[allow(clippy::result_large_err)]
fn reason(reason: Option<String>, default: &str) -> Result<String, Response> {
    let reason = reason.unwrap_or_else(|| default.to_owned());
    if reason.len() > MAX_REASON_BYTES {
        return Err(error_response(ErrorCode::BadRequest, format!("reason may be at most {MAX_REASON_BYTES} bytes")));
    }
    Ok(reason)
}

/// `POST /api/disconnect {user?, connection?, reconnect?, reason?}`.
pub async fn disconnect(State(hub): State<Hub>, headers: HeaderMap, body: Body) -> Response {
    let shape = "{user?, connection?, reconnect?, reason?}";
    let result = async {
        let body: DisconnectBody = operator_body(&hub, &headers, body, shape).await?;
        let target = target(body.user, body.connection)?;
        let code = if body.reconnect { CloseCode::DISCONNECTED } else { CloseCode::REVOKED };
        let reason = reason(body.reason, "disconnected by an operator")?;
        let order = Order::Disconnect { code, reason };
        hub.order(&target, &order).await.map_err(|e| error_response(e.code, e.message))
    };
    match result.await {
        Ok(connections) => Json(json!({ "connections": connections })).into_response(),
        Err(response) => response,
    }
}

/// `POST /api/unsubscribe {user?, connection?, channel, reason?}`.
pub async fn unsubscribe(State(hub): State<Hub>, headers: HeaderMap, body: Body) -> Response {
    let shape = "{user?, connection?, channel, reason?}";
    let result = async {
        let body: UnsubscribeBody = operator_body(&hub, &headers, body, shape).await?;
        let target = target(body.user, body.connection)?;
        validate(&body.channel)
            .map_err(|e| error_response(ErrorCode::InvalidChannel, invalid_channel(&body.channel, e)))?;
        let reason = reason(body.reason, "unsubscribed by an operator")?;
        let order = Order::Unsubscribe { channel: body.channel, reason };
        hub.order(&target, &order).await.map_err(|e| error_response(e.code, e.message))
    };
    match result.await {
        Ok(connections) => Json(json!({ "connections": connections })).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RevokeBody {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// With `user`: tokens issued before this (seconds since the epoch); default now.
    #[serde(default)]
    issued_before: Option<u64>,
    /// When the covered tokens have all expired (seconds since the epoch); default
    /// `--revocation-ttl` from now.
    #[serde(default)]
    expires_at: Option<u64>,
}

/// A `jti` or user name of 1..=[`MAX_REVOKED_ID_BYTES`] bytes, when given.
#[allow(clippy::result_large_err)]
fn named(value: Option<String>, what: &str) -> Result<Option<String>, Response> {
    match value {
        Some(value) if value.is_empty() || value.len() > MAX_REVOKED_ID_BYTES => {
            Err(error_response(ErrorCode::BadRequest, format!("{what} must be 1..={MAX_REVOKED_ID_BYTES} bytes")))
        }
        other => Ok(other),
    }
}

/// The furthest a revocation may be kept: a year.
pub const MAX_REVOCATION_SECONDS: u64 = 366 * 24 * 3600;

/// `POST /api/revoke {jti}` or `{user, issuedBefore?}`, with `expiresAt?`: takes tokens
/// back before they expire (see [`crate::hub::revocation`]). A revoked token is refused
/// at connect, at `refresh` and by the API (`TOKEN_REVOKED`, close 4504), and the live
/// connections it opened end with 4504 on every node. Answers `{revocation,
/// connections}`.
pub async fn revoke(State(hub): State<Hub>, headers: HeaderMap, body: Body) -> Response {
    let shape = "{jti} or {user, issuedBefore?}, with expiresAt?";
    let result = async {
        let body: RevokeBody = operator_body(&hub, &headers, body, shape).await?;
        let now = crate::auth::unix_now();
        let latest = now.saturating_add(MAX_REVOCATION_SECONDS);
        let given = body.expires_at;
        if given.is_some_and(|at| at <= now || at > latest) {
            return Err(error_response(
                ErrorCode::BadRequest,
                format!("expiresAt must be in the future and at most {MAX_REVOCATION_SECONDS} s from now"),
            ));
        }
        let expires_at = given.unwrap_or(0);
        let mut revocation = match (named(body.jti, "jti")?, named(body.user, "user")?) {
            (Some(jti), None) if body.issued_before.is_none() => Revocation::Token { jti, expires_at },
            (None, Some(user)) => {
                Revocation::User { user, issued_before: body.issued_before.unwrap_or(now), expires_at }
            }
            _ => return Err(error_response(ErrorCode::BadRequest, format!("expected {shape}"))),
        };
        if given.is_none() {
            // Not said: `--revocation-ttl`, or longer when a live token it covers here
            // lives longer, so none of those outlives its revocation.
            let ttl = now.saturating_add(hub.config().revocation_ttl.as_secs());
            let live = hub.latest_expiry_covered(&revocation).unwrap_or(0);
            revocation.set_expires_at(ttl.max(live).min(latest));
        }
        let connections = hub.revoke(&revocation).await.map_err(|e| error_response(e.code, e.message))?;
        tracing::info!(?revocation, connections, "tokens revoked");
        Ok(json!({ "revocation": revocation, "connections": connections }))
    };
    match result.await {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

/// The most publications one history page holds.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// `GET /api/history?channel=C&since=N&limit=L&order=newest|oldest`: a page of what the
/// channel keeps for recovery (`--history-size`, `--history-ttl`), with its epoch and
/// head: `{channel, epoch, head, publications, more}`. `since` (default 0) keeps only
/// publications after it, `limit` is 1..=1000 (default 100), `order` is `oldest`
/// (default) or `newest` first. A page also stops at `--max-queued-bytes` of messages;
/// `more` says whether more matched. Page on by passing the last seq of a page (oldest
/// first) as the next `since`.
pub async fn history(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = operator(&hub, &headers, "reading history") {
        return refused;
    }
    let (mut channel, mut since, mut limit, mut newest_first) = (None, None, 100, false);
    for (name, value) in query {
        let bad = |what: &str| error_response(ErrorCode::BadRequest, format!("{name}: {what}"));
        match &*name {
            "channel" => channel = Some(value),
            "since" => match value.parse::<u64>() {
                Ok(seq) => since = Some(seq),
                Err(_) => return bad("a seq (a non-negative integer)"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => limit = n,
                _ => return bad(&format!("1..={MAX_HISTORY_LIMIT}")),
            },
            "order" => match value.as_str() {
                "oldest" => newest_first = false,
                "newest" => newest_first = true,
                _ => return bad("oldest or newest"),
            },
            _ => return bad("unknown parameter (channel, since, limit, order)"),
        }
    }
    let Some(channel) = channel else { return error_response(ErrorCode::BadRequest, "channel is required") };
    if let Err(e) = validate(&channel) {
        return error_response(ErrorCode::InvalidChannel, invalid_channel(&channel, e));
    }
    let query = crate::hub::HistoryQuery { since, limit, newest_first, max_bytes: hub.config().max_queued_bytes };
    match hub.history(&channel, &query).await {
        Ok(page) => {
            let publications: Vec<Box<serde_json::value::RawValue>> = page
                .messages
                .into_iter()
                .filter_map(|text| serde_json::value::RawValue::from_string(text).ok())
                .collect();
            let (epoch, head, more) = (page.epoch, page.head, page.more);
            let body =
                json!({ "channel": channel, "epoch": epoch, "head": head, "publications": publications, "more": more });
            Json(body).into_response()
        }
        Err(e) => error_response(e.code, e.message),
    }
}

/// `GET /api/info`: this node and every node of its cluster (each announced in Redis
/// within the last 15 s; one node alone lists itself): `{node, nodes}`, each with its
/// id, version, engine, start time, uptime, and its connections, subscriptions and
/// channels.
pub async fn info(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if let Err(refused) = operator(&hub, &headers, "node info") {
        return refused;
    }
    match hub.nodes().await {
        Ok((node, nodes)) => Json(json!({ "node": node, "nodes": nodes })).into_response(),
        Err(e) => error_response(e.code, e.message),
    }
}

/// `GET /api/presence?channel=C&users=true|false`: who is subscribed to `channel` on
/// every node (see [`crate::hub::presence`]): `{channel, connections, users, presence,
/// nodes, complete, truncated}`, `presence` listing each user with their connections
/// (at most 10 000), left out with `users=false` (occupancy: the counts only).
pub async fn presence(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = operator(&hub, &headers, "presence") {
        return refused;
    }
    let (mut channel, mut list_users) = (None, true);
    for (name, value) in query {
        match (&*name, value.as_str()) {
            ("channel", _) => channel = Some(value),
            ("users", "true") => list_users = true,
            ("users", "false") => list_users = false,
            ("users", _) => return error_response(ErrorCode::BadRequest, "users: true or false"),
            _ => return error_response(ErrorCode::BadRequest, format!("{name}: unknown parameter (channel, users)")),
        }
    }
    let Some(channel) = channel else { return error_response(ErrorCode::BadRequest, "channel is required") };
    if let Err(e) = validate(&channel) {
        return error_response(ErrorCode::InvalidChannel, invalid_channel(&channel, e));
    }
    match hub.presence(&channel, list_users).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => error_response(e.code, e.message),
    }
}

/// `GET /api/connections?user=U`: the connections of every node: `{connections,
/// users: [{user, connections}], nodes, complete, truncated}` (users with the most
/// connections first, at most 1000), and with `user`, `detail`: that user's
/// connections, each with its node, when and from where it connected, its channels,
/// the frames, messages and bytes it was sent, its gaps and what is queued for it.
pub async fn connections(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = operator(&hub, &headers, "listing connections") {
        return refused;
    }
    let mut user = None;
    for (name, value) in query {
        match &*name {
            "user" if !value.is_empty() => user = Some(value),
            _ => return error_response(ErrorCode::BadRequest, format!("{name}: unknown or empty parameter (user)")),
        }
    }
    let (parts, asked) = match hub.connections(user.as_deref()).await {
        Ok(found) => found,
        Err(e) => return error_response(e.code, e.message),
    };
    let mut users: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (name, count) in parts.iter().flat_map(|p| p.users.iter()) {
        *users.entry(name).or_insert(0) += count;
    }
    let mut users: Vec<(&str, u64)> = users.into_iter().collect();
    users.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let truncated = users.len() > MAX_LISTED || parts.iter().any(|p| p.truncated);
    users.truncate(MAX_LISTED);
    let users: Vec<serde_json::Value> =
        users.into_iter().map(|(user, connections)| json!({ "user": user, "connections": connections })).collect();
    let mut body = json!({
        "connections": parts.iter().map(|p| p.connections).sum::<u64>(),
        "users": users,
        "nodes": parts.len(),
        "complete": parts.len() > asked,
        "truncated": truncated,
    });
    if user.is_some() {
        let mut detail: Vec<&ConnectionInfo> = parts.iter().flat_map(|p| p.detail.iter()).collect();
        detail.sort_unstable_by(|a, b| a.connection.cmp(&b.connection));
        detail.truncate(MAX_LISTED);
        body["detail"] = json!(detail);
    }
    Json(body).into_response()
}

/// The longest one trace stream lasts; the console opens another.
pub const MAX_TRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// `GET /api/trace?user=U`: Server-Sent Events, one per thing that happens to the
/// user's connections on every node (see [`crate::hub::trace`]): `connected`,
/// `subscribed`, `unsubscribed`, `frame`, `gap`, `closed`, and `lagged` when this
/// stream fell behind and missed some. Each event's data is the JSON trace. A stream
/// lasts at most ten minutes, and ends early when the operator's token expires or is
/// revoked (checked every ten seconds); at most 16 users are watched per node at once
/// (`RATE_LIMIT_EXCEEDED` past it).
pub async fn trace(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let token = super::bearer_token(&headers).map(str::to_owned);
    if let Err(refused) = operator(&hub, &headers, "tracing") {
        return refused;
    }
    let mut user = None;
    for (name, value) in query {
        match &*name {
            "user" if !value.is_empty() && value.len() <= MAX_REVOKED_ID_BYTES => user = Some(value),
            _ => {
                return error_response(
                    ErrorCode::BadRequest,
                    format!("{name}: unknown parameter, or not a user (user)"),
                );
            }
        }
    }
    let Some(user) = user else { return error_response(ErrorCode::BadRequest, "user is required") };
    let watch = match hub.watch(&user) {
        Ok(watch) => watch,
        Err(e) => return error_response(ErrorCode::RateLimitExceeded, e.to_string()),
    };
    if let Err(e) = hub.renew_watch(&user).await {
        tracing::warn!(%user, "the other nodes could not be told of a trace: {e}");
    }
    let end = tokio::time::Instant::now() + MAX_TRACE;
    let state = (watch, hub, user, tokio::time::Instant::now() + crate::hub::trace::LEASE_RENEWAL);
    let events = futures_util::stream::unfold(state, move |(mut watch, hub, user, mut renew)| {
        let token = token.clone();
        async move {
            loop {
                tokio::select! {
                    received = watch.events.recv() => {
                        let trace = match received {
                            Ok(trace) => (*trace).clone(),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => crate::hub::trace::Trace {
                                at: crate::hub::now_timestamp(),
                                node: hub.node_id().to_owned(),
                                user: user.clone(),
                                connection: String::new(),
                                event: crate::hub::trace::Event::Lagged { missed },
                            },
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        };
                        let name = serde_json::to_value(&trace.event)
                            .ok()
                            .and_then(|v| v["event"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "trace".to_owned());
                        let event = Event::default().event(name).json_data(&trace).unwrap_or_default();
                        return Some((Ok::<_, std::convert::Infallible>(event), (watch, hub, user, renew)));
                    }
                    () = tokio::time::sleep_until(renew) => {
                        // The operator's token still holds (not expired, not revoked), or
                        // the stream ends.
                        let still = token.as_deref().is_some_and(|t| hub.authenticate(t).is_ok_and(|g| g.operator));
                        if !still {
                            return None;
                        }
                        renew += crate::hub::trace::LEASE_RENEWAL;
                        let _ = hub.renew_watch(&user).await;
                    }
                    () = tokio::time::sleep_until(end) => return None,
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
