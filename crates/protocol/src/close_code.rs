//! WebSocket close codes and what a client should do when it sees one.
//!
//! The split follows what the field already knows: within 4000–4999 (and 3000–3999)
//! the low half means "reconnect with backoff", the high half means "do not reconnect
//! until something changes" (a new token, a fixed client). Standard codes are used where
//! they fit, so generic WebSocket tooling reads them right. Every code the server sends
//! is a constant here, and [`CloseCode::disposition`] classifies any code, known or not,
//! so a client built today behaves sensibly against a server that adds codes tomorrow.
//!
//! The close *reason* always starts with a stable name (for the tidewire codes, the
//! matching [`ErrorCode`](crate::ErrorCode) when there is one), e.g.
//! `TOKEN_EXPIRED: token expired`, so logs and clients can tell causes apart even where
//! a browser hides the code.

use serde::{Deserialize, Serialize};

/// A WebSocket close code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(transparent)]
pub struct CloseCode(pub u16);

/// What a client should do after the connection closed with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Reconnect, with backoff.
    Reconnect,
    /// Do not reconnect until something changes (a new token, an app decision).
    Terminal,
}

/// One row of the close-code table.
#[derive(Debug, Clone, Copy)]
pub struct CloseCodeInfo {
    pub code: CloseCode,
    /// The stable name that starts the close reason.
    pub name: &'static str,
    pub disposition: Disposition,
    /// When the server sends it.
    pub meaning: &'static str,
}

impl CloseCode {
    /// The client or server ended the session on purpose.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The peer is going away (a browser tab closing, a proxy shutting down).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// Never sent: the transport was lost without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// The client kept flooding after `RATE_LIMIT_EXCEEDED` errors, or broke the protocol.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// An inbound message exceeded the maximum message size.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// The server hit an unexpected internal error.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// The server is restarting or draining: reconnect (to it or another node).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// The server is at its connection limit: reconnect later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// The client did not read fast enough and its queue stayed full past the write timeout.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4000);
    /// The client did not answer a WebSocket ping in time.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4001);
    /// What the server queued for the client (replies, errors, snapshots) exceeded the
    /// connection's byte budget: it asked for more than it read.
    pub const QUEUE_OVERFLOW: CloseCode = CloseCode(4002);
    /// An operator ended the connection (`POST /api/disconnect`); reconnecting is fine.
    pub const DISCONNECTED: CloseCode = CloseCode(4003);
    /// No token was presented.
    pub const AUTH_REQUIRED: CloseCode = CloseCode(4500);
    /// The token failed verification.
    pub const AUTH_INVALID: CloseCode = CloseCode(4501);
    /// The token expired and no `refresh` came in time: reconnect with a new token.
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4502);
    /// The client closes with this when the server speaks a protocol version it does not.
    pub const UNSUPPORTED_PROTOCOL: CloseCode = CloseCode(4503);
    /// An operator ended the user's access (`POST /api/disconnect` with `reconnect:
    /// false`): do not reconnect until it is restored.
    pub const REVOKED: CloseCode = CloseCode(4504);

    /// Every code tidewire sends or expects, in the order of the reference table.
    pub const TABLE: [CloseCodeInfo; 17] = [
        info(Self::NORMAL, "NORMAL", Disposition::Terminal, "the session ended on purpose"),
        info(Self::GOING_AWAY, "GOING_AWAY", Disposition::Reconnect, "the peer is going away"),
        info(Self::ABNORMAL, "ABNORMAL", Disposition::Reconnect, "transport lost without a close frame (never sent)"),
        info(
            Self::POLICY_VIOLATION,
            "POLICY_VIOLATION",
            Disposition::Terminal,
            "kept flooding after rate-limit errors, or broke the protocol",
        ),
        info(
            Self::MESSAGE_TOO_BIG,
            "MESSAGE_TOO_BIG",
            Disposition::Terminal,
            "an inbound message exceeded the size limit",
        ),
        info(Self::INTERNAL_ERROR, "INTERNAL_ERROR", Disposition::Reconnect, "unexpected server error"),
        info(Self::SERVICE_RESTART, "SERVICE_RESTART", Disposition::Reconnect, "server restarting or draining"),
        info(Self::TRY_AGAIN_LATER, "TRY_AGAIN_LATER", Disposition::Reconnect, "connection limit reached"),
        info(
            Self::SLOW_CONSUMER,
            "SLOW_CONSUMER",
            Disposition::Reconnect,
            "client stopped reading; recover after reconnect",
        ),
        info(Self::HEARTBEAT_TIMEOUT, "HEARTBEAT_TIMEOUT", Disposition::Reconnect, "no pong in time"),
        info(
            Self::QUEUE_OVERFLOW,
            "QUEUE_OVERFLOW",
            Disposition::Reconnect,
            "the client's queue exceeded its byte budget (it asked for more than it read)",
        ),
        info(Self::DISCONNECTED, "DISCONNECTED", Disposition::Reconnect, "an operator ended the connection"),
        info(Self::AUTH_REQUIRED, "AUTH_REQUIRED", Disposition::Terminal, "no token presented"),
        info(Self::AUTH_INVALID, "AUTH_INVALID", Disposition::Terminal, "token failed verification"),
        info(Self::TOKEN_EXPIRED, "TOKEN_EXPIRED", Disposition::Terminal, "token expired: reconnect with a new token"),
        info(
            Self::UNSUPPORTED_PROTOCOL,
            "UNSUPPORTED_PROTOCOL",
            Disposition::Terminal,
            "the client refuses the server's protocol version",
        ),
        info(
            Self::REVOKED,
            "REVOKED",
            Disposition::Terminal,
            "an operator ended the user's access: do not reconnect until it is restored",
        ),
    ];

    /// The table row for a code tidewire knows.
    pub fn info(self) -> Option<&'static CloseCodeInfo> {
        Self::TABLE.iter().find(|row| row.code == self)
    }

    /// What a client should do after a close with this code, for any code.
    ///
    /// Known codes follow the table. Unknown codes follow the ranges: 3000–3499 and
    /// 4000–4499 reconnect, 3500–3999 and 4500–4999 are terminal; other standard codes
    /// that signal a broken client (1002, 1003, 1007, 1010) are terminal; the rest reconnect.
    pub fn disposition(self) -> Disposition {
        if let Some(row) = self.info() {
            return row.disposition;
        }
        match self.0 {
            1002 | 1003 | 1007 | 1010 => Disposition::Terminal,
            3000..=3499 | 4000..=4499 => Disposition::Reconnect,
            3500..=3999 | 4500..=4999 => Disposition::Terminal,
            _ => Disposition::Reconnect,
        }
    }

    /// A close reason that starts with this code's stable name, cut to the 123 bytes a
    /// close frame allows (on a character boundary).
    pub fn reason(self, detail: &str) -> String {
        let name = self.info().map_or("CLOSED", |row| row.name);
        let mut reason = if detail.is_empty() { name.to_owned() } else { format!("{name}: {detail}") };
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        reason
    }
}

