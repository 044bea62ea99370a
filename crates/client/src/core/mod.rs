//! The client, as a pure state machine: fed events and time, returning actions.
//!
//! [`ClientCore`] owns everything a tidewire client decides: when to connect and
//! reconnect (full-jitter backoff, rotating through server URLs, terminal close codes),
//! when to fetch or refresh a token, what to subscribe to (with `since` after a
//! reconnect, at most one command in flight per channel), which publications to deliver
//! (in order, once, recovering by itself when a seq jumps or a gap notice arrives), when
//! the link is dead (no frame for the heartbeat interval plus a grace), and the bounded
//! queue of publishes.
//!
//! **Publishes are kept until the server answers**, and sent again with the same
//! idempotency key after a lost link, so each arrives exactly once (`publishes.rs`).
//!
//! The parts, a file each: `api.rs` (what drivers and apps exchange with the core),
//! `link.rs` (connecting, liveness, tokens, the one path that ends a link), `inbound.rs`
//! (frames, ordered delivery, control messages), `deltas.rs` (whole values rebuilt from
//! field deltas), `reconcile.rs` (subscriptions towards
//! what the app wants), `publishes.rs` (the queue and its answers), `subscription.rs`
//! (one channel's transitions), `transports.rs` (which transport, and when to fall
//! back or go back), `timers.rs` and `backoff.rs`.
//!
//! It has no clock, no sockets and no timers. A driver feeds it [`Event`]s with the
//! current time (`now`, a [`Duration`] since any fixed origin), performs the
//! [`Action`]s it returns from [`ClientCore::poll_action`], and calls
//! [`ClientCore::handle_timeout`] at [`ClientCore::poll_timeout`]. The browser and the
//! tokio drivers are thin; tests drive the core directly with virtual time.

mod api;
mod backoff;
mod deltas;
mod inbound;
mod link;
mod publishes;
mod reconcile;
mod subscription;
mod timers;
mod transports;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tidewire_protocol::command::Subscribe;
use tidewire_protocol::message::AnnouncedLimits;
use tidewire_protocol::{CloseCode, Command, CommandId, StreamPosition};

pub use api::{
    Action, ClientConfig, ClientError, ConnectionState, Delivery, Event, OutgoingPublish, StopReason,
    SubscriptionEvent, SubscriptionOptions, TokenError, TransportId, TransportKind,
};
pub use backoff::{Backoff, Jitter};
use link::Link;
use publishes::Publishes;
use subscription::Subscription;
pub use subscription::SubscriptionState;
use timers::{Timer, Timers};
use transports::TransportChoice;
pub use transports::transport_url;

/// The client state machine. See the module docs.
#[derive(Debug)]
pub struct ClientCore {
    config: ClientConfig,
    link: Link,
    stopped: Option<StopReason>,
    /// Failed attempts since the last `connected`.
    attempt: u32,
    url_index: usize,
    next_transport: TransportId,
    /// Which transport kind the next link uses.
    transports: TransportChoice,
    jitter: Jitter,
    token: Option<String>,
    subscriptions: HashMap<String, Subscription>,
    publishes: Publishes,
    limits: ServerLimits,
    paused: bool,
    offline: bool,
    next_id: u64,
    heartbeat_interval: Duration,
    timers: Timers,
    /// A refresh token was requested while connected (not for a connect).
    refreshing: bool,
    actions: VecDeque<Action>,
    now: Duration,
}

/// The server limits the core keeps to (the server's defaults until it announces its own).
#[derive(Debug, Clone, Copy)]
struct ServerLimits {
    max_message_bytes: usize,
    max_channels: usize,
    idempotency_window: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { max_message_bytes: 4096, max_channels: 128, idempotency_window: Duration::from_secs(120) }
    }
}

impl ServerLimits {
    /// What `connected` announced, with the defaults for what it did not.
    fn announced(limits: &AnnouncedLimits) -> ServerLimits {
        let defaults = ServerLimits::default();
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        ServerLimits {
            max_message_bytes: limits.max_message_bytes.map_or(defaults.max_message_bytes, count),
            max_channels: limits.max_channels.map_or(defaults.max_channels, |n| count(n).max(1)),
            idempotency_window: limits.idempotency_window_ms.map_or(defaults.idempotency_window, Duration::from_millis),
        }
    }
}

