//! The seam between the node and where channels live.
//!
//! An [`Engine`] numbers publications, keeps history and the latest value per key, and
//! delivers publications to the local subscribers' outboxes. The in-memory engine does
//! all of it in this process; the Redis engine assigns seqs and keeps history in Redis,
//! so several nodes act as one, and fans out locally what Redis pub/sub brings. The rest
//! of the node (connections, commands, HTTP) only sees this trait.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tidewire_protocol::batch::{Dropped, Outbound};
use tidewire_protocol::filter::Filter;
use tidewire_protocol::message::{SnapshotEnd, Subscribed};
use tidewire_protocol::rate::Rate;
use tidewire_protocol::{CommandId, Control, EncodedMessage, ErrorCode, ServerMessage, StreamPosition};

use super::{Accepted, ChannelInfo, Outbox, Prepared, PublishError, now_timestamp};
use crate::config::Config;
use crate::metrics::{Metrics, ReasonLabel};

/// What engines share with the rest of the node.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub metrics: Metrics,
    /// Distinguishes this node's run (in epochs and connection ids).
    pub instance: String,
    /// What the node decides by (see [`super::clock`]).
    pub clock: super::Clock,
    /// This node's sessions, for operator orders (see [`super::operator`]).
    pub sessions: super::operator::Sessions,
    /// When the node started.
    pub started: std::time::SystemTime,
    /// The tokens operators took back (see [`super::revocation`]).
    pub revocations: super::revocation::Revocations,
    /// Who operators watch (see [`super::trace`]).
    pub tracer: Arc<super::trace::Tracer>,
    /// The revocations of the cluster have been read (at once for one node alone;
    /// with Redis, after the first read): until then no token is accepted.
    pub revocations_loaded: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// This node, as `GET /api/info` shows it.
    pub fn node_info(&self, draining: bool) -> super::operator::NodeInfo {
        let count = |gauge: &prometheus_client::metrics::gauge::Gauge| u64::try_from(gauge.get()).unwrap_or(0);
        let started_ms = self.started.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64);
        super::operator::NodeInfo {
            id: self.instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            engine: if self.config.redis_url.is_some() { "redis" } else { "memory" }.to_owned(),
            started_at: tidewire_protocol::Timestamp::from_unix_millis(started_ms),
            uptime_seconds: self.started.elapsed().map_or(0, |d| d.as_secs()),
            connections: count(&self.metrics.connections),
            subscriptions: count(&self.metrics.subscriptions),
            channels: count(&self.metrics.channels),
            draining,
        }
    }

    /// A connection's id as its `connected` message gives it: unique across nodes.
    pub fn connection_label(&self, id: u64) -> String {
        format!("{}-{id}", self.instance)
    }

    /// Gives an operator's order to the connections `target` names on this node;
    /// returns how many took it.
    pub fn order(&self, target: &super::operator::Target, order: &super::operator::Order) -> usize {
        self.sessions.order(target, order, |id| self.connection_label(id))
    }

    /// This node's connections (see [`super::operator::Sessions::list`]).
    pub fn connections(&self, user: Option<&str>) -> super::operator::NodeConnections {
        self.sessions.list(&self.instance, user, |id| self.connection_label(id))
    }

    /// Keeps a revocation and ends this node's connections it covers (4504); returns
    /// how many ended.
    pub fn revoke(&self, revocation: &super::revocation::Revocation) -> Result<usize, PublishError> {
        self.revocations
            .add(revocation, crate::auth::unix_now())
            .map_err(|full| PublishError::new(ErrorCode::TooManyKeys, full.to_string()))?;
        Ok(self.sessions.revoke(revocation))
    }
}

impl Shared {
    /// Counts what a fan-out dropped.
    pub fn count_drops(&self, dropped: Dropped) {
        if dropped.refused > 0 {
            // Messages for a client over its byte budget, which is being closed (4002).
            self.metrics
                .dropped
                .get_or_create(&ReasonLabel { reason: "queue_overflow" })
                .inc_by(dropped.refused.into());
        }
        if dropped.total() == 0 {
            return;
        }
        let metrics = &self.metrics;
        metrics.dropped.get_or_create(&ReasonLabel { reason: "superseded" }).inc_by(dropped.superseded.into());
        metrics.dropped.get_or_create(&ReasonLabel { reason: "overflow" }).inc_by(dropped.overflow.into());
    }

    /// Bytes a subscription's start (its replay, or its snapshot) may queue at once: half
    /// a client's queue, so a start always fits and live messages still have room. A
    /// channel's latest values are bounded by the same figure.
    pub fn max_start_bytes(&self) -> usize {
        self.config.max_queued_bytes / 2
    }

    pub fn too_many_keys(&self, channel: &str) -> PublishError {
        let max = self.config.max_keys_per_channel;
        PublishError::new(
            ErrorCode::TooManyKeys,
            format!("{channel} already holds latest values for {max} keys (--max-keys-per-channel)"),
        )
    }

    pub fn too_many_latest_bytes(&self, channel: &str) -> PublishError {
        let max = self.max_start_bytes();
        PublishError::new(
            ErrorCode::TooManyKeys,
            format!("{channel}'s latest values would exceed {max} bytes (half of --max-queued-bytes)"),
        )
    }

    pub fn node_full(&self) -> PublishError {
        let max = self.config.max_node_channels;
        PublishError::new(
            ErrorCode::TooManyChannels,
            format!("this node holds its limit of {max} channels (--max-node-channels)"),
        )
    }