/// RFC 6455 allows 125 bytes of close payload, two of which are the code.
pub const MAX_REASON_BYTES: usize = 123;

const fn info(code: CloseCode, name: &'static str, disposition: Disposition, meaning: &'static str) -> CloseCodeInfo {
    CloseCodeInfo { code, name, disposition, meaning }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.info() {
            Some(row) => write!(f, "{} ({})", self.0, row.name),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidewire_codes_follow_the_halves() {
        for row in CloseCode::TABLE.iter().filter(|row| row.code.0 >= 4000) {
            let expected = if row.code.0 < 4500 { Disposition::Reconnect } else { Disposition::Terminal };
            assert_eq!(row.disposition, expected, "{}", row.code);
        }
    }

    #[test]
    fn unknown_codes_follow_the_ranges() {
        assert_eq!(CloseCode(4123).disposition(), Disposition::Reconnect);
        assert_eq!(CloseCode(4999).disposition(), Disposition::Terminal);
        assert_eq!(CloseCode(3000).disposition(), Disposition::Reconnect);
        assert_eq!(CloseCode(3600).disposition(), Disposition::Terminal);
        assert_eq!(CloseCode(1003).disposition(), Disposition::Terminal);
        assert_eq!(CloseCode(1014).disposition(), Disposition::Reconnect);
    }

    #[test]
    fn table_has_no_duplicates() {
        for (i, a) in CloseCode::TABLE.iter().enumerate() {
            for b in &CloseCode::TABLE[i + 1..] {
                assert_ne!(a.code, b.code);
            }
        }
    }

    #[test]
    fn reason_starts_with_name_and_fits_a_frame() {
        assert_eq!(CloseCode::TOKEN_EXPIRED.reason("token expired"), "TOKEN_EXPIRED: token expired");
        assert_eq!(CloseCode::SLOW_CONSUMER.reason(""), "SLOW_CONSUMER");
        let long = "é".repeat(200);
        let reason = CloseCode::AUTH_INVALID.reason(&long);
        assert!(reason.len() <= MAX_REASON_BYTES);
        assert!(reason.starts_with("AUTH_INVALID: "));
    }
}
