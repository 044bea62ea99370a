//! Which transport a link uses, and when to try another.
//!
//! Bank networks have inspecting proxies that break WebSocket upgrades. The core tries
//! the configured kinds in order ([`ClientConfig::transports`], WebSocket first): a
//! link that never says `connected` (closed abnormally while opening, or silent past
//! [`ClientConfig::open_timeout`]) moves on to the next kind at once, and only when
//! every kind failed does the usual backoff apply. Once a kind has worked, reconnects
//! keep to it (the network has not changed), while a link on a fallback kind is
//! closed after [`ClientConfig::upgrade_after`] to try the first kind again, with that
//! delay doubling each time the first kind still fails. Subscriptions, positions and
//! the publish queue belong to the core, not to a transport, so a switch loses nothing:
//! the next link resubscribes with `since`.

use std::time::Duration;

use tidewire_protocol::CloseCode;

use super::api::TransportKind;
use super::link::Link;
use super::{Action, ClientCore};

/// The longest wait before trying the first transport kind again.
const MAX_UPGRADE_DELAY: Duration = Duration::from_secs(30 * 60);

/// Where the core is in its order of transport kinds.
#[derive(Debug, Clone, Default)]
pub struct TransportChoice {
    /// Index of the kind the next link uses.
    current: usize,
    /// The kind of the link being opened or open.
    open: Option<TransportKind>,
    /// How long a link on a fallback kind lives before the first kind is tried again
    /// (doubling while the first kind keeps failing).
    upgrade_delay: Option<Duration>,
}

/// The URL of `kind`'s transport for a server configured by its WebSocket URL: the
/// HTTP fallback's stream is `/http/stream` beside `/ws`, over `http(s)`.
pub fn transport_url(url: &str, kind: TransportKind) -> String {
    match kind {
        TransportKind::WebSocket => url.to_owned(),
        TransportKind::Http => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
            let scheme = match scheme {
                "wss" | "https" => "https",
                _ => "http",
            };
            let (address, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
            let base = address.trim_end_matches('/');
            let base = base.strip_suffix("/ws").unwrap_or(base);
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{base}/http/stream{query}")
        }
    }
}

impl ClientCore {
    /// The kind the next link uses (recorded as the open one).
    pub(super) fn next_transport_kind(&mut self) -> TransportKind {
        let order = &self.config.transports;
        let kind = order.get(self.transports.current).copied().unwrap_or(TransportKind::WebSocket);
        self.transports.open = Some(kind);
        kind
    }

    /// How long an opening link may take to say `connected`.
    pub(super) fn open_timeout(&self) -> Duration {
        (self.heartbeat_interval + self.config.heartbeat_grace).min(self.config.open_timeout)
    }

    /// The link said `connected`: its kind works here. On a fallback kind, schedule the
    /// attempt to go back to the first.
    pub(super) fn transport_connected(&mut self) {
        if self.transports.current == 0 {
            self.transports.upgrade_delay = None;
            return;
        }
        let delay = *self.transports.upgrade_delay.get_or_insert(self.config.upgrade_after);
        self.timers.upgrade = Some(self.now + delay);
    }

    /// The link ended before `connected` in a way that says the transport did not get
    /// through (not a refusal by the server): true when another kind is next, which the
    /// caller then tries at once.
    pub(super) fn transport_failed_to_open(&mut self, code: Option<u16>) -> bool {
        let abnormal = code.is_none_or(|code| matches!(code, 1002 | 1006 | 1015));
        if !abnormal || self.config.transports.len() < 2 {
            return false;
        }
        let failed_first = self.transports.current == 0;
        self.transports.current = (self.transports.current + 1) % self.config.transports.len();
        if failed_first && self.transports.upgrade_delay.is_some() {
            // An attempt to go back failed: wait longer before the next.
            let delay = self.transports.upgrade_delay.unwrap_or(self.config.upgrade_after);
            self.transports.upgrade_delay = Some((delay * 2).min(MAX_UPGRADE_DELAY));
        }
        // A full round failed: the server may be down, so back off as usual.
        self.transports.current != 0
    }

    /// The upgrade timer fired: leave the fallback link and try the first kind.
    pub(super) fn on_upgrade_due(&mut self) {
        let Link::Connected(transport) = self.link else { return };
        if self.transports.current == 0 {
            return;
        }
        self.transports.current = 0;
        self.push(Action::Close { transport, code: CloseCode::NORMAL.0, reason: "trying WebSocket again".into() });
        self.reconnect_now();
    }

    /// The kind of the link being opened or open.
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self.link {
            Link::Opening(_) | Link::Connected(_) => self.transports.open,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_stream_is_beside_the_websocket() {
        let cases = [
            ("ws://127.0.0.1:7999/ws", "http://127.0.0.1:7999/http/stream"),
            ("wss://desk.example/ws", "https://desk.example/http/stream"),
            ("wss://desk.example/gateway/ws?x=1", "https://desk.example/gateway/http/stream?x=1"),
            ("ws://desk.example", "http://desk.example/http/stream"),
            ("ws://desk.example/", "http://desk.example/http/stream"),
        ];
        for (ws, http) in cases {
            assert_eq!(transport_url(ws, TransportKind::Http), http, "{ws}");
            assert_eq!(transport_url(ws, TransportKind::WebSocket), ws);
        }
    }
}
