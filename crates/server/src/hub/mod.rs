//! The hub: one node's state, independent of any socket.
//!
//! A publication takes this path: validate (channel, type, key, size, publish rate) →
//! the [`Engine`] assigns `seq = head + 1`, serializes once, keeps it in history (and as
//! the key's latest value) and pushes the shared bytes into every local subscriber's
//! [`Outbox`] → each connection's IO loop frames and writes on its own schedule. The
//! fan-out never awaits a client.
//!
//! The hub also keeps the node-wide counts (connections per user, readiness) and the
//! shutdown signal, so the WebSocket handler and the HTTP endpoints share one state.

pub mod admission;
mod channel;
pub mod clock;
pub mod delta;
pub mod engine;
mod memory;
pub mod operator;
pub mod outbox;
pub mod presence;
pub mod publication;
mod redis;
pub mod revocation;
pub mod throttle;
pub mod trace;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tidewire_protocol::channel::{ChannelError, validate};
use tidewire_protocol::filter::Filter;
use tidewire_protocol::message::validate_published_type;
use tidewire_protocol::{CommandId, ErrorCode, NewPublication, Op, StreamPosition, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyError, Verifier};
use crate::config::Config;
use crate::metrics::Metrics;
use admission::Admission;
pub use admission::{HttpPlace, HttpSlot, Refusal, SessionSlot};
pub use clock::Clock;
pub use engine::{Engine, Reply, Shared, SubscribeRequest, control};
pub use outbox::Outbox;
pub use publication::Prepared;
use publication::too_big;

/// Now, as a wire timestamp.
pub fn now_timestamp() -> Timestamp {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    Timestamp::from_unix_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Redis(#[from] redis::RedisUrlError),
}

/// A refused publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PublishError {
    pub code: ErrorCode,
    pub message: String,
}

impl PublishError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> PublishError {
        PublishError { code, message: message.into() }
    }
}

/// Where a publication landed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    pub channel: String,
    pub seq: u64,
    /// The publication carried an idempotency key already published on the channel
    /// within the window: `seq` is the first one's, and nothing was published now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A channel as `GET /api/channels` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    pub channel: String,
    pub subscribers: usize,
    pub seq: u64,
    pub epoch: String,
    pub history: usize,
}

/// A page of a channel's history (`GET /api/history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only publications after this seq.
    pub since: Option<u64>,
    /// At most this many.
    pub limit: usize,
    /// Newest first (else oldest first).
    pub newest_first: bool,
    /// At most this many bytes of messages; the page ends before the one that would pass it.
    pub max_bytes: usize,
}

/// What a history query found: the channel's stream and the stored messages, each its
/// encoded text, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub epoch: String,
    pub head: u64,
    pub messages: Vec<String>,
    /// Whether more publications matched than the page holds.
    pub more: bool,
}

impl HistoryPage {
    /// A page of `stored` (oldest first, each with its seq) for `query`.
    pub fn of<'a>(
        epoch: String,
        head: u64,
        stored: impl DoubleEndedIterator<Item = (u64, &'a str)>,
        query: &HistoryQuery,
    ) -> HistoryPage {
        let since = query.since.unwrap_or(0);
        let matching: Box<dyn Iterator<Item = (u64, &str)>> = if query.newest_first {
            Box::new(stored.rev().filter(move |(seq, _)| *seq > since))
        } else {
            Box::new(stored.filter(move |(seq, _)| *seq > since))
        };
        let (mut messages, mut bytes, mut more) = (Vec::new(), 0, false);
        for (_, text) in matching {
            if messages.len() >= query.limit || bytes + text.len() > query.max_bytes {
                more = true;
                break;
            }
            bytes += text.len();
            messages.push(text.to_owned());
        }
        HistoryPage { epoch, head, messages, more }
    }
}

