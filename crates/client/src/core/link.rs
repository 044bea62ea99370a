//! The link's lifecycle: connecting (a token first, when a provider supplies them),
//! `connected`, liveness, token refresh, and the two ways a link ends.
//!
//! A link ends either because it was lost (closed, dead, replaced), and the core waits
//! out a backoff and tries the next URL, or because the client stopped (the app closed
//! it, the browser went offline, a terminal close code). Both go through
//! [`ClientCore::end_link`], which forgets the server's side of every subscription,
//! requeues unanswered publishes and clears the link's timers, so the two paths cannot
//! drift apart.

use std::time::Duration;

use tidewire_protocol::command::Refresh;
use tidewire_protocol::message::ControlFields;
use tidewire_protocol::{CloseCode, Command, Disposition, PROTOCOL_VERSION, Timestamp};

use super::publishes::DEFAULT_COMMANDS_PER_SECOND;
use super::{Action, ClientCore, ClientError, ServerLimits, StopReason, TokenError, TransportId};

/// Where the link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected and not trying (see `stopped`).
    Idle,
    /// Waiting for the reconnect timer.
    Waiting,
    /// Waiting for the token provider before opening.
    FetchingToken,
    /// Transport requested or open; waiting for `connected`.
    Opening(TransportId),
    Connected(TransportId),
}

impl Link {
    /// Whether `transport` is the one this link uses (events from others are stale).
    pub fn is(&self, transport: TransportId) -> bool {
        matches!(self, Link::Opening(t) | Link::Connected(t) if *t == transport)
    }
}

impl ClientCore {
    pub(super) fn on_connect(&mut self) {
        if self.stopped.is_none() {
            return;
        }
        self.stopped = None;
        self.attempt = 0;
        if self.offline {
            self.stopped = Some(StopReason::Offline);
            self.emit_state();
            return;
        }
        self.start_attempt();
    }

    pub(super) fn on_online(&mut self) {
        self.offline = false;
        if self.stopped == Some(StopReason::Offline) {
            self.attempt = 0;
            self.start_attempt();
        }
    }

    pub(super) fn on_offline(&mut self) {
        self.offline = true;
        if self.stopped.is_none() {
            self.stop(StopReason::Offline, Some(CloseCode::GOING_AWAY.0), "browser offline");
        }
    }

    /// Begins a connection attempt: a token first when a provider supplies them.
    pub(super) fn start_attempt(&mut self) {
        self.stopped = None;
        self.timers.reconnect = None;
        if self.config.token_provider {
            self.link = Link::FetchingToken;
            self.refreshing = false;
            self.push(Action::FetchToken);
        } else {
            self.open();
        }
        self.emit_state();
    }

    fn open(&mut self) {
        let transport = self.next_transport;
        self.next_transport += 1;
        let url = self.config.urls.get(self.url_index % self.config.urls.len().max(1)).cloned().unwrap_or_default();
        let kind = self.next_transport_kind();
        let url = super::transport_url(&url, kind);
        self.link = Link::Opening(transport);
        // A transport that never opens or never says `connected` did not get through.
        self.timers.dead = Some(self.now + self.open_timeout());
        self.push(Action::Open { transport, kind, url, token: self.token.clone() });
    }

    /// Something arrived (or a transport was opened): the link is dead if nothing more
    /// does within the heartbeat interval and the grace.
    pub(super) fn expect_frame_within_heartbeat(&mut self) {
        self.timers.dead = Some(self.now + self.heartbeat_interval + self.config.heartbeat_grace);
    }

    /// The dead timer fired: nothing came from the server in time.
    pub(super) fn on_dead(&mut self) {
        if let Link::Connected(transport) | Link::Opening(transport) = self.link {
            self.push(Action::Close {
                transport,
                code: CloseCode::HEARTBEAT_TIMEOUT.0,
                reason: CloseCode::HEARTBEAT_TIMEOUT.reason("no message from the server in time"),
            });
            if matches!(self.link, Link::Opening(_)) && self.transport_failed_to_open(None) {
                self.reconnect_now();
            } else {
                self.transport_lost();
            }
        }
    }

    /// The refresh timer fired: ask the provider for a fresh token.
    pub(super) fn on_refresh_due(&mut self) {
        if matches!(self.link, Link::Connected(_)) && self.config.token_provider {
            self.refreshing = true;
            self.push(Action::FetchToken);
        }
    }

    pub(super) fn on_token(&mut self, result: Result<String, TokenError>) {
        match result {
            Ok(token) => {
                self.token = Some(token.clone());
                match self.link {
                    Link::FetchingToken => self.open(),
                    Link::Connected(transport) if self.refreshing => {
                        self.refreshing = false;
                        let id = self.id();
                        self.send(transport, &Command::Refresh(Refresh { id: Some(id), token }));
                    }
                    _ => {}
                }
            }
            Err(TokenError::Unauthorized(message)) => {
                self.stop(StopReason::Unauthorized(message), Some(CloseCode::NORMAL.0), "unauthorized");
            }
            Err(TokenError::Failed(message)) => {
                self.push(Action::Error(ClientError::Token(message)));
                match self.link {
                    Link::FetchingToken => self.schedule_reconnect(),
                    Link::Connected(_) if self.refreshing => {
                        self.refreshing = false;
                        let (min, max) = self.config.token_retry;
                        self.timers.refresh = Some(self.now + self.jitter.between(min, max));
                    }
                    _ => {}
                }
            }
        }
    }

