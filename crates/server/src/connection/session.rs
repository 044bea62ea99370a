//! A connection's protocol state, apart from its socket: who it is, what it is
//! subscribed to, its rate limit, and the handling of each inbound text message.
//!
//! Handling a command only queues replies into the outbox or asks the IO loop to close;
//! it never touches the socket, so the IO loop stays the only place that awaits.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use tidewire_protocol::batch::Outbound;
use tidewire_protocol::channel::Access;
use tidewire_protocol::message::{ErrorMessage, Unsubscribed};
use tidewire_protocol::{CloseCode, Command, CommandId, Control, ErrorCode, decode_command};

use crate::auth::Grant;
use crate::hub::{Hub, Outbox, Reply, SessionSlot, control, now_timestamp};
use crate::metrics::ErrorLabel;

use super::commands;

/// What the IO loop must do after a message was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Continue,
    Close(CloseCode, String),
}

/// An error reply to a command, counted in the metrics.
pub fn error_reply(
    hub: &Hub,
    id: Option<CommandId>,
    code: ErrorCode,
    message: impl Into<String>,
    channel: Option<&str>,
) -> Control {
    hub.metrics().command_errors.get_or_create(&ErrorLabel { code: code.as_str() }).inc();
    Control::Error(ErrorMessage {
        timestamp: now_timestamp(),
        id,
        code,
        message: message.into(),
        channel: channel.map(str::to_owned),
        details: None,
    })
}

/// Error replies sent per second before further rate-limit refusals go unanswered.
const RATE_LIMIT_REPLIES_PER_WINDOW: u32 = 10;

pub struct Session {
    pub hub: Hub,
    pub slot: SessionSlot,
    pub grant: Grant,
    pub outbox: Arc<Outbox>,
    pub subscriptions: Subscriptions,
    limiter: DefaultDirectRateLimiter,
    flood: FloodWindow,
}

/// The channels a connection is subscribed to: a list, not a hash set, because a
/// connection has a few (at most `--max-channels`, 128 by default) and a set's table
/// costs most idle connections more memory than their one or two entries.
#[derive(Debug, Default)]
pub struct Subscriptions(Vec<Arc<str>>);

impl Subscriptions {
    pub fn contains(&self, channel: &str) -> bool {
        self.0.iter().any(|c| &**c == channel)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds a channel that is not in the list yet.
    pub fn insert(&mut self, channel: &str) {
        if !self.contains(channel) {
            self.0.push(channel.into());
        }
    }

    /// Removes a channel; false when it was not there.
    pub fn remove(&mut self, channel: &str) -> bool {
        let Some(index) = self.0.iter().position(|c| &**c == channel) else {
            return false;
        };
        self.0.swap_remove(index);
        true
    }
}

/// The clock every connection's rate limiter reads. Made once: creating one calibrates
/// it (CPUID instructions), which was a tenth of the server's work per new connection.
fn rate_limit_clock() -> DefaultClock {
    static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default).clone()
}

/// Rate-limit refusals within the current one-second window.
struct FloodWindow {
    started: Instant,
    refused: u32,
}

impl Session {
    pub fn new(hub: Hub, slot: SessionSlot, grant: Grant) -> Session {
        let config = hub.config();
        let outbox = Arc::new(Outbox::new(config.batch()));
        Session {
            limiter: RateLimiter::direct_with_clock(config.command_quota(), rate_limit_clock()),
            flood: FloodWindow { started: Instant::now(), refused: 0 },
            subscriptions: Subscriptions::default(),
            outbox,
            hub,
            slot,
            grant,
        }
    }

    pub fn id(&self) -> u64 {
        self.slot.id
    }

    /// Queues a control message.
    pub fn send(&self, message: Control) {
        self.outbox.push(Outbound::control(control(message)));
    }

    /// Queues an error reply and counts it.
    pub fn send_error(
        &self,
        id: Option<CommandId>,
        code: ErrorCode,
        message: impl Into<String>,
        channel: Option<&str>,
    ) {
        self.send(error_reply(&self.hub, id, code, message, channel));
    }

    /// Handles one inbound text message.
    pub fn on_text(&mut self, text: &str) -> Next {
        if self.limiter.check().is_err() {
            return self.on_rate_limited();
        }
        match decode_command(text) {
            Ok(command) => self.apply(command),
            Err(error) => {
                tracing::debug!(connection = self.id(), code = %error.code, "bad command: {}", error.message);
                self.send_error(error.id, error.code, error.message, None);
                Next::Continue
            }
        }
    }