    /// What a throttled stream may hold before it sends early: what a start may queue.
    pub fn throttle_limits(&self) -> super::throttle::Limits {
        super::throttle::Limits { flush_bytes: self.max_start_bytes() }
    }

    /// Replay and snapshots are bounded by what a client's queue can take.
    pub fn max_recovery(&self) -> usize {
        self.config.history_size.min(self.config.batch().capacity())
    }
}

/// A subscription to start: the engine queues `subscribed`, then the replay or the
/// snapshot, into `outbox`, and from then on every publication after that position.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub connection: u64,
    pub outbox: Arc<Outbox>,
    pub channel: String,
    pub since: Option<StreamPosition>,
    pub id: Option<CommandId>,
    /// Mark the end of a snapshot start with `snapshot-end`.
    pub snapshot_end: bool,
    /// Only what this admits reaches the subscriber (its start included).
    pub filter: Option<Arc<Filter>>,
    /// The rate granted, for a throttled subscription (see [`super::throttle`]).
    pub rate: Option<Rate>,
    /// Whether it asked for field deltas (see [`super::delta`]).
    pub deltas: bool,
}

/// A reply to queue once an unsubscribe took effect (after anything the engine still
/// owes the subscriber for that channel, such as a pending `subscribed`).
#[derive(Debug)]
pub struct Reply {
    pub outbox: Arc<Outbox>,
    pub message: EncodedMessage,
}

impl Reply {
    /// Queues the reply, if there is one (a connection closing asks for none).
    pub fn deliver(reply: Option<Reply>) {
        if let Some(Reply { outbox, message }) = reply {
            outbox.push(Outbound::control(message));
        }
    }
}

/// The `snapshot-end` after a snapshot start taken at `seq`.
pub fn snapshot_end(channel: &str, seq: u64) -> Outbound {
    let end = SnapshotEnd { timestamp: now_timestamp(), channel: channel.to_owned(), seq };
    Outbound::control(control(Control::SnapshotEnd(end)))
}

/// The `subscribed` a subscription starts with (`id`: the command's; `recovered`:
/// whether a `since` was fully replayed, `None` without one; `rate`: the one granted),
/// or re-announces when its channel's epoch changes (`id: None`).
pub fn subscribed(
    id: Option<CommandId>,
    channel: &str,
    seq: u64,
    epoch: &str,
    recovered: Option<bool>,
    rate: Option<Rate>,
    deltas: bool,
) -> EncodedMessage {
    control(Control::Subscribed(Subscribed {
        timestamp: now_timestamp(),
        id,
        channel: channel.to_owned(),
        seq,
        epoch: epoch.to_owned(),
        recovered,
        min_interval: rate.map(Rate::interval_ms),
        deltas,
    }))
}

/// Where channels live. See the module docs.
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// Numbers, stores and delivers one validated, serialized publication.
    fn publish(&self, prepared: Prepared) -> BoxFuture<'_, Result<Accepted, PublishError>>;

    /// Starts a subscription (access already checked). The answer goes to the outbox,
    /// possibly later (an engine may need a round trip first). Refused only when the node
    /// holds as many channels as it may.
    fn subscribe(&self, request: SubscribeRequest) -> Result<(), PublishError>;

    /// Ends a subscription and then queues `reply`; false when the connection was not
    /// subscribed.
    fn unsubscribe(&self, connection: u64, channel: &str, reply: Option<Reply>) -> bool;

    /// Channels this node knows, sorted by name.
    fn channels(&self) -> BoxFuture<'_, Vec<ChannelInfo>>;

    /// This node's connections subscribed to `channel` (for presence).
    fn members(&self, channel: &str) -> Vec<u64>;

    /// Asks every other node `question` and returns their answers (JSON, as
    /// [`super::operator::Question`] says) with how many nodes were asked; waits at most
    /// [`super::presence::ANSWER_WINDOW`]. One node alone has no others.
    fn ask<'a>(
        &'a self,
        _question: super::operator::Question,
    ) -> BoxFuture<'a, Result<(Vec<String>, usize), PublishError>> {
        Box::pin(std::future::ready(Ok((Vec::new(), 0))))
    }

    /// A page of a channel's stored history (see [`super::HistoryQuery`]).
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: &'a super::HistoryQuery,
    ) -> BoxFuture<'a, Result<super::HistoryPage, PublishError>>;

    /// Whether the engine can serve (its backend is reachable).
    fn is_ready(&self) -> bool {
        true
    }

    /// Forgets what has expired (called every few seconds by the hub).
    fn sweep(&self) {}

    /// Sends the throttled outputs due now by the node's clock (see
    /// [`super::Hub::flush_throttled`]).
    fn flush_throttled(&self) {}

    /// Every node of the cluster, `this` (the asking node, fresh) among them: one node
    /// alone knows only itself.
    fn nodes(
        &self,
        this: super::operator::NodeInfo,
    ) -> BoxFuture<'_, Result<Vec<super::operator::NodeInfo>, PublishError>> {
        Box::pin(std::future::ready(Ok(vec![this])))
    }

    /// Hands an operator's order to every other node (the node gave it to its own
    /// connections already). One node alone has nothing to do.
    fn broadcast(&self, _notice: super::operator::Notice) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Keeps a revocation for the cluster and tells the other nodes (this node keeps it
    /// in [`Shared::revocations`] by itself). One node alone has nothing to do.
    fn revoke(&self, _revocation: &super::revocation::Revocation) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Encodes a control message.
pub fn control(message: Control) -> EncodedMessage {
    // Control messages hold strings, numbers and JSON values, which always serialize.
    EncodedMessage::encode(&ServerMessage::Control(message)).expect("control messages always serialize")
}
