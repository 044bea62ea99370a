//! A connection's protocol state, apart from its socket: who it is, what it is
//! subscribed to, its rate limit, and the handling of each inbound text message.
//!
//! Handling a command only queues replies into the outbox or asks the IO loop to close;
//! it never touches the socket, so the IO loop stays the only place that awaits. The
//! session decides by the hub's [`Clock`](crate::hub::Clock), and its frames come out
//! of [`Session::next_frame`] at whatever `now` the caller says: the IO loop passes the
//! system's time, a test a virtual one, and drives a session against a client core
//! with no socket in between.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use tidewire_protocol::batch::Outbound;
use tidewire_protocol::channel::Access;
use tidewire_protocol::command::Subscribe;
use tidewire_protocol::message::{Connected, ErrorMessage, Unsubscribed};
use tidewire_protocol::{CloseCode, Command, CommandId, Control, ErrorCode, PROTOCOL_VERSION, decode_command};

use crate::auth::{AuthError, Grant};
use crate::hub::operator::{Order, SessionView};
use crate::hub::trace::{Event as TraceEvent, Trace};
use crate::hub::{Hub, Outbox, Reply, SessionSlot, control, now_timestamp};
use crate::metrics::ErrorLabel;

use super::commands;

/// What a connection subscribes to as it opens: the channels of its URL, and where a
/// one-way stream resumes them (boxed: rare, and part of every connection's future).
#[derive(Debug, Default)]
pub struct Greeting {
    pub channels: Vec<String>,
    pub since: Option<Box<std::collections::BTreeMap<String, tidewire_protocol::StreamPosition>>>,
}

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
    /// What the operator's registry shows of this connection.
    view: Arc<SessionView>,
    /// The tracer's generation when this connection last looked, and what it saw.
    trace_seen: AtomicU64,
    traced: AtomicBool,
    limiter: DefaultDirectRateLimiter,
    /// Joins this connection may still announce (made on its first subscription to a
    /// `--presence-events` channel; most connections never need one).
    presence_budget: Option<Box<DefaultDirectRateLimiter>>,
    flood: FloodWindow,
}

/// The channels a connection is subscribed to, each with the bytes its filter holds: a
/// list, not a hash set, because a connection has a few (at most `--max-channels`, 128
/// by default) and a set's table costs most idle connections more memory than their one
/// or two entries.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: Vec<(Arc<str>, usize)>,
    /// The filters' bytes, all channels together (bounded by `--max-filter-bytes`).
    filter_bytes: usize,
}

impl Subscriptions {
    pub fn contains(&self, channel: &str) -> bool {
        self.channels.iter().any(|(c, _)| &**c == channel)
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The filter bytes held if `channel` had a filter of `bytes` (replacing its own).
    pub fn filter_bytes_with(&self, channel: &str, bytes: usize) -> usize {
        let own = self.channels.iter().find(|(c, _)| &**c == channel).map_or(0, |(_, b)| *b);
        self.filter_bytes - own + bytes
    }

    /// Adds a channel, or replaces its filter's byte count; returns the channel's name
    /// as held (shared with the operator's view of the connection).
    pub fn insert(&mut self, channel: &str, filter_bytes: usize) -> Arc<str> {
        self.filter_bytes = self.filter_bytes_with(channel, filter_bytes);
        match self.channels.iter_mut().find(|(c, _)| &**c == channel) {
            Some(entry) => {
                entry.1 = filter_bytes;
                entry.0.clone()
            }
            None => {
                let name: Arc<str> = channel.into();
                self.channels.push((name.clone(), filter_bytes));
                name
            }
        }
    }

    /// Removes a channel; false when it was not there.
    pub fn remove(&mut self, channel: &str) -> bool {
        let Some(index) = self.channels.iter().position(|(c, _)| &**c == channel) else {
            return false;
        };
        let (_, bytes) = self.channels.swap_remove(index);
        self.filter_bytes -= bytes;
        true
    }

    fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.channels.iter().map(|(c, _)| c)
    }

