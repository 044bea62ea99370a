//! `POST /api/publish`, for services holding a token with a `publish` grant, and
//! `GET /api/channels`, for operators (`Authorization: Bearer` either way). Errors are JSON `{code, message}` with the
//! HTTP status of the error code.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tidewire_protocol::channel::USER_SEPARATOR;
use tidewire_protocol::{ErrorCode, NewPublication};

use crate::auth::{AuthError, Grant};
use crate::hub::Hub;
use crate::metrics::ErrorLabel;

/// One publication or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum PublishBody {
    One(NewPublication),
    Many(Vec<NewPublication>),
}

pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({ "code": code, "message": message.into() }))).into_response()
}

// The refusal is the response itself, built once on a path that then returns.
#[allow(clippy::result_large_err)]
pub(super) fn bearer(hub: &Hub, headers: &HeaderMap) -> Result<Grant, Response> {
    let result = match super::bearer_token(headers) {
        Some(token) => hub.authenticate(token),
        None => Err(AuthError::Missing),
    };
    result.map_err(|error| {
        hub.metrics().auth_failures.get_or_create(&ErrorLabel { code: error.code().as_str() }).inc();
        error_response(error.code(), error.to_string())
    })
}

/// The bearer token, checked for the operator grant: `FORBIDDEN` saying that `what`
/// needs it (a publish grant is not one).
#[allow(clippy::result_large_err)]
pub(super) fn operator(hub: &Hub, headers: &HeaderMap, what: &str) -> Result<Grant, Response> {
    let grant = bearer(hub, headers)?;
    if !grant.operator {
        return Err(error_response(ErrorCode::Forbidden, format!("{what} needs an operator token (operator: true)")));
    }
    Ok(grant)
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyRefusal {
    /// Larger than the limit (declared, or found while reading).
    TooBig { limit: usize, declared: Option<usize> },
    /// The node's budget for bodies being read is spent.
    Busy,
    /// Not sent in full within `--http-body-timeout`.
    Slow,
    /// The client stopped sending before the body's end.
    Aborted,
}

impl BodyRefusal {
    pub(super) fn response(self, hub: &Hub) -> Response {
        match self {
            BodyRefusal::TooBig { limit, declared: Some(_) } => {
                error_response(ErrorCode::MessageTooBig, format!("the body may be at most {limit} bytes"))
            }
            BodyRefusal::TooBig { limit, declared: None } => {
                error_response(ErrorCode::MessageTooBig, format!("the body may be at most {limit} bytes, sent in full"))
            }
            BodyRefusal::Busy => {
                error_response(ErrorCode::Unavailable, "the node is reading too many request bodies; retry shortly")
            }
            BodyRefusal::Aborted => error_response(ErrorCode::BadRequest, "the body ended before its end"),
            BodyRefusal::Slow => error_response(
                ErrorCode::RequestTimeout,
                format!("the body did not arrive within {:?}", hub.config().http_body_timeout),
            ),
        }
    }
}

/// Reads a request body once its sender is known to be allowed: at most
/// `--max-http-body-bytes`, within `--http-body-timeout`, and only while the node's
/// budget for bodies being read (`--max-http-body-memory`) has room for it.
pub(super) async fn read_body(hub: &Hub, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    read_body_within(hub, headers, body, hub.config().max_http_body_bytes)
        .await
        .map_err(|refusal| refusal.response(hub))
}

/// [`read_body`] with another size limit.
pub(super) async fn read_body_within(
    hub: &Hub,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, BodyRefusal> {
    let config = hub.config();
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyRefusal::TooBig { limit, declared });
    }
    let Some(_reserved) = hub.reserve_body_memory(declared.unwrap_or(limit)) else {
        return Err(BodyRefusal::Busy);
    };
    match tokio::time::timeout(config.http_body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let too_big = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
                || error.into_inner().is::<http_body_util::LengthLimitError>();
            Err(if too_big { BodyRefusal::TooBig { limit, declared: None } } else { BodyRefusal::Aborted })
        }
        Err(_) => Err(BodyRefusal::Slow),
    }
}

/// Publishes one message (answers `{channel, seq}`) or an array (answers an array).
/// The token is checked from the headers before a byte of the body is read. A batch is
/// validated whole (size, permissions, channels, types, sizes) before anything is
/// published. What only publishing can tell (a channel's publish rate, the broker being
/// down) may still stop a batch part way: the error then lists, under `published`, the
/// items that went out, so a retry can skip them.
pub async fn publish(State(hub): State<Hub>, headers: HeaderMap, body: Body) -> Response {
    let grant = match bearer(&hub, &headers) {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    if !grant.can_publish() {
        return error_response(ErrorCode::Forbidden, "the token has no publish grant");
    }
    if hub.is_draining() {
        return error_response(ErrorCode::Unavailable, "node is shutting down");
    }
    let body = match read_body(&hub, &headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let body: PublishBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error_response(
                ErrorCode::BadRequest,
                format!("expected {{channel, type, data, key?}} or an array of them: {e}"),
            );
        }
    };
    let (items, single) = match body {
        PublishBody::One(one) => (vec![one], true),
        PublishBody::Many(many) => (many, false),
    };
    let max = hub.config().max_publish_batch;
    if items.len() > max {
        return error_response(
            ErrorCode::BadRequest,
            format!("a batch may hold at most {max} publications, not {}", items.len()),
        );
    }
    for item in &items {
        if let Err(e) = hub.check(item).and_then(|()| crate::hub::check_client_publication(item)) {
            return error_response(e.code, e.message);
        }
        if let Err(e) = grant.check_publish(&item.channel) {
            return error_response(e.code, e.message);
        }
    }
    let mut accepted = Vec::with_capacity(items.len());
    for item in items {
        match hub.publish(item).await {
            Ok(a) => accepted.push(a),
            Err(e) if accepted.is_empty() => return error_response(e.code, e.message),
            Err(e) => {
                let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (status, Json(json!({ "code": e.code, "message": e.message, "published": accepted })))
                    .into_response();
            }
        }
    }
    if single { Json(json!(accepted[0])).into_response() } else { Json(json!(accepted)).into_response() }
}

/// Channels with subscriber counts and heads, for operators (a token with
/// `operator: true`). User-scoped channels (`name#user`) are never listed: they would
/// tell one user's activity to someone else.
pub async fn channels(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if let Err(refused) = operator(&hub, &headers, "listing channels") {
        return refused;
    }
    let mut channels = hub.channels().await;
    channels.retain(|info| !info.channel.contains(USER_SEPARATOR));
    Json(channels).into_response()
}
