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
//! **Publishes are kept until the server answers.** Each goes out with a command id and
//! an idempotency key of this client's (`<instance>-<n>`), and stays in `unacked` until
//! its `published` (or a refusal) arrives. When the link is lost, the unanswered ones go
//! back to the front of the queue and are sent again, with the same keys, after the next
//! `connected`: the server publishes a key it has seen once, so a publish caught in a
//! cut link or a node's shutdown arrives exactly once. One still unanswered after the
//! server's idempotency window is not resent (it might then be published twice) but
//! reported as unconfirmed. A publish too large for the server's message limit is
//! refused here, with an error, rather than sent to be closed for.
//!
//! It has no clock, no sockets and no timers. A driver feeds it [`Event`]s with the
//! current time (`now`, a [`Duration`] since any fixed origin), performs the
//! [`Action`]s it returns from [`ClientCore::poll_action`], and calls
//! [`ClientCore::handle_timeout`] at [`ClientCore::poll_timeout`]. The browser and the
//! tokio drivers are thin; tests drive the core directly with virtual time.

mod backoff;
mod subscription;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tidewire_protocol::batch::{BatchConfig, Batcher, Dropped, Outbound, Position};
use tidewire_protocol::command::{Publish, Refresh, Subscribe, Unsubscribe};
use tidewire_protocol::message::{ControlFields, GapReason, CONTROL_TYPES};
use tidewire_protocol::{
    CloseCode, Command, CommandId, Disposition, EncodedMessage, ErrorCode, NewPublication, StreamPosition,
    PROTOCOL_VERSION,
};

pub use backoff::{Backoff, Jitter};
pub use subscription::SubscriptionState;
use subscription::{Arrival, ServerSide, Subscription};

/// Identifies one transport (one WebSocket); events from a replaced transport are ignored.
pub type TransportId = u64;

/// How the client behaves. `ClientConfig::new(url)` gives the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Servers to rotate through on reconnect.
    pub urls: Vec<String>,
    /// Reconnect backoff (500 ms doubling to 20 s, full jitter).
    pub backoff: Backoff,
    /// Silence tolerated past the server's heartbeat interval before the link counts as
    /// dead (10 s).
    pub heartbeat_grace: Duration,
    /// Refresh the token this long before it expires (30 s, or half its remaining
    /// life when that is shorter).
    pub token_refresh_margin: Duration,
    /// Retry window after a token provider failure while connected (5–10 s).
    pub token_retry: (Duration, Duration),
    /// Publishes held while offline, at most (1000); the oldest are dropped beyond.
    pub max_queued_publishes: usize,
    /// Whether a token provider supplies tokens (`FetchToken` actions). Without one,
    /// `token` is used as is.
    pub token_provider: bool,
    /// A fixed token (ignored when `token_provider` is set).
    pub token: Option<String>,
    /// Seed for the jitter; drivers pass something random.
    pub seed: u64,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            urls: vec![url.into()],
            backoff: Backoff::default(),
            heartbeat_grace: Duration::from_secs(10),
            token_refresh_margin: Duration::from_secs(30),
            token_retry: (Duration::from_secs(5), Duration::from_secs(10)),
            max_queued_publishes: 1000,
            token_provider: false,
            token: None,
            seed: 0x5eed,
        }
    }
}

/// The connection's state, as the app sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Disconnected,
    Connecting,
    Connected,
}

/// Why the client is disconnected and not trying again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The app closed the client.
    Closed,
    /// The browser is offline; the client reconnects when it comes back.
    Offline,
    /// The server closed with a terminal code (an auth failure, a policy violation).
    Terminal { code: u16, reason: String },
    /// The token provider answered "unauthorized".
    Unauthorized(String),
    /// The server speaks another protocol version.
    UnsupportedProtocol { server: u32 },
}

/// A token provider's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The user is not (or no longer) allowed: terminal.
    Unauthorized(String),
    /// Anything else (network, server error): retried with backoff.
    Failed(String),
}

/// What happens to a subscription, for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    Subscribing,
    /// The subscription is live. `recovered`: `Some(true)` when everything missed was
    /// replayed, `Some(false)` when the app must reload its state (a snapshot follows),
    /// `None` for a first subscription.
    Subscribed { recovered: Option<bool> },
    Unsubscribed,
    /// The server refused the channel; not retried until the app subscribes again.
    Refused { code: ErrorCode, message: String },
}