/// The state one node shares between its connections and endpoints. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    engine: Box<dyn Engine>,
    verifier: Verifier,
    admission: Arc<Admission>,
    /// Bytes of HTTP request bodies being read, all requests together.
    body_memory: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the current serving run starts draining; replaced when the hub is
    /// served again.
    shutdown: Mutex<CancellationToken>,
    draining: AtomicBool,
    /// One keyed limiter per configured publish rule, keyed by channel.
    publish_limits: Vec<governor::DefaultKeyedRateLimiter<Arc<str>>>,
    /// Whether the sweeping task runs.
    sweeping: AtomicBool,
    /// The queue of join and leave publications (see [`Hub::announce_presence`]).
    presence: std::sync::OnceLock<tokio::sync::mpsc::Sender<NewPublication>>,
    /// The open HTTP fallback sessions, where their POSTed commands find them.
    fallback: Arc<crate::connection::http_link::Registry>,
}

/// How a subscription starts: where from, the command it answers, and what it asked
/// for (the end of its snapshot marked, a filter).
#[derive(Debug, Clone, Default)]
pub struct SubscribeStart<'a> {
    pub since: Option<&'a StreamPosition>,
    pub id: Option<CommandId>,
    pub snapshot_end: bool,
    pub filter: Option<Arc<Filter>>,
    /// The rate granted (see [`throttle`]); `None`: every publication as it comes.
    pub rate: Option<tidewire_protocol::rate::Rate>,
    /// Whether it asked for field deltas (see [`delta`]).
    pub deltas: bool,
}