impl ClientCore {
    pub fn new(config: ClientConfig) -> ClientCore {
        ClientCore {
            jitter: Jitter::new(config.seed),
            token: config.token.clone(),
            publishes: Publishes::new(config.max_queued_publishes, config.seed),
            config,
            link: Link::Idle,
            stopped: Some(StopReason::Closed),
            attempt: 0,
            url_index: 0,
            next_transport: 1,
            transports: TransportChoice::default(),
            subscriptions: HashMap::new(),
            limits: ServerLimits::default(),
            paused: false,
            offline: false,
            next_id: 1,
            heartbeat_interval: Duration::from_secs(25),
            timers: Timers::default(),
            refreshing: false,
            actions: VecDeque::new(),
            now: Duration::ZERO,
        }
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        match self.link {
            Link::Connected(_) => ConnectionState::Connected,
            Link::Idle => ConnectionState::Disconnected,
            _ => ConnectionState::Connecting,
        }
    }

    /// Failed attempts since the last successful connect.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A channel's state.
    pub fn subscription_state(&self, channel: &str) -> SubscriptionState {
        self.subscriptions.get(channel).map_or(SubscriptionState::Unsubscribed, Subscription::state)
    }

    /// The last position delivered on a channel.
    pub fn position(&self, channel: &str) -> Option<&StreamPosition> {
        self.subscriptions.get(channel)?.position()
    }

    /// The interval the server granted a throttled subscription (`subscribed.minInterval`),
    /// in milliseconds between two updates of one key.
    pub fn granted_interval_ms(&self, channel: &str) -> Option<u64> {
        self.subscriptions.get(channel)?.granted_interval_ms()
    }

    /// Whether the server granted a subscription field deltas (`subscribed.deltas`).
    pub fn deltas_granted(&self, channel: &str) -> bool {
        self.subscriptions.get(channel).is_some_and(|s| s.deltas_granted())
    }

    /// The next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`ClientCore::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let publishes = match self.link {
            Link::Connected(_) => self.publishes.poll_timeout(),
            _ => None,
        };
        [self.timers.next(), publishes].into_iter().flatten().min()
    }

    /// Feeds one event.
    pub fn handle(&mut self, event: Event, now: Duration) {
        self.now = self.now.max(now);
        match event {
            Event::Connect => self.on_connect(),
            Event::Close => self.stop(StopReason::Closed, Some(CloseCode::NORMAL.0), "client closed"),
            Event::Online => self.on_online(),
            Event::Offline => self.on_offline(),
            Event::Pause => {
                self.paused = true;
                self.reconcile_all();
            }
            Event::Resume => {
                self.paused = false;
                self.reconcile_all();
            }
            Event::TransportOpened { .. } => {} // `connected` is what counts
            Event::TransportClosed { transport, code, reason } => self.on_transport_closed(transport, code, reason),
            Event::Frame { transport, text } => self.on_frame(transport, &text),
            Event::Token(result) => self.on_token(result),
            Event::Subscribe { channel } => self.on_subscribe(channel, SubscriptionOptions::default()),
            Event::SubscribeWith { channel, options } => self.on_subscribe(channel, options),
            Event::Unsubscribe { channel } => self.on_unsubscribe(&channel),
            Event::Publish(publication) => self.on_publish(publication),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        for timer in Timers::ORDER {
            if self.timers.fire(timer, now) {
                match timer {
                    Timer::Reconnect => self.start_attempt(),
                    Timer::Dead => self.on_dead(),
                    Timer::Refresh => self.on_refresh_due(),
                    Timer::Retry => self.retry_pending(),
                    Timer::Upgrade => self.on_upgrade_due(),
                }
            }
        }
        self.flush_publishes();
    }

    fn send(&mut self, transport: TransportId, command: &Command) {
        if let Ok(text) = serde_json::to_string(command) {
            self.note_subscribe(command);
            self.push(Action::Send { transport, text });
        }
    }

    /// Remembers which command each channel's subscribe went out as.
    fn note_subscribe(&mut self, command: &Command) {
        if let Command::Subscribe(Subscribe { id: Some(CommandId::Number(id)), channels, .. }) = command {
            for channel in channels {
                if let Some(subscription) = self.subscriptions.get_mut(channel) {
                    subscription.subscribe_sent_as(*id);
                }
            }
        }
    }

    fn id(&mut self) -> CommandId {
        let id = self.next_id;
        self.next_id += 1;
        CommandId::Number(id)
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }
}