    fn take(&mut self) -> Vec<Arc<str>> {
        self.filter_bytes = 0;
        std::mem::take(&mut self.channels).into_iter().map(|(c, _)| c).collect()
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
    /// The session for an authenticated connection within the limits, or the close code
    /// and reason that refuse it.
    pub fn open(
        hub: &Hub,
        auth: Result<Grant, AuthError>,
        address: Option<std::net::IpAddr>,
    ) -> Result<Session, (CloseCode, String)> {
        let grant = match auth {
            Ok(grant) => grant,
            Err(error) => {
                let code = match error {
                    AuthError::Missing => CloseCode::AUTH_REQUIRED,
                    AuthError::Expired => CloseCode::TOKEN_EXPIRED,
                    AuthError::Invalid(_) => CloseCode::AUTH_INVALID,
                    AuthError::Revoked => CloseCode::REVOKED,
                    AuthError::RevocationsUnknown => CloseCode::TRY_AGAIN_LATER,
                };
                hub.metrics().auth_failures.get_or_create(&ErrorLabel { code: error.code().as_str() }).inc();
                tracing::info!(code = %error.code(), "refused connection: {error}");
                return Err((code, error.to_string()));
            }
        };
        if hub.is_draining() {
            return Err((CloseCode::SERVICE_RESTART, "node is shutting down".to_owned()));
        }
        let slot = match hub.admit(&grant.user, address) {
            Ok(slot) => slot,
            Err(refusal) => {
                hub.metrics()
                    .refused_connections
                    .get_or_create(&crate::metrics::ReasonLabel { reason: refusal.label() })
                    .inc();
                tracing::warn!(user = %grant.user, limit = refusal.label(), "connection limit reached");
                return Err((CloseCode::TRY_AGAIN_LATER, format!("connection limit reached ({})", refusal.label())));
            }
        };
        let session = Session::new(hub.clone(), slot, grant, address);
        // A revocation given between the token's check and the registration above did
        // not find this connection: look again now that any later one will.
        if hub.is_revoked(&session.grant) {
            return Err((CloseCode::REVOKED, crate::auth::AuthError::Revoked.to_string()));
        }
        Ok(session)
    }

    /// Queues `connected` (the first message on every connection), then subscribes to
    /// the channels the connection asked for in its URL and those its token names
    /// (`subs`), in one command: each checked like any subscribe, recovering from the
    /// greeting's positions (a one-way stream's `Last-Event-ID`).
    pub fn greet(&mut self, greeting: Greeting) {
        let Greeting { mut channels, since } = greeting;
        for channel in &self.grant.subscriptions {
            if !channels.contains(channel) {
                channels.push(channel.clone());
            }
        }
        let hub = &self.hub;
        self.send(Control::Connected(Connected {
            timestamp: now_timestamp(),
            connection_id: hub.connection_label(self.id()),
            user_id: self.grant.user.clone(),
            version: PROTOCOL_VERSION,
            heartbeat_interval_ms: hub.config().heartbeat_interval.as_millis().try_into().unwrap_or(u64::MAX),
            expires_at: (!self.grant.is_anonymous()).then(|| self.grant.expires_at_timestamp()),
            limits: hub.config().limits(),
        }));
        let address = self.view.address.map(|a| a.to_string());
        self.trace(|| TraceEvent::Connected { address });
        if !channels.is_empty() {
            self.on_subscribe(Subscribe { id: None, channels, since: since.map(|since| *since), options: None });
        }
    }

    /// The next frame's text, counted in the metrics: the frame due at `now`, or with `all`
    /// the next waiting frame without waiting out the interval. (Kept out of the IO loop's
    /// flush so the frame is not part of every connection's future while a write is
    /// pending.)
    pub fn next_frame(&self, now: Instant, all: bool) -> Option<String> {
        let session = self;
        let due = if all { session.outbox.next_frame_at()?.max(now) } else { now };
        let (frame, waited) = session.outbox.poll_frame(due)?;
        if !frame.gaps.is_empty() {
            let dropped: u64 = frame.gaps.iter().map(|g| g.len()).sum();
            tracing::warn!(
                connection = session.id(),
                user = %session.grant.user,
                dropped,
                "client buffer full, dropped messages"
            );
        }
        let metrics = session.hub.metrics();
        metrics.frames_sent.inc();
        metrics.batch_size.observe(frame.len() as f64);
        metrics.publish_to_write_seconds.observe(waited.as_secs_f64());
        let text = frame.encode(now_timestamp());
        let (messages, bytes) = (frame.len() as u64, text.len() as u64);
        session.view.sent(messages, bytes, frame.gaps.iter().map(|g| g.len()).sum());
        for gap in &frame.gaps {
            session.trace(|| TraceEvent::Gap { channel: gap.channel.to_string(), from: gap.from, to: gap.to });
        }
        if session.is_traced() {
            let mut tally = session.view.frame_tally();
            if let Some(event) = tally.add(messages, bytes, Instant::now(), false) {
                session.trace(|| event);
            }
        }
        Some(text)
    }

    pub fn new(hub: Hub, slot: SessionSlot, grant: Grant, address: Option<std::net::IpAddr>) -> Session {
        let config = hub.config();
        let outbox = Arc::new(Outbox::new(config.batch(), hub.clock().clone()));
        let view = Arc::new(SessionView::new(address));
        hub.sessions().register(slot.id, &grant, &outbox, &view);
        Session {
            view,
            trace_seen: AtomicU64::new(u64::MAX),
            traced: AtomicBool::new(false),
            limiter: RateLimiter::direct_with_clock(config.command_quota(), rate_limit_clock()),
            flood: FloodWindow { started: hub.clock().now(), refused: 0 },
            presence_budget: None,
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

    /// Whether an operator watches this connection's user: one atomic read unless who
    /// is watched changed since the last look (see [`crate::hub::trace`]).
    fn is_traced(&self) -> bool {
        let tracer = self.hub.tracer();
        let generation = tracer.generation();
        if self.trace_seen.load(Ordering::Relaxed) != generation {
            self.traced.store(tracer.is_traced(&self.grant.user), Ordering::Relaxed);
            self.trace_seen.store(generation, Ordering::Relaxed);
        }
        self.traced.load(Ordering::Relaxed)
    }

    /// Tells the operators watching this connection's user what happened.
    pub fn trace(&self, event: impl FnOnce() -> TraceEvent) {
        if self.is_traced() {
            self.hub.tracer().emit(Trace {
                at: now_timestamp(),
                node: self.hub.node_id().to_owned(),
                user: self.grant.user.clone(),
                connection: self.hub.connection_label(self.id()),
                event: event(),
            });
        }
    }

    /// Pays for a subscription's join and leave on a `--presence-events` channel; false
    /// when this connection spent its budget.
    pub fn pay_for_presence(&mut self) -> bool {
        let quota = self.hub.config().presence_quota();
        let budget = self
            .presence_budget
            .get_or_insert_with(|| Box::new(RateLimiter::direct_with_clock(quota, rate_limit_clock())));
        budget.check_n(std::num::NonZeroU32::new(2).unwrap_or(std::num::NonZeroU32::MIN)).is_ok_and(|fits| fits.is_ok())
    }

    /// Tells a watcher the frames not yet told (before the connection's close).
    pub fn flush_frame_trace(&self) {
        if self.is_traced() {
            let event = self.view.frame_tally().add(0, 0, Instant::now(), true);
            if let Some(event) = event {
                self.trace(|| event);
            }
        }
    }

    /// What the registry shows of this connection.
    pub fn view(&self) -> &SessionView {
        &self.view
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

    /// Charges `extra` more commands against the rate limit (work a command does per
    /// channel beyond what one command costs); false, and nothing charged, when the
    /// limit has not that many left.
    pub fn charge(&mut self, extra: usize) -> bool {
        let Some(n) = u32::try_from(extra).ok().and_then(std::num::NonZeroU32::new) else { return true };
        matches!(self.limiter.check_n(n), Ok(Ok(())))
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
        let now = self.hub.clock().now();
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
            self.hub.announce_presence(channel, &self.grant.user, self.slot.id, false);
            self.view.unsubscribed(channel);
            self.trace(|| TraceEvent::Unsubscribed { channel: channel.to_owned(), code });
            tracing::debug!(connection = self.id(), user = %self.grant.user, %channel, ?code, "unsubscribed");
        } else {
            self.outbox.push(Outbound::control(reply));
        }
    }

    /// The subscribed channels the current grant no longer allows.
    pub fn channels_not_granted(&self) -> Vec<String> {
        self.subscriptions
            .names()
            .filter(|c| self.grant.subscribe_access(c) != Access::Allowed)
            .map(|c| c.to_string())
            .collect()
    }

    /// Leaves every channel (on disconnect).
    pub fn leave_all(&mut self) {
        for channel in self.subscriptions.take() {
            self.hub.unsubscribe(self.slot.id, &channel, None);
            self.hub.announce_presence(&channel, &self.grant.user, self.slot.id, false);
        }
    }

    /// Carries out the operator orders waiting for this connection (see
    /// [`crate::hub::operator`]): the close code and reason when one ends it.
    pub fn take_orders(&mut self) -> Option<(CloseCode, String)> {
        for order in self.outbox.take_orders() {
            match order {
                Order::Disconnect { code, reason } => {
                    let (connection, user) = (self.id(), &self.grant.user);
                    tracing::info!(connection, user = %user, code = code.0, %reason, "operator disconnect");
                    return Some((code, reason));
                }
                Order::Unsubscribe { channel, reason } => {
                    if self.subscriptions.contains(&channel) {
                        let (connection, user) = (self.id(), &self.grant.user);
                        tracing::info!(connection, user = %user, %channel, %reason, "operator unsubscribe");
                        self.unsubscribe(&channel, None, Some((ErrorCode::Forbidden, reason)));
                    }
                }
            }
        }
        None
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.sessions().unregister(self.slot.id);
    }
}