/// How often the node forgets what expired: idle channels, history past its TTL, and
/// publish limiters of channels that went quiet.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl Inner {
    fn sweep(&self) {
        self.engine.sweep();
        self.shared.revocations.sweep(crate::auth::unix_now());
        self.shared.tracer.sweep();
        let mut limiters = 0;
        for limiter in &self.publish_limits {
            // A limiter's state for a channel that is back to a full bucket says nothing.
            limiter.retain_recent();
            limiter.shrink_to_fit();
            limiters += limiter.len();
        }
        self.shared.metrics.publish_limiters.set(i64::try_from(limiters).unwrap_or(i64::MAX));
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// A hub for `config`; fails when the token key is missing or unreadable, or the
    /// Redis URL is malformed. With `--redis-url` it must be called inside a tokio
    /// runtime (the Redis engine starts its tasks).
    pub fn new(config: Config) -> Result<Hub, StartError> {
        Hub::with_clock(config, Clock::system())
    }

    /// A hub that decides by `clock` (see [`clock`]); [`Hub::new`] uses the system's.
    pub fn with_clock(config: Config, clock: Clock) -> Result<Hub, StartError> {
        let verifier = Verifier::from_config(&config)?;
        let instance = format!("{:x}{:04x}", now_timestamp().unix_micros(), fastrand::u16(..));
        let publish_limits = config
            .publish_rate_limits
            .iter()
            .map(|rule| {
                let per_minute = NonZeroU32::new(rule.per_minute).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN);
                governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute).allow_burst(burst))
            })
            .collect();
        let body_memory = config.max_http_body_memory.min(tokio::sync::Semaphore::MAX_PERMITS);
        let sessions = operator::Sessions::default();
        let started = std::time::SystemTime::now();
        let revocations = revocation::Revocations::new(config.max_revocations);
        let tracer = Arc::new(trace::Tracer::default());
        let metrics = Metrics::new();
        let revocations_loaded = AtomicBool::new(config.redis_url.is_none());
        let shared = Arc::new(Shared {
            config,
            metrics,
            instance,
            clock,
            sessions,
            started,
            revocations,
            tracer,
            revocations_loaded,
        });
        let engine: Box<dyn Engine> = match &shared.config.redis_url {
            Some(url) => Box::new(redis::RedisEngine::start(shared.clone(), url, &shared.config.redis_prefix)?),
            None => Box::new(memory::MemoryEngine::new(shared.clone())),
        };
        let fallback = Arc::new(crate::connection::http_link::Registry::new(shared.metrics.http_sessions.clone()));
        let hub = Hub {
            inner: Arc::new(Inner {
                shared,
                engine,
                publish_limits,
                verifier,
                admission: Arc::new(Admission::new()),
                body_memory: Arc::new(tokio::sync::Semaphore::new(body_memory)),
                shutdown: Mutex::new(CancellationToken::new()),
                draining: AtomicBool::new(false),
                sweeping: AtomicBool::new(false),
                presence: std::sync::OnceLock::new(),
                fallback,
            }),
        };
        hub.start_sweeping();
        Ok(hub)
    }

    /// Starts the task that sweeps the node every [`SWEEP_INTERVAL`], once, on the
    /// current tokio runtime (a hub made outside one starts it when first served). It
    /// holds the hub weakly and ends with it.
    pub(crate) fn start_sweeping(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.inner.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let hub = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = hub.upgrade() else { return };
                inner.sweep();
            }
        });
    }

    /// The clock the node decides by.
    pub fn clock(&self) -> &Clock {
        &self.inner.shared.clock
    }

    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// Verifies a token (see [`Verifier::verify`]) and refuses it when an operator
    /// revoked it (see [`revocation`]): what every connect, refresh and API call uses.
    pub fn authenticate(&self, token: &str) -> Result<crate::auth::Grant, crate::auth::AuthError> {
        let grant = self.inner.verifier.verify(token)?;
        if !self.inner.shared.revocations_loaded.load(Ordering::Acquire) {
            return Err(crate::auth::AuthError::RevocationsUnknown);
        }
        if self.is_revoked(&grant) {
            return Err(crate::auth::AuthError::Revoked);
        }
        Ok(grant)
    }

    /// The grant of a connection that sent `token`, or none: without one, the anonymous
    /// grant when `--anonymous-channels` allows connections without a token.
    pub fn authenticate_connection(&self, token: Option<&str>) -> Result<crate::auth::Grant, crate::auth::AuthError> {
        match token {
            Some(token) => self.authenticate(token),
            None => crate::auth::Grant::anonymous(self.config()).ok_or(crate::auth::AuthError::Missing),
        }
    }

    /// Whether an operator revoked the token `grant` came from.
    pub fn is_revoked(&self, grant: &crate::auth::Grant) -> bool {
        self.inner.shared.revocations.covers(grant.token(), crate::auth::unix_now())
    }

    /// Revokes tokens on every node: this node keeps the revocation and ends the
    /// connections it covers, the engine keeps it for the cluster and tells the other
    /// nodes. Returns how many of this node's connections ended.
    pub async fn revoke(&self, revocation: &revocation::Revocation) -> Result<usize, PublishError> {
        // Here first: a full table refuses before the cluster is told anything.
        let ended = self.inner.shared.revoke(revocation)?;
        self.inner.engine.revoke(revocation).await?;
        Ok(ended)
    }

    /// When the tokens `revocation` would cover on this node's live connections
    /// expire, the latest of them (seconds since the epoch).
    pub fn latest_expiry_covered(&self, revocation: &revocation::Revocation) -> Option<u64> {
        self.inner.shared.sessions.latest_expiry_covered(revocation)
    }

    /// The typed in-process publisher.
    pub fn publisher(&self) -> crate::Publisher {
        crate::Publisher::new(self.clone())
    }

    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    /// Cancelled when the node starts draining.
    pub fn shutdown_token(&self) -> CancellationToken {
        lock(&self.inner.shutdown).clone()
    }

    /// Starts draining: readiness fails, new connections are refused, and every
    /// connection closes with 1012 within the drain window.
    pub fn begin_shutdown(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        lock(&self.inner.shutdown).cancel();
    }

    /// Makes a drained hub servable again (an embedding app may stop its listener and
    /// serve the same hub later, keeping channels, history and snapshots).
    pub fn resume_serving(&self) {
        let mut token = lock(&self.inner.shutdown);
        if token.is_cancelled() {
            *token = CancellationToken::new();
        }
        self.inner.draining.store(false, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Open WebSocket sessions.
    pub fn connection_count(&self) -> usize {
        self.inner.admission.sessions()
    }

    /// Open HTTP connections that are not WebSockets (yet).
    pub fn http_connection_count(&self) -> usize {
        self.inner.admission.http_connections()
    }

    /// Admits a WebSocket session for `user` from `address` within the global, per-user
    /// and per-address limits; the returned guard releases the place when dropped.
    pub fn admit(&self, user: &str, address: Option<std::net::IpAddr>) -> Result<SessionSlot, Refusal> {
        Admission::admit_session(&self.inner.admission, &self.inner.shared, user, address)
    }

    /// Admits an HTTP connection from `peer` (at accept, before anything is read).
    pub fn admit_http(&self, peer: std::net::IpAddr) -> Result<HttpSlot, Refusal> {
        Admission::admit_http(&self.inner.admission, &self.inner.shared, peer)
    }

    /// Reserves room to read a request body of up to `bytes` within
    /// `--max-http-body-memory`; `None` when the node is reading too much already.
    pub fn reserve_body_memory(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        self.inner.body_memory.clone().try_acquire_many_owned(bytes).ok()
    }

    /// The open HTTP fallback sessions (see `connection::http_link`).
    pub fn fallback_sessions(&self) -> &Arc<crate::connection::http_link::Registry> {
        &self.inner.fallback
    }

    /// This node's sessions (see [`operator`]).
    pub fn sessions(&self) -> &operator::Sessions {
        &self.inner.shared.sessions
    }

    /// Gives an operator's order to the connections `target` names, on every node:
    /// this node's at once, the others' through the engine. Returns how many of this
    /// node's connections took it; `UNAVAILABLE` when the others could not be told.
    pub async fn order(&self, target: &operator::Target, order: &operator::Order) -> Result<usize, PublishError> {
        let here = self.inner.shared.order(target, order);
        let notice = operator::Notice::Order { target: target.clone(), order: order.clone() };
        self.inner.engine.broadcast(notice).await?;
        Ok(here)
    }

    /// This node's id (its run; the prefix of its connections' ids).
    pub fn node_id(&self) -> &str {
        &self.inner.shared.instance
    }

    pub fn connection_label(&self, id: u64) -> String {
        self.inner.shared.connection_label(id)
    }

    /// Checks everything about a publication that does not depend on the channel's
    /// state, so a batch can be refused whole before any of it is published.
    pub fn check(&self, new: &NewPublication) -> Result<(), PublishError> {
        check_envelope(new)?;
        let size = serde_json::to_vec(&new.data).map(|v| v.len()).unwrap_or(usize::MAX);
        let max = self.inner.shared.config.max_publication_bytes;
        if size > max {
            return Err(too_big(size, max));
        }
        Ok(())
    }

    /// Validates and publishes one message; returns its seq.
    pub async fn publish(&self, new: NewPublication) -> Result<Accepted, PublishError> {
        check_envelope(&new)?;
        self.check_publish_rate(&new.channel)?;
        let prepared = Prepared::new(new, self.inner.shared.config.max_publication_bytes)?;
        let accepted = self.inner.engine.publish(prepared).await?;
        if accepted.duplicate {
            self.inner.shared.metrics.duplicates.inc();
        } else {
            self.inner.shared.metrics.published.inc();
        }
        Ok(accepted)
    }

    /// Whether subscriptions to `channel` are announced (`--presence-events`).
    pub fn has_presence_events(&self, channel: &str) -> bool {
        self.inner.shared.config.presence_events.iter().any(|pattern| pattern.matches(channel))
    }

    /// Publishes a connection's join (or leave) on `channel` when the channel is
    /// configured for presence events (see [`presence`]). One task per node publishes
    /// them in the order they came, so a connection's leave never precedes its join;
    /// the queue to it holds [`presence::EVENT_BACKLOG`], and an event past it is
    /// dropped (logged and counted). Connections pay for them in advance (see
    /// [`Config::presence_quota`]), so the queue only fills when the engine stalls.
    pub fn announce_presence(&self, channel: &str, user: &str, connection: u64, joined: bool) {
        // Viewers without a token are nobody to announce.
        if user.is_empty() || !self.has_presence_events(channel) {
            return;
        }
        let Some(queue) = self.presence_queue() else { return };
        let kind =
            if joined { tidewire_protocol::message::PRESENCE_JOIN } else { tidewire_protocol::message::PRESENCE_LEAVE };
        let new = NewPublication {
            channel: channel.to_owned(),
            kind: kind.to_owned(),
            data: serde_json::json!({ "user": user, "connection": self.connection_label(connection) }),
            key: None,
            idempotency_key: None,
            op: Op::Upsert,
        };
        if queue.try_send(new).is_err() {
            self.inner.shared.metrics.dropped.get_or_create(&crate::metrics::ReasonLabel { reason: "presence" }).inc();
            tracing::warn!(%channel, "a presence event was dropped: the node's queue of them is full");
        }
    }

    /// The queue of presence events, and its task, started on first use.
    fn presence_queue(&self) -> Option<&tokio::sync::mpsc::Sender<NewPublication>> {
        if let Some(queue) = self.inner.presence.get() {
            return Some(queue);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (queue, mut events) = tokio::sync::mpsc::channel::<NewPublication>(presence::EVENT_BACKLOG);
        if self.inner.presence.set(queue).is_ok() {
            let hub = Arc::downgrade(&self.inner);
            runtime.spawn(async move {
                while let Some(new) = events.recv().await {
                    let Some(inner) = hub.upgrade() else { return };
                    let published = async {
                        let prepared = Prepared::new(new, inner.shared.config.max_publication_bytes)?;
                        inner.engine.publish(prepared).await
                    };
                    match published.await {
                        Ok(_) => {
                            inner.shared.metrics.published.inc();
                        }
                        Err(e) => tracing::info!(%e, "a presence event was not published"),
                    }
                }
            });
        }
        self.inner.presence.get()
    }

    /// Applies the first publish rule matching the channel, if any.
    fn check_publish_rate(&self, channel: &str) -> Result<(), PublishError> {
        let rules = &self.inner.shared.config.publish_rate_limits;
        let Some(index) = rules.iter().position(|rule| rule.pattern.matches(channel)) else { return Ok(()) };
        if self.inner.publish_limits[index].check_key(&Arc::from(channel)).is_ok() {
            return Ok(());
        }
        self.inner.shared.metrics.rate_limited.inc();
        let rule = &rules[index];
        Err(PublishError::new(
            ErrorCode::RateLimitExceeded,
            format!(
                "{channel} accepts {} publications at once and {} per minute ({})",
                rule.burst, rule.per_minute, rule.pattern
            ),
        ))
    }

    /// Subscribes a connection at an exact position: `subscribed`, then the recovered
    /// publications or the keyed snapshot, then live publications (see [`Engine`]).
    /// Access checks are the caller's.
    pub fn subscribe(
        &self,
        connection: u64,
        outbox: &Arc<Outbox>,
        channel: &str,
        start: SubscribeStart<'_>,
    ) -> Result<(), PublishError> {
        self.inner.engine.subscribe(SubscribeRequest {
            connection,
            outbox: outbox.clone(),
            channel: channel.to_owned(),
            since: start.since.cloned(),
            id: start.id,
            snapshot_end: start.snapshot_end,
            filter: start.filter,
            rate: start.rate,
            deltas: start.deltas,
        })
    }

    /// Removes a connection from a channel, then queues `reply` (in order with what the
    /// engine still owes that subscriber); false when it was not subscribed.
    pub fn unsubscribe(&self, connection: u64, channel: &str, reply: Option<Reply>) -> bool {
        self.inner.engine.unsubscribe(connection, channel, reply)
    }

    /// This node and every other one of its cluster (`GET /api/info`), sorted by id.
    pub async fn nodes(&self) -> Result<(operator::NodeInfo, Vec<operator::NodeInfo>), PublishError> {
        let this = self.inner.shared.node_info(self.is_draining());
        let mut nodes = self.inner.engine.nodes(this.clone()).await?;
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((this, nodes))
    }

    /// Who is subscribed to `channel`, on every node (see [`presence`]); with
    /// `list_users`, each user with their connections, else only the counts.
    pub async fn presence(&self, channel: &str, list_users: bool) -> Result<presence::Report, PublishError> {
        let here = self.local_presence(channel);
        let question = operator::Question::Presence { channel: channel.to_owned() };
        let (answers, asked) = self.inner.engine.ask(question).await?;
        let answers = answers.iter().filter_map(|text| serde_json::from_str(text).ok()).collect();
        Ok(presence::Report::merge(channel, here, presence::Gathered { answers, asked }, list_users))
    }

    /// The connections of every node: each node's part (this one's first) and how many
    /// other nodes were asked; with `user`, that user's connections in detail.
    pub async fn connections(
        &self,
        user: Option<&str>,
    ) -> Result<(Vec<operator::NodeConnections>, usize), PublishError> {
        let here = self.inner.shared.connections(user);
        let question = operator::Question::Connections { user: user.map(str::to_owned) };
        let (answers, asked) = self.inner.engine.ask(question).await?;
        let parts =
            std::iter::once(here).chain(answers.iter().filter_map(|text| serde_json::from_str(text).ok())).collect();
        Ok((parts, asked))
    }

    /// Watches `user`'s connections on every node (see [`trace`]); the engine is told
    /// again every [`trace::LEASE_RENEWAL`] while the watch lives.
    pub fn watch(&self, user: &str) -> Result<trace::Watch, trace::TooManyWatches> {
        self.inner.shared.tracer.watch(user)
    }

    /// Tells the other nodes that `user` is watched here (a lease of [`trace::LEASE`]).
    pub async fn renew_watch(&self, user: &str) -> Result<(), PublishError> {
        self.inner.engine.broadcast(operator::Notice::Trace { user: user.to_owned() }).await
    }

    /// Who operators watch.
    pub fn tracer(&self) -> &Arc<trace::Tracer> {
        &self.inner.shared.tracer
    }

    /// This node's part of `channel`'s presence.
    pub fn local_presence(&self, channel: &str) -> presence::NodePresence {
        local_presence(&self.inner.shared, &self.inner.engine.members(channel))
    }

    /// A page of `channel`'s history (what recovery would replay), with its epoch and head.
    pub async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, PublishError> {
        self.inner.engine.history(channel, query).await
    }

    /// Channels with their subscriber counts and heads, sorted by name.
    pub async fn channels(&self) -> Vec<ChannelInfo> {
        self.inner.engine.channels().await
    }

    /// Sends the throttled streams' outputs that are due by the node's clock. Engines do
    /// this by themselves on the system clock; a node on a manual clock (tests on
    /// virtual time) calls it after moving the clock.
    pub fn flush_throttled(&self) {
        self.inner.engine.flush_throttled();
    }

    /// Ready to serve: not draining, and the engine's backend is reachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.inner.engine.is_ready()
    }
}

/// A node's part of a channel's presence, from its subscribed connections.
pub(crate) fn local_presence(shared: &Shared, members: &[u64]) -> presence::NodePresence {
    presence::NodePresence::of(&shared.instance, shared.sessions.users_of(members))
}

fn check_envelope(new: &NewPublication) -> Result<(), PublishError> {
    validate(&new.channel)
        .map_err(|e| PublishError::new(ErrorCode::InvalidChannel, invalid_channel(&new.channel, e)))?;
    validate_published_type(&new.kind).map_err(|e| PublishError::new(ErrorCode::BadRequest, e.to_string()))?;
    if new.key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(PublishError::new(ErrorCode::BadRequest, "key must be 1..=255 bytes"));
    }
    match (new.op, &new.key) {
        (Op::Delete, None) => {
            return Err(PublishError::new(ErrorCode::BadRequest, "op \"delete\" needs the key to delete"));
        }
        (Op::Clear, Some(_)) => {
            return Err(PublishError::new(ErrorCode::BadRequest, "op \"clear\" empties every key and takes none"));
        }
        _ => {}
    }
    let max = tidewire_protocol::command::MAX_IDEMPOTENCY_KEY_BYTES;
    if new.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > max) {
        return Err(PublishError::new(ErrorCode::BadRequest, format!("idempotencyKey must be 1..={max} bytes")));
    }
    Ok(())
}

/// What a client's publication may not carry beyond what any publication may not: an
/// idempotency key of the node's own sources.
pub fn check_client_publication(new: &NewPublication) -> Result<(), PublishError> {
    match &new.idempotency_key {
        Some(key) if tidewire_protocol::command::is_reserved_idempotency_key(key) => Err(PublishError::new(
            ErrorCode::BadRequest,
            format!(
                "idempotencyKey may not start with {}: those keys belong to the node's sources",
                tidewire_protocol::command::RESERVED_IDEMPOTENCY_PREFIXES.join(" or ")
            ),
        )),
        _ => Ok(()),
    }
}

pub fn invalid_channel(name: &str, error: ChannelError) -> String {
    let shown: String = name.chars().take(64).collect();
    format!("invalid channel {shown:?}: {error}")
}
