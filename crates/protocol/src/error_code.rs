//! The stable error codes a server puts in an `error` message.
//!
//! A code is part of the wire contract: clients switch on it, dashboards count it, and
//! operators grep for it. Codes are only ever added, never renamed. The human `message`
//! next to a code may change freely.

use serde::{Deserialize, Serialize};

/// Why a command (or the connection) was refused. Serialized as SCREAMING_SNAKE_CASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No token was presented.
    AuthRequired,
    /// The token could not be verified (signature, algorithm, claims, audience, issuer).
    AuthInvalid,
    /// The token's `exp` has passed.
    TokenExpired,
    /// The token is valid but does not grant this channel or action.
    Forbidden,
    /// The connection sent more commands than its rate limit allows.
    RateLimitExceeded,
    /// The command is not valid JSON or does not have the fields its action needs.
    BadRequest,
    /// The `action` field names no command this server knows.
    UnknownAction,
    /// A channel name breaks the channel rules.
    InvalidChannel,
    /// Subscribing would exceed the per-connection channel limit.
    TooManyChannels,
    /// An inbound message (or a publication) is larger than allowed.
    MessageTooBig,
    /// A dependency (the broker) is unreachable; try again later.
    Unavailable,
    /// The server failed in a way that is not the client's fault.
    InternalError,
    /// A request did not arrive in time (an HTTP body sent too slowly).
    RequestTimeout,
    /// A publication would give its channel more keys (or latest-value bytes) than
    /// allowed.
    TooManyKeys,
    /// The token was revoked by an operator (by its `jti`, or every token of the user
    /// issued before a time).
    TokenRevoked,
    /// A command was POSTed for an HTTP fallback session that does not exist (it
    /// ended, or belongs to someone else): open a new one.
    UnknownSession,
}

impl ErrorCode {
    /// Every code, in the order of the reference table.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::AuthRequired,
        ErrorCode::AuthInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::Forbidden,
        ErrorCode::RateLimitExceeded,
        ErrorCode::BadRequest,
        ErrorCode::UnknownAction,
        ErrorCode::InvalidChannel,
        ErrorCode::TooManyChannels,
        ErrorCode::MessageTooBig,
        ErrorCode::Unavailable,
        ErrorCode::InternalError,
        ErrorCode::RequestTimeout,
        ErrorCode::TooManyKeys,
        ErrorCode::TokenRevoked,
        ErrorCode::UnknownSession,
    ];

    /// The code as it appears on the wire, e.g. `"AUTH_REQUIRED"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthInvalid => "AUTH_INVALID",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnknownAction => "UNKNOWN_ACTION",
            ErrorCode::InvalidChannel => "INVALID_CHANNEL",
            ErrorCode::TooManyChannels => "TOO_MANY_CHANNELS",
            ErrorCode::MessageTooBig => "MESSAGE_TOO_BIG",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::TooManyKeys => "TOO_MANY_KEYS",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::UnknownSession => "UNKNOWN_SESSION",
        }
    }

    /// Looks a wire string up; `None` for a code this version does not know.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s)
    }

    /// The HTTP status the publish API answers with for this code.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::AuthRequired | ErrorCode::AuthInvalid | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::BadRequest | ErrorCode::UnknownAction | ErrorCode::InvalidChannel => 400,
            ErrorCode::TooManyChannels => 400,
            ErrorCode::MessageTooBig => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::InternalError => 500,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::TooManyKeys => 409,
            ErrorCode::UnknownSession => 404,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire("NOPE"), None);
    }
}