/// Errors reported to the app; none of them stops the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The server answered a command with an error.
    Server { code: ErrorCode, message: String, channel: Option<String> },
    /// A frame or message could not be read; it was skipped.
    Decode(String),
    /// Publishes were dropped from the offline queue (it was full).
    PublishesDropped { count: u32 },
    /// A publish was not sent: its command would exceed the server's message limit.
    PublishTooLarge { channel: String, size: usize, max: usize },
    /// A publish was sent but never answered, and is older than the server's idempotency
    /// window: it may or may not have been published, and is not sent again.
    PublishUnconfirmed { channel: String },
    /// The token provider failed; retrying.
    Token(String),
}

/// A publication for the app, with its raw JSON (parse it as the app's own type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub channel: String,
    pub seq: u64,
    /// A latest-value-per-key message sent at subscribe time.
    pub snapshot: bool,
    /// The whole message object as received: `{"type":…,"timestamp":…,"data":…}`.
    pub json: String,
}

impl Delivery {
    /// The message parsed as a protocol publication.
    pub fn publication(&self) -> Result<tidewire_protocol::Publication, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Call the token provider and answer with [`Event::Token`].
    FetchToken,
    /// Open a WebSocket to `url`, authenticating with `token`.
    Open { transport: TransportId, url: String, token: Option<String> },
    /// Send a text frame.
    Send { transport: TransportId, text: String },
    /// Close the WebSocket (the core already treats it as gone).
    Close { transport: TransportId, code: u16, reason: String },
    /// Hand a publication to the channel's handler.
    Deliver(Delivery),
    State { state: ConnectionState, attempt: u32, stopped: Option<StopReason> },
    Subscription { channel: String, event: SubscriptionEvent },
    /// A publish was accepted at `seq`.
    Published { channel: String, seq: u64 },
    Error(ClientError),
}

/// What the driver (or the app, through it) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start (or restart after a stop).
    Connect,
    /// Stop for good (until `Connect`).
    Close,
    Online,
    Offline,
    /// Background mode: stop receiving (the server forgets the subscriptions) and catch
    /// up with `since` on [`Event::Resume`].
    Pause,
    Resume,
    TransportOpened { transport: TransportId },
    TransportClosed { transport: TransportId, code: u16, reason: String },
    Frame { transport: TransportId, text: String },
    Token(Result<String, TokenError>),
    Subscribe { channel: String },
    Unsubscribe { channel: String },
    Publish(OutgoingPublish),
}

/// A publish, already encoded as its command, with what the offline queue needs to
/// conflate it (channel and key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPublish {
    pub channel: String,
    pub key: Option<String>,
    pub command: EncodedMessage,
}

impl OutgoingPublish {
    /// From a typed publication (native code).
    pub fn new(publication: NewPublication) -> Result<OutgoingPublish, serde_json::Error> {
        let channel = publication.channel.clone();
        let key = publication.key.clone();
        let command = EncodedMessage::encode(&Command::Publish(Publish { id: None, publication }))
            .map_err(|e| serde_json::Error::io(std::io::Error::other(e.to_string())))?;
        Ok(OutgoingPublish { channel, key, command })
    }

    /// From parts whose `data` is already JSON text (browsers stringify it in JS).
    pub fn from_json(channel: String, kind: &str, data_json: &str, key: Option<String>) -> OutgoingPublish {
        let command = tidewire_protocol::command::encode_publish(&channel, kind, data_json, key.as_deref());
        OutgoingPublish { channel, key, command }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// Not connected and not trying (see `stopped`).
    Idle,
    /// Waiting for `reconnect_at`.
    Waiting,
    /// Waiting for the token provider before opening.
    FetchingToken,
    /// Transport requested or open; waiting for `connected`.
    Opening(TransportId),
    Connected(TransportId),
}

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
    jitter: Jitter,
    token: Option<String>,
    subscriptions: HashMap<String, Subscription>,
    publishes: Batcher,
    next_publish_seq: u64,
    /// Publishes sent and not answered yet, oldest first.
    unacked: VecDeque<Unacked>,
    /// When queued publishes that were sent before (and came back unanswered) were first
    /// sent, by local number, in increasing order like the queue itself.
    first_sent: VecDeque<(u64, Duration)>,
    /// This client's idempotency keys are `<key_prefix>-<local number>`.
    key_prefix: String,
    limits: ServerLimits,
    paused: bool,
    offline: bool,
    next_id: u64,
    heartbeat_interval: Duration,
    // Timers.
    reconnect_at: Option<Duration>,
    dead_at: Option<Duration>,
    refresh_at: Option<Duration>,
    /// Commands were refused by the server's rate limit: re-send what is pending then.
    retry_at: Option<Duration>,
    /// A refresh token was requested while connected (not for a connect).
    refreshing: bool,
    actions: VecDeque<Action>,
    now: Duration,
}