    /// A binary frame: refused (the protocol is JSON text), and counted like a command.
    pub fn on_binary(&mut self) -> Next {
        if self.limiter.check().is_err() {
            return self.on_rate_limited();
        }
        self.send_error(None, ErrorCode::BadRequest, "binary frames are not supported: send JSON text frames", None);
        Next::Continue
    }

    /// A WebSocket ping or pong: no command, but it costs the server a wake-up (and a
    /// ping a pong), so it counts against the rate limit like one.
    pub fn on_frame(&mut self) -> Next {
        if self.limiter.check().is_err() {
            return self.on_rate_limited();
        }
        Next::Continue
    }

    /// Applies a subscribe built by the server (the `channels` query parameter).
    pub fn on_subscribe(&mut self, command: tidewire_protocol::command::Subscribe) -> Next {
        commands::subscribe::apply(self, command)
    }

    fn apply(&mut self, command: Command) -> Next {
        match command {
            Command::Subscribe(c) => commands::subscribe::apply(self, c),
            Command::Unsubscribe(c) => commands::unsubscribe::apply(self, c),
            Command::Publish(c) => commands::publish::apply(self, c),
            Command::Ping(c) => commands::ping::apply(self, c),
            Command::Refresh(c) => commands::refresh::apply(self, c),
        }
    }

    /// Refuses a command over the rate limit: an error reply for the first few in each
    /// second, and a 1008 close when a client keeps sending more than twice its limit.
    fn on_rate_limited(&mut self) -> Next {
        let now = Instant::now();
        if now.duration_since(self.flood.started) >= Duration::from_secs(1) {
            self.flood = FloodWindow { started: now, refused: 0 };
        }
        self.flood.refused += 1;
        self.hub.metrics().rate_limited.inc();
        let limit = self.hub.config().commands_per_second;
        if self.flood.refused > limit.max(RATE_LIMIT_REPLIES_PER_WINDOW) {
            tracing::warn!(connection = self.id(), user = %self.grant.user, "closing a flooding client");
            return Next::Close(CloseCode::POLICY_VIOLATION, CloseCode::POLICY_VIOLATION.reason("RATE_LIMIT_EXCEEDED"));
        }
        if self.flood.refused <= RATE_LIMIT_REPLIES_PER_WINDOW {
            if self.flood.refused == 1 {
                tracing::warn!(connection = self.id(), user = %self.grant.user, "rate limit exceeded");
            }
            self.send_error(
                None,
                ErrorCode::RateLimitExceeded,
                format!("more than {limit} commands per second; this command was ignored"),
                None,
            );
        }
        Next::Continue
    }

    /// Leaves `channel` and queues its `unsubscribed` (after anything the engine still
    /// owes the subscription), with the reason when the server ended it. Leaving a
    /// channel one is not in still answers, so a client's bookkeeping converges.
    pub fn unsubscribe(&mut self, channel: &str, id: Option<CommandId>, why: Option<(ErrorCode, String)>) {
        let (code, message) = why.map_or((None, None), |(code, message)| (Some(code), Some(message)));
        let reply = control(Control::Unsubscribed(Unsubscribed {
            timestamp: now_timestamp(),
            id,
            channel: channel.to_owned(),
            code,
            message,
        }));
        if self.subscriptions.remove(channel) {
            self.hub.unsubscribe(self.slot.id, channel, Some(Reply { outbox: self.outbox.clone(), message: reply }));
            tracing::debug!(connection = self.id(), user = %self.grant.user, %channel, ?code, "unsubscribed");
        } else {
            self.outbox.push(Outbound::control(reply));
        }
    }

    /// The subscribed channels the current grant no longer allows.
    pub fn channels_not_granted(&self) -> Vec<String> {
        self.subscriptions
            .0
            .iter()
            .filter(|c| self.grant.subscribe_access(c) != Access::Allowed)
            .map(|c| c.to_string())
            .collect()
    }

    /// Leaves every channel (on disconnect).
    pub fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.subscriptions.0) {
            self.hub.unsubscribe(self.slot.id, &channel, None);
        }
    }
}