    /// `connected`: the link is up. Checks the version, adopts the server's heartbeat
    /// and limits, and restores every wanted subscription.
    pub(super) fn on_connected(&mut self, transport: TransportId, m: &ControlFields<'_>) {
        let version = m.version.unwrap_or(0);
        if version != PROTOCOL_VERSION {
            let code = CloseCode::UNSUPPORTED_PROTOCOL;
            self.push(Action::Close {
                transport,
                code: code.0,
                reason: code.reason(&format!("server speaks v{version}, this client v{PROTOCOL_VERSION}")),
            });
            self.stop(StopReason::UnsupportedProtocol { server: version }, None, "");
            return;
        }
        self.link = Link::Connected(transport);
        self.attempt = 0;
        self.transport_connected();
        self.heartbeat_interval = Duration::from_millis(m.heartbeat_interval_ms.unwrap_or(25_000));
        self.expect_frame_within_heartbeat();
        self.schedule_refresh(m.timestamp, m.expires_at);
        let limits = m.limits.unwrap_or_default();
        let rate = limits.commands_per_second.unwrap_or(DEFAULT_COMMANDS_PER_SECOND);
        let dropped = self.publishes.reconfigure(rate, limits.command_burst);
        self.report_dropped(dropped);
        self.limits = ServerLimits::announced(&limits);
        self.emit_state();
        self.resubscribe_all(transport);
    }

    /// Schedules a token refresh before expiry, measured on the server's clock (both
    /// timestamps come from it), so client clock skew does not matter.
    pub(super) fn schedule_refresh(&mut self, server_now: Option<Timestamp>, expires_at: Option<Timestamp>) {
        self.timers.refresh = None;
        if !self.config.token_provider {
            return;
        }
        let (Some(server_now), Some(expires_at)) = (server_now, expires_at) else { return };
        let left = u64::try_from(expires_at.unix_micros() - server_now.unix_micros()).unwrap_or(0);
        let left = Duration::from_micros(left);
        let margin = self.config.token_refresh_margin.min(left / 2);
        self.timers.refresh = Some(self.now + left.saturating_sub(margin));
    }

    pub(super) fn on_transport_closed(&mut self, transport: TransportId, code: u16, reason: String) {
        if !self.link.is(transport) {
            return;
        }
        if matches!(self.link, Link::Opening(_)) && self.transport_failed_to_open(Some(code)) {
            self.reconnect_now();
            return;
        }
        let code = CloseCode(code);
        let renew_token = code == CloseCode::TOKEN_EXPIRED && self.config.token_provider;
        if code.disposition() == Disposition::Terminal && !renew_token {
            self.stop(StopReason::Terminal { code: code.0, reason }, None, "");
            return;
        }
        if renew_token {
            self.token = None;
        }
        self.transport_lost();
    }

    /// Whatever ends a link, lost or stopped: the server's side of every subscription
    /// is forgotten (positions stay, for `since`), unanswered publishes go back to the
    /// queue, and the link's timers go.
    fn end_link(&mut self) {
        for subscription in self.subscriptions.values_mut() {
            subscription.transport_lost();
        }
        self.requeue_unacked();
        self.emit_subscription_states();
        self.timers.link_ended();
        self.refreshing = false;
    }

    /// The transport is gone (closed, dead, or replaced): retry after a backoff.
    pub(super) fn transport_lost(&mut self) {
        self.end_link();
        self.schedule_reconnect();
    }

    /// Ends the link and opens the next at once (another transport kind, not a retry:
    /// no backoff, and the same server).
    pub(super) fn reconnect_now(&mut self) {
        self.end_link();
        self.link = Link::Waiting;
        self.timers.reconnect = Some(self.now);
        self.emit_state();
    }

    fn schedule_reconnect(&mut self) {
        let delay = self.config.backoff.delay(self.attempt, &mut self.jitter);
        self.attempt = self.attempt.saturating_add(1);
        self.url_index = self.url_index.wrapping_add(1);
        self.link = Link::Waiting;
        self.timers.reconnect = Some(self.now + delay);
        self.emit_state();
    }

    /// Stops trying; `close` sends a close frame on a live transport.
    pub(super) fn stop(&mut self, reason: StopReason, close: Option<u16>, detail: &str) {
        if let (Some(code), Link::Opening(transport) | Link::Connected(transport)) = (close, &self.link) {
            let transport = *transport;
            self.push(Action::Close { transport, code, reason: detail.to_owned() });
        }
        self.end_link();
        self.link = Link::Idle;
        self.stopped = Some(reason);
        self.timers.clear();
        self.emit_state();
    }

    pub(super) fn emit_state(&mut self) {
        let action = Action::State { state: self.state(), attempt: self.attempt, stopped: self.stopped.clone() };
        self.push(action);
    }
}