/// The server's default command rate (`commandsPerSecond`), assumed until one announces
/// its own.
const DEFAULT_COMMANDS_PER_SECOND: u32 = 1000;

/// What a publish's `id` and `idempotencyKey` add to its command, at most.
const PUBLISH_ENVELOPE_BYTES: usize = 120;

/// A publish on the wire, waiting for its answer.
#[derive(Debug)]
struct Unacked {
    id: u64,
    outbound: Outbound,
    first_sent: Duration,
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

/// Pacing that keeps publishes within a server's command limit: nine tenths of its rate,
/// leaving room for other commands and for frames that reach the server closer together
/// than they left; as many per frame as a 16 ms frame's share of that (at least one, at
/// most half the announced burst), with the interval set so the average is that rate
/// (1000/s: 15 every 16.7 ms; 100/s: 2 every 22.2 ms; 1000/s with a burst of 10: 5 every
/// 5.6 ms). Publishes beyond it wait instead of being refused by the server's limiter;
/// how many may wait is the queue's own bound ([`Batcher::for_own_queue`]), not frames'.
fn publish_pacing(commands_per_second: u32, burst: Option<u32>) -> BatchConfig {
    const FRAME_MICROS: u64 = 16_000;
    let rate = (u64::from(commands_per_second) * 9 / 10).max(1);
    let half_burst = burst.map_or(u64::MAX, |b| u64::from(b / 2).max(1));
    let per_frame = (rate * FRAME_MICROS).div_ceil(1_000_000).clamp(1, half_burst);
    let interval = Duration::from_micros((per_frame * 1_000_000).div_ceil(rate));
    BatchConfig { max_batch: usize::try_from(per_frame).unwrap_or(usize::MAX), interval, max_queued_batches: 1, max_bytes: usize::MAX }
}

impl ClientCore {
    pub fn new(config: ClientConfig) -> ClientCore {
        // Until a server announces its command rate, publishes are paced at its default.
        let publishes = Batcher::for_own_queue(publish_pacing(DEFAULT_COMMANDS_PER_SECOND, None), config.max_queued_publishes);
        // Its own draw from the seed: one client's idempotency keys are no other's.
        let key_prefix = format!("{:016x}", Jitter::new(config.seed ^ 0x1de4_907e_c0de_5eed).next_u64());
        ClientCore {
            jitter: Jitter::new(config.seed),
            token: config.token.clone(),
            config,
            link: Link::Idle,
            stopped: Some(StopReason::Closed),
            attempt: 0,
            url_index: 0,
            next_transport: 1,
            subscriptions: HashMap::new(),
            publishes,
            next_publish_seq: 0,
            unacked: VecDeque::new(),
            first_sent: VecDeque::new(),
            key_prefix,
            limits: ServerLimits::default(),
            paused: false,
            offline: false,
            next_id: 1,
            heartbeat_interval: Duration::from_secs(25),
            reconnect_at: None,
            dead_at: None,
            refresh_at: None,
            retry_at: None,
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
        self.subscriptions.get(channel)?.position.as_ref()
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
        [self.reconnect_at, self.dead_at, self.refresh_at, self.retry_at, publishes].into_iter().flatten().min()
    }

    /// Feeds one event.
    pub fn handle(&mut self, event: Event, now: Duration) {
        self.now = self.now.max(now);
        match event {
            Event::Connect => self.on_connect(),
            Event::Close => self.stop(StopReason::Closed, Some(CloseCode::NORMAL.0), "client closed"),
            Event::Online => {
                self.offline = false;
                if self.stopped == Some(StopReason::Offline) {
                    self.attempt = 0;
                    self.start_attempt();
                }
            }
            Event::Offline => {
                self.offline = true;
                if self.stopped.is_none() {
                    self.stop(StopReason::Offline, Some(CloseCode::GOING_AWAY.0), "browser offline");
                }
            }
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
            Event::Subscribe { channel } => self.on_subscribe(channel),
            Event::Unsubscribe { channel } => self.on_unsubscribe(&channel),
            Event::Publish(publication) => self.on_publish(publication),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.start_attempt();
        }
        if self.dead_at.is_some_and(|at| at <= now) {
            self.dead_at = None;
            if let Link::Connected(transport) | Link::Opening(transport) = self.link {
                self.push(Action::Close {
                    transport,
                    code: CloseCode::HEARTBEAT_TIMEOUT.0,
                    reason: CloseCode::HEARTBEAT_TIMEOUT.reason("no message from the server in time"),
                });
                self.transport_lost();
            }
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            if matches!(self.link, Link::Connected(_)) && self.config.token_provider {
                self.refreshing = true;
                self.push(Action::FetchToken);
            }
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.retry_pending();
        }
        self.flush_publishes();
    }

    /// Re-sends the subscribes, unsubscribes (and recoveries) the server may have
    /// dropped unanswered.
    fn retry_pending(&mut self) {
        let Link::Connected(transport) = self.link else { return };
        let mut recover = Vec::new();
        for (channel, subscription) in &mut self.subscriptions {
            match subscription.server {
                ServerSide::SubscribeSent => subscription.server = ServerSide::None,
                // The server answers `unsubscribed` even when it had nothing to remove.
                ServerSide::UnsubscribeSent => subscription.server = ServerSide::Subscribed,
                ServerSide::None | ServerSide::Subscribed => {}
            }
            if subscription.recovering {
                subscription.recovering = false;
                recover.push(channel.clone());
            }
        }
        recover.sort();
        for channel in recover {
            self.recover(transport, &channel);
        }
        self.reconcile_all();
        self.requeue_unacked();
    }

    // ---- connecting -------------------------------------------------------------

    fn on_connect(&mut self) {
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

    /// Begins a connection attempt: a token first when a provider supplies them.
    fn start_attempt(&mut self) {
        self.stopped = None;
        self.reconnect_at = None;
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
        self.link = Link::Opening(transport);
        // A transport that never opens or never says `connected` is dead too.
        self.dead_at = Some(self.now + self.heartbeat_interval + self.config.heartbeat_grace);
        self.push(Action::Open { transport, url, token: self.token.clone() });
    }

    fn on_token(&mut self, result: Result<String, TokenError>) {
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
                        self.refresh_at = Some(self.now + self.jitter.between(min, max));
                    }
                    _ => {}
                }
            }
        }
    }

    fn on_transport_closed(&mut self, transport: TransportId, code: u16, reason: String) {
        let current = matches!(self.link, Link::Opening(t) | Link::Connected(t) if t == transport);
        if !current {
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

    /// The transport is gone (closed, dead, or replaced): forget server state, retry.
    fn transport_lost(&mut self) {
        for subscription in self.subscriptions.values_mut() {
            subscription.transport_lost();
        }
        self.requeue_unacked();
        self.emit_subscription_states();
        self.dead_at = None;
        self.refresh_at = None;
        self.retry_at = None;
        self.refreshing = false;
        self.schedule_reconnect();
    }

    fn schedule_reconnect(&mut self) {
        let delay = self.config.backoff.delay(self.attempt, &mut self.jitter);
        self.attempt = self.attempt.saturating_add(1);
        self.url_index = self.url_index.wrapping_add(1);
        self.link = Link::Waiting;
        self.reconnect_at = Some(self.now + delay);
        self.emit_state();
    }

    /// Stops trying; `close` sends a close frame on a live transport.
    fn stop(&mut self, reason: StopReason, close: Option<u16>, detail: &str) {
        if let (Some(code), Link::Opening(transport) | Link::Connected(transport)) = (close, &self.link) {
            let transport = *transport;
            self.push(Action::Close { transport, code, reason: detail.to_owned() });
        }
        for subscription in self.subscriptions.values_mut() {
            subscription.transport_lost();
        }
        self.requeue_unacked();
        self.emit_subscription_states();
        self.link = Link::Idle;
        self.stopped = Some(reason);
        self.reconnect_at = None;
        self.dead_at = None;
        self.refresh_at = None;
        self.refreshing = false;
        self.emit_state();
    }

    fn emit_state(&mut self) {
        let action = Action::State { state: self.state(), attempt: self.attempt, stopped: self.stopped.clone() };
        self.push(action);
    }

    // ---- inbound ----------------------------------------------------------------

    fn on_frame(&mut self, transport: TransportId, text: &str) {
        let current = matches!(self.link, Link::Opening(t) | Link::Connected(t) if t == transport);
        if !current {
            return;
        }
        self.dead_at = Some(self.now + self.heartbeat_interval + self.config.heartbeat_grace);
        let items: Vec<&RawValue> = match serde_json::from_str(text) {
            Ok(items) => items,
            Err(e) => {
                self.push(Action::Error(ClientError::Decode(format!("frame is not a JSON array: {e}"))));
                return;
            }
        };
        for item in items {
            if !matches!(self.link, Link::Opening(t) | Link::Connected(t) if t == transport) {
                return; // a message in this frame ended the connection
            }
            self.on_message(transport, item.get());
        }
        self.flush_publishes();
    }

    fn on_message(&mut self, transport: TransportId, json: &str) {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            channel: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            seq: Option<u64>,
            #[serde(default)]
            snapshot: bool,
        }
        let head: Head<'_> = match serde_json::from_str(json) {
            Ok(head) => head,
            Err(e) => return self.push(Action::Error(ClientError::Decode(format!("unreadable message: {e}")))),
        };
        if CONTROL_TYPES.contains(&head.kind.as_ref()) {
            match serde_json::from_str::<ControlFields<'_>>(json) {
                Ok(fields) => self.on_control(transport, fields),
                Err(e) => self.push(Action::Error(ClientError::Decode(format!("unreadable {} message: {e}", head.kind)))),
            }
            return;
        }
        let (Some(channel), Some(seq)) = (head.channel, head.seq) else {
            return self.push(Action::Error(ClientError::Decode(format!("{} message without channel or seq", head.kind))));
        };
        self.on_publication(transport, &channel, seq, head.snapshot, json);
    }

    fn on_publication(&mut self, transport: TransportId, channel: &str, seq: u64, snapshot: bool, json: &str) {
        let paused = self.paused;
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        if !subscription.should_be_subscribed(paused) || subscription.server == ServerSide::UnsubscribeSent {
            return;
        }
        let deliver = if snapshot {
            true
        } else {
            match subscription.arrival(seq) {
                Arrival::Next => {
                    subscription.advance(seq);
                    true
                }
                Arrival::Duplicate | Arrival::Unpositioned => false,
                Arrival::Gap => {
                    self.recover(transport, channel);
                    false
                }
            }
        };
        if deliver {
            self.push(Action::Deliver(Delivery { channel: channel.to_owned(), seq, snapshot, json: json.to_owned() }));
        }
    }

    /// Resubscribes with `since` on the live connection to fill a gap.
    fn recover(&mut self, transport: TransportId, channel: &str) {
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        if subscription.recovering || subscription.server != ServerSide::Subscribed {
            return;
        }
        subscription.recovering = true;
        let since = subscription.position.clone().map(|p| BTreeMap::from([(channel.to_owned(), p)]));
        let id = self.id();
        self.send(transport, &Command::Subscribe(Subscribe { id: Some(id), channels: vec![channel.to_owned()], since }));
    }

    fn on_control(&mut self, transport: TransportId, m: ControlFields<'_>) {
        let channel = m.channel.as_deref().unwrap_or_default().to_owned();
        match m.kind.as_ref() {
            "connected" => {
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
                self.heartbeat_interval = Duration::from_millis(m.heartbeat_interval_ms.unwrap_or(25_000));
                self.dead_at = Some(self.now + self.heartbeat_interval + self.config.heartbeat_grace);
                self.schedule_refresh(m.timestamp, m.expires_at);
                let limits = m.limits.unwrap_or_default();
                let rate = limits.commands_per_second.unwrap_or(DEFAULT_COMMANDS_PER_SECOND);
                let dropped = self.publishes.reconfigure(publish_pacing(rate, limits.command_burst));
                self.report_dropped(dropped);
                let defaults = ServerLimits::default();
                self.limits = ServerLimits {
                    max_message_bytes: limits.max_message_bytes.map_or(defaults.max_message_bytes, |n| n as usize),
                    max_channels: limits.max_channels.map_or(defaults.max_channels, |n| (n as usize).max(1)),
                    idempotency_window: limits.idempotency_window_ms.map_or(defaults.idempotency_window, Duration::from_millis),
                };
                self.emit_state();
                self.resubscribe_all(transport);
            }
            "subscribed" => {
                let Some(subscription) = self.subscriptions.get_mut(&channel) else { return };
                if !matches!(subscription.server, ServerSide::SubscribeSent | ServerSide::Subscribed) {
                    return;
                }
                // Unasked, on a live subscription, with nothing missed: the channel's first
                // publication gave it an epoch. Only the position's epoch changes.
                let renewal = subscription.server == ServerSide::Subscribed && !subscription.recovering && m.recovered == Some(true);
                if renewal {
                    if let Some(position) = &mut subscription.position {
                        position.epoch = m.epoch.map(|e| e.into_owned());
                    }
                    return;
                }
                subscription.server = ServerSide::Subscribed;
                subscription.recovering = false;
                let recovered = m.recovered;
                let epoch = m.epoch.map(|e| e.into_owned());
                if recovered != Some(true) {
                    subscription.position = Some(StreamPosition { seq: m.seq.unwrap_or(0), epoch });
                    subscription.skipped.clear();
                } else if let Some(position) = &mut subscription.position {
                    position.epoch = epoch;
                }
                if subscription.state() == SubscriptionState::Subscribed {
                    self.push(Action::Subscription { channel: channel.clone(), event: SubscriptionEvent::Subscribed { recovered } });
                }
                self.reconcile(&channel);
            }
            "unsubscribed" => {
                let Some(subscription) = self.subscriptions.get_mut(&channel) else { return };
                subscription.server = ServerSide::None;
                subscription.recovering = false;
                if let Some(code) = m.code {
                    // The server ended it (the token no longer grants it): subscribing
                    // again would be refused, so tell the app instead.
                    let message = m.message.map(|t| t.into_owned()).unwrap_or_default();
                    if subscription.wanted {
                        subscription.refused = true;
                        self.push(Action::Subscription { channel, event: SubscriptionEvent::Refused { code, message } });
                    } else {
                        self.subscriptions.remove(&channel);
                    }
                    return;
                }
                if !subscription.wanted {
                    self.subscriptions.remove(&channel);
                } else {
                    self.reconcile(&channel);
                }
            }
            "gap" => {
                let Some(subscription) = self.subscriptions.get_mut(&channel) else { return };
                match (m.reason, m.from, m.to) {
                    (Some(GapReason::Superseded), Some(from), Some(to)) => subscription.skip(from, to),
                    _ => self.recover(transport, &channel),
                }
            }
            "error" => {
                let code = m.code.unwrap_or(ErrorCode::InternalError);
                let message = m.message.map(|t| t.into_owned()).unwrap_or_default();
                if code == ErrorCode::RateLimitExceeded && channel.is_empty() {
                    // The command limiter's refusal names no command: re-send whatever is
                    // pending soon, unanswered publishes included (their idempotency keys
                    // make that safe). (A channel's publish limit names the channel, and
                    // leaves subscriptions alone.)
                    self.retry_at.get_or_insert(self.now + Duration::from_secs(1));
                }
                if let Some(CommandId::Number(id)) = m.id {
                    if code == ErrorCode::Unavailable && self.unacked.iter().any(|u| u.id == id) {
                        // The server cannot publish right now (its broker is down): the
                        // publish stays unanswered and goes again with the others.
                        self.retry_at.get_or_insert(self.now + Duration::from_secs(1));
                    } else {
                        self.acknowledged(id);
                    }
                }
                let refusal = matches!(code, ErrorCode::Forbidden | ErrorCode::InvalidChannel | ErrorCode::TooManyChannels);
                if let Some(subscription) = self.subscriptions.get_mut(&channel) {
                    if refusal && (subscription.server == ServerSide::SubscribeSent || subscription.recovering) {
                        subscription.recovering = false;
                        subscription.server = ServerSide::None;
                        subscription.refused = true;
                        self.push(Action::Subscription { channel, event: SubscriptionEvent::Refused { code, message } });
                        return;
                    }
                }
                let channel = m.channel.map(|c| c.into_owned());
                self.push(Action::Error(ClientError::Server { code, message, channel }));
            }
            "refreshed" => self.schedule_refresh(m.timestamp, m.expires_at),
            "published" => {
                if let Some(CommandId::Number(id)) = m.id {
                    self.acknowledged(id);
                }
                self.push(Action::Published { channel, seq: m.seq.unwrap_or(0) });
            }
            _ => {} // pong, heartbeat: only proof of life
        }
    }

    /// Schedules a token refresh before expiry, measured on the server's clock (both
    /// timestamps come from it), so client clock skew does not matter.
    fn schedule_refresh(&mut self, server_now: Option<tidewire_protocol::Timestamp>, expires_at: Option<tidewire_protocol::Timestamp>) {
        self.refresh_at = None;
        if !self.config.token_provider {
            return;
        }
        let (Some(server_now), Some(expires_at)) = (server_now, expires_at) else { return };
        let left = u64::try_from(expires_at.unix_micros() - server_now.unix_micros()).unwrap_or(0);
        let left = Duration::from_micros(left);
        let margin = self.config.token_refresh_margin.min(left / 2);
        self.refresh_at = Some(self.now + left.saturating_sub(margin));
    }

    // ---- subscriptions ----------------------------------------------------------

    fn on_subscribe(&mut self, channel: String) {
        let was_wanted = self.subscriptions.get(&channel).is_some_and(|s| s.wanted && !s.refused);
        let subscription = self.subscriptions.entry(channel.clone()).or_insert_with(Subscription::new);
        subscription.wanted = true;
        subscription.refused = false;
        if !was_wanted {
            self.push(Action::Subscription { channel: channel.clone(), event: SubscriptionEvent::Subscribing });
        }
        self.reconcile(&channel);
    }

    fn on_unsubscribe(&mut self, channel: &str) {
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        if !subscription.wanted {
            return;
        }
        subscription.wanted = false;
        self.push(Action::Subscription { channel: channel.to_owned(), event: SubscriptionEvent::Unsubscribed });
        self.reconcile(channel);
    }

    fn reconcile_all(&mut self) {
        let mut channels: Vec<String> = self.subscriptions.keys().cloned().collect();
        channels.sort();
        for channel in channels {
            self.reconcile(&channel);
        }
    }

    /// Brings the server's side of one channel towards what the app wants, with at most
    /// one command in flight.
    fn reconcile(&mut self, channel: &str) {
        let Link::Connected(transport) = self.link else {
            if let Some(subscription) = self.subscriptions.get(channel) {
                if !subscription.wanted && subscription.server == ServerSide::None {
                    self.subscriptions.remove(channel);
                }
            }
            return;
        };
        let paused = self.paused;
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        let should = subscription.should_be_subscribed(paused);
        let command = match (should, subscription.server) {
            (true, ServerSide::None) => {
                subscription.server = ServerSide::SubscribeSent;
                let since = subscription.position.clone().map(|p| BTreeMap::from([(channel.to_owned(), p)]));
                Some(Command::Subscribe(Subscribe { id: None, channels: vec![channel.to_owned()], since }))
            }
            (false, ServerSide::Subscribed) => {
                subscription.server = ServerSide::UnsubscribeSent;
                Some(Command::Unsubscribe(Unsubscribe { id: None, channels: vec![channel.to_owned()] }))
            }
            (false, ServerSide::None) if !subscription.wanted => {
                self.subscriptions.remove(channel);
                None
            }
            _ => None, // in flight, or already where it should be
        };
        if let Some(mut command) = command {
            let id = self.id();
            match &mut command {
                Command::Subscribe(c) => c.id = Some(id),
                Command::Unsubscribe(c) => c.id = Some(id),
                _ => {}
            }
            self.send(transport, &command);
        }
    }

    /// After `connected`: subscribes for every wanted channel, with `since` where a
    /// position is known, in as few commands as the server's limits allow.
    fn resubscribe_all(&mut self, transport: TransportId) {
        let paused = self.paused;
        let mut wanted: Vec<(String, Option<StreamPosition>)> = Vec::new();
        let mut forget = Vec::new();
        for (channel, subscription) in &mut self.subscriptions {
            if subscription.should_be_subscribed(paused) {
                subscription.server = ServerSide::SubscribeSent;
                wanted.push((channel.clone(), subscription.position.clone()));
            } else if !subscription.wanted {
                forget.push(channel.clone());
            }
        }
        for channel in forget {
            self.subscriptions.remove(&channel);
        }
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        // Each command within the server's message size (with room for the id and the
        // JSON around the lists) and its channel limit, so that restoring many
        // subscriptions never gets the connection closed for a message too big.
        const FRAME_ROOM: usize = 96;
        let budget = self.limits.max_message_bytes.saturating_sub(FRAME_ROOM);
        let json_len = |text: &str| serde_json::to_string(text).map_or(usize::MAX / 4, |t| t.len());
        let mut batch: Vec<(String, Option<StreamPosition>)> = Vec::new();
        let mut size = 0;
        for (channel, position) in wanted {
            let name = json_len(&channel) + 1;
            let since = position.as_ref().map_or(0, |p| name + 1 + p.seq.to_string().len() + p.epoch.as_deref().map_or(0, |e| json_len(e) + 20));
            let full = batch.len() >= self.limits.max_channels || size + name + since > budget;
            if full && !batch.is_empty() {
                self.send_subscribe(transport, std::mem::take(&mut batch));
                size = 0;
            }
            size += name + since;
            batch.push((channel, position));
        }
        if !batch.is_empty() {
            self.send_subscribe(transport, batch);
        }
    }

    fn send_subscribe(&mut self, transport: TransportId, channels: Vec<(String, Option<StreamPosition>)>) {
        let mut since = BTreeMap::new();
        let mut names = Vec::with_capacity(channels.len());
        for (channel, position) in channels {
            if let Some(position) = position {
                since.insert(channel.clone(), position);
            }
            names.push(channel);
        }
        let id = self.id();
        let since = (!since.is_empty()).then_some(since);
        self.send(transport, &Command::Subscribe(Subscribe { id: Some(id), channels: names, since }));
    }

    fn emit_subscription_states(&mut self) {
        let mut subscribing: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.should_be_subscribed(self.paused))
            .map(|(c, _)| c.clone())
            .collect();
        subscribing.sort();
        for channel in subscribing {
            self.push(Action::Subscription { channel, event: SubscriptionEvent::Subscribing });
        }
    }

    // ---- outbound ---------------------------------------------------------------

    fn on_publish(&mut self, publish: OutgoingPublish) {
        let size = publish.command.len() + PUBLISH_ENVELOPE_BYTES;
        let max = self.limits.max_message_bytes;
        if size > max {
            self.push(Action::Error(ClientError::PublishTooLarge { channel: publish.channel, size, max }));
            return;
        }
        self.next_publish_seq += 1;
        let position = Position {
            channel: publish.channel.as_str().into(),
            seq: self.next_publish_seq,
            key: publish.key.as_deref().map(Into::into),
        };
        let dropped = self.publishes.push(Outbound::publication(publish.command, position));
        self.report_dropped(dropped);
        self.flush_publishes();
    }

    /// Tells the app about publishes its queue dropped.
    fn report_dropped(&mut self, dropped: Dropped) {
        if dropped.total() > 0 {
            self.push(Action::Error(ClientError::PublishesDropped { count: dropped.total() }));
        }
    }

    /// Sends the publishes that are due, paced by the batcher, while fewer than the
    /// queue's bound wait for an answer.
    fn flush_publishes(&mut self) {
        let Link::Connected(transport) = self.link else { return };
        while self.unacked.len() < self.config.max_queued_publishes {
            let Some(frame) = self.publishes.poll_frame(self.now) else { break };
            for outbound in frame.messages {
                self.send_publish(transport, outbound);
            }
        }
    }

    /// The idempotency key of this client's publish number `n`.
    fn idempotency_key(&self, n: u64) -> String {
        format!("{}-{n}", self.key_prefix)
    }

    fn send_publish(&mut self, transport: TransportId, outbound: Outbound) {
        let Some(position) = outbound.position() else { return };
        let (n, channel) = (position.seq, position.channel.to_string());
        // The queue goes out in increasing local numbers: earlier entries belong to
        // publishes the queue dropped since.
        while self.first_sent.front().is_some_and(|(m, _)| *m < n) {
            self.first_sent.pop_front();
        }
        let first_sent = match self.first_sent.front() {
            Some((m, at)) if *m == n => {
                let at = *at;
                self.first_sent.pop_front();
                at
            }
            _ => self.now,
        };
        if self.now.saturating_sub(first_sent) > self.limits.idempotency_window {
            // The server may have forgotten its key: sending it again could publish it twice.
            self.push(Action::Error(ClientError::PublishUnconfirmed { channel }));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        // `OutgoingPublish` always makes a command of this shape.
        let Some(text) = tidewire_protocol::command::publish_with_id(outbound.message(), id, &self.idempotency_key(n)) else { return };
        let max = self.limits.max_message_bytes;
        if text.len() > max {
            self.push(Action::Error(ClientError::PublishTooLarge { channel, size: text.len(), max }));
            return;
        }
        self.push(Action::Send { transport, text });
        self.unacked.push_back(Unacked { id, outbound, first_sent });
    }

    /// The server answered the command `id`: if it was a publish, it is done.
    fn acknowledged(&mut self, id: u64) {
        if let Some(index) = self.unacked.iter().position(|u| u.id == id) {
            self.unacked.remove(index);
        }
    }

    /// Puts every unanswered publish back in front of the queue, in order, to be sent
    /// again (with its idempotency key) when the link allows.
    fn requeue_unacked(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        let waiting = self.publishes.take_queue();
        let mut again = Vec::with_capacity(self.unacked.len());
        // Everything still in `first_sent` comes after every sent publish.
        for unacked in self.unacked.drain(..).rev() {
            if let Some(position) = unacked.outbound.position() {
                self.first_sent.push_front((position.seq, unacked.first_sent));
            }
            again.push(unacked.outbound);
        }
        again.reverse();
        let mut dropped = Dropped::default();
        for outbound in again.into_iter().chain(waiting) {
            dropped.add(self.publishes.push(outbound));
        }
        self.report_dropped(dropped);
    }

    fn send(&mut self, transport: TransportId, command: &Command) {
        if let Ok(text) = serde_json::to_string(command) {
            self.push(Action::Send { transport, text });
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
