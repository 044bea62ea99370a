//! The Redis engine: several nodes act as one.
//!
//! - `scripts`: what lives in Redis (the keys of a channel and their TTLs) and the Lua
//!   scripts that number a publication (`PUBLISH`), read a subscription's start
//!   (`START`) and a stretch of history (`RANGE`), with their reply parsing.
//! - `pubsub`: the node's one pub/sub connection and its route table.
//! - `actor`: one task per channel with local subscribers, the only place that fans
//!   that channel out on this node.
//! - here: the [`Engine`] implementation that ties them together, and readiness.
//!
//! One Lua script numbers a publication, appends it to the channel's stream, records the
//! latest value per key and `PUBLISH`es it, atomically, so the seq is global and every
//! node sees each channel's publications in seq order. Only publications write: a
//! subscriber creates nothing in Redis, and every key expires (see `scripts`).
//!
//! **Faults.** While Redis is unreachable, publishes fail with `UNAVAILABLE` (HTTP 503),
//! `/ready` answers 503, subscriptions wait, and connected clients stay connected. The
//! pub/sub connection is re-established with backoff; every channel then resyncs: a
//! seq jump is filled from the stream, or announced with an overflow gap notice when the
//! stream no longer has it; a changed epoch (Redis lost the channel) re-announces the
//! subscription with `recovered: false`. Nothing is lost silently.

mod actor;
mod pubsub;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use tidewire_protocol::{ErrorCode, Op, StreamPosition};
use tokio::sync::{mpsc, oneshot};

use super::engine::{Engine, Reply, Shared, SubscribeRequest};
use super::operator::{Broadcast, NodeInfo, Notice, Question};
use super::revocation::Revocation;

/// How long a node's announcement lives without being renewed (the hub renews it every
/// sweep, five seconds).
const NODE_TTL_MS: u64 = 15_000;

/// The most nodes `GET /api/info` lists.
const MAX_LISTED_NODES: usize = 1000;

/// Writes this node's announcement (see [`Keys::node`]) and its place in the set of
/// live nodes (see [`Keys::nodes`]), forgetting the nodes that stopped announcing.
async fn announce_node(inner: &EngineInner, info: &NodeInfo) -> redis::RedisResult<()> {
    let mut conn = inner.conn.clone();
    let key = Keys::node(&inner.prefix, &info.id);
    let text = serde_json::to_string(info).unwrap_or_default();
    let (nodes, now) = (Keys::nodes(&inner.prefix), unix_millis());
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(key)
        .arg(text)
        .arg("PX")
        .arg(NODE_TTL_MS)
        .ignore()
        .cmd("ZADD")
        .arg(&nodes)
        .arg(now)
        .arg(&info.id)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&nodes)
        .arg("-inf")
        .arg(now.saturating_sub(NODE_TTL_MS))
        .ignore()
        .cmd("PEXPIRE")
        .arg(&nodes)
        .arg(NODE_TTL_MS)
        .ignore();
    pipe.query_async::<()>(&mut conn).await
}

/// The ids of the nodes that announced themselves within [`NODE_TTL_MS`], at most
/// [`MAX_LISTED_NODES`].
async fn live_nodes(inner: &EngineInner) -> redis::RedisResult<Vec<String>> {
    let mut conn = inner.conn.clone();
    let since = unix_millis().saturating_sub(NODE_TTL_MS);
    redis::cmd("ZRANGEBYSCORE")
        .arg(Keys::nodes(&inner.prefix))
        .arg(format!("({since}"))
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(MAX_LISTED_NODES)
        .query_async(&mut conn)
        .await
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
use super::{Accepted, ChannelInfo, HistoryPage, HistoryQuery, Prepared, PublishError, lock};
use actor::{Actor, Input, until_redis_answers};
use pubsub::PubSubCommand;
use scripts::{Keys, Published, Range, Start};

/// A channel this node listens to, and its actor.
struct Handle {
    id: u64,
    inbox: mpsc::UnboundedSender<Input>,
    members: HashSet<u64>,
    /// Connections whose subscription start the actor has not answered yet: each may
    /// have one at a time, so a client cannot queue Redis work (a snapshot read each)
    /// faster than it is done.
    starting: Arc<Mutex<HashSet<u64>>>,
}

#[derive(Debug)]
pub struct RedisEngine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    shared: Arc<Shared>,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    revoke_script: redis::Script,
    /// Numbers this node's questions to the others.
    next_question: AtomicU64,
    publish_script: redis::Script,
    start_script: redis::Script,
    range_script: redis::Script,
    history_script: redis::Script,
    channels: Mutex<HashMap<String, Handle>>,
    next_actor: AtomicU64,
    pubsub: mpsc::UnboundedSender<PubSubCommand>,
    /// Redis answers commands (watched every 250 ms, and by every publish).
    answers: Arc<AtomicBool>,
    /// The pub/sub connection is up with every channel subscribed.
    listening: Arc<AtomicBool>,
}

impl std::fmt::Debug for EngineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A configuration the engine cannot start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid --redis-url: {0}")]
pub struct RedisUrlError(#[from] redis::RedisError);

impl RedisEngine {
    /// Starts the engine's background tasks (on the current tokio runtime). Redis need
    /// not be up yet: the engine connects, and reconnects, on its own.
    pub fn start(shared: Arc<Shared>, url: &str, prefix: &str) -> Result<RedisEngine, RedisUrlError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config)?;
        let answers = Arc::new(AtomicBool::new(false));
        let listening = Arc::new(AtomicBool::new(false));
        let (pubsub, commands) = mpsc::unbounded_channel();
        let inner = Arc::new(EngineInner {
            shared,
            prefix: prefix.to_owned(),
            client: client.clone(),
            conn,
            revoke_script: redis::Script::new(scripts::REVOKE),
            next_question: AtomicU64::new(1),
            publish_script: redis::Script::new(scripts::PUBLISH),
            start_script: redis::Script::new(scripts::START),
            range_script: redis::Script::new(scripts::RANGE),
            history_script: redis::Script::new(scripts::HISTORY),
            channels: Mutex::new(HashMap::new()),
            next_actor: AtomicU64::new(1),
            pubsub,
            answers: answers.clone(),
            listening: listening.clone(),
        });
        let (traces, mut outgoing) = mpsc::channel(super::trace::OUTGOING_BACKLOG);
        inner.shared.tracer.send_elsewhere_with(traces);
        let (mut conn, trace_channel) = (inner.conn.clone(), Keys::traces(prefix));
        tokio::spawn(async move {
            // Watched users' events, for the other nodes' watchers.
            while let Some(trace) = outgoing.recv().await {
                let text = serde_json::to_string(&trace).unwrap_or_default();
                let _ = redis::cmd("PUBLISH").arg(&trace_channel).arg(text).query_async::<i64>(&mut conn).await;
            }
        });
        let control = pubsub::Control {
            channel: Keys::control(prefix),
            traces: Keys::traces(prefix),
            revocations: Keys::revocations(prefix),
            revocation_cuts: Keys::revocation_cuts(prefix),
            shared: inner.shared.clone(),
            answers: Arc::downgrade(&inner),
        };
        tokio::spawn(pubsub::run(client, prefix.to_owned(), commands, listening, control));
        tokio::spawn(watch_health(Arc::downgrade(&inner)));
        Ok(RedisEngine { inner })
    }
}

impl EngineInner {
    fn new_epoch(&self) -> String {
        format!("{}-{:08x}", self.shared.instance, fastrand::u32(..))
    }

    fn unavailable(&self, error: &redis::RedisError) -> PublishError {
        self.answers.store(false, Ordering::SeqCst);
        PublishError::new(ErrorCode::Unavailable, format!("the broker is unreachable: {error}"))
    }

    fn ttl_ms(ttl: Duration) -> u64 {
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    async fn publish(&self, prepared: Prepared) -> Result<Accepted, PublishError> {
        let config = &self.shared.config;
        let Prepared { channel, key, idempotency_key, op, template } = prepared;
        let key = key.unwrap_or_default();
        let keys = Keys::new(&self.prefix, &channel);
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self
            .publish_script
            .key(&keys.seq)
            .key(&keys.hist)
            .key(&keys.latest)
            .key(&keys.latest_bytes)
            .key(&keys.epoch)
            .key(&keys.idempotency)
            .key(&keys.idempotency_times)
            .arg(&template.prefix)
            .arg(&template.suffix)
            .arg(&key)
            .arg(config.history_size.max(1))
            .arg(Self::ttl_ms(config.history_ttl))
            .arg(self.new_epoch())
            .arg(&keys.pubsub)
            .arg(Self::ttl_ms(config.channel_ttl))
            .arg(config.max_keys_per_channel)
            .arg(self.shared.max_start_bytes())
            .arg(idempotency_key.as_deref().unwrap_or_default())
            .arg(Self::ttl_ms(config.idempotency_window))
            .arg(config.idempotency_keys_per_channel.max(1))
            .arg(match op {
                Op::Upsert => "",
                Op::Delete => "delete",
                Op::Clear => "clear",
            })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.answers.store(true, Ordering::SeqCst);
        match scripts::parse_published(reply).map_err(|e| PublishError::new(ErrorCode::InternalError, e.to_string()))? {
            Published::Accepted { seq, duplicate } => Ok(Accepted { channel, seq, duplicate }),
            Published::TooManyKeys => Err(self.shared.too_many_keys(&channel)),
            Published::TooManyBytes => Err(self.shared.too_many_latest_bytes(&channel)),
        }
    }

    /// Reads a subscription's start (writing nothing).
    async fn start(&self, channel: &str, since: Option<&StreamPosition>) -> redis::RedisResult<Start> {
        let keys = Keys::new(&self.prefix, channel);
        let since_seq = since.map_or(-1, |position| i64::try_from(position.seq).unwrap_or(i64::MAX));
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self
            .start_script
            .key(&keys.seq)
            .key(&keys.hist)
            .key(&keys.latest)
            .key(&keys.epoch)
            .arg(since_seq)
            .arg(self.shared.max_recovery())
            .arg(scripts::since_epoch(since))
            .arg(self.shared.max_start_bytes())
            .invoke_async(&mut conn)
            .await?;
        scripts::parse_start(reply)
    }

    /// Gives the channel a new epoch: its seqs went backwards (Redis restored an older
    /// snapshot, or failed over to a replica that was behind) while the epoch survived,
    /// so positions in the old epoch no longer name the same publications.
    /// Waits for Redis like the other actor steps: a channel left in the old epoch would
    /// deliver nothing between the rolled-back head and the one it had seen.
    async fn rotate_epoch(&self, channel: &str) -> String {
        let keys = Keys::new(&self.prefix, channel);
        let epoch = self.new_epoch();
        let ttl = Self::ttl_ms(self.shared.config.channel_ttl);
        until_redis_answers(channel, "new epoch", || {
            let mut conn = self.conn.clone();
            let (key, epoch) = (keys.epoch.clone(), epoch.clone());
            async move { redis::cmd("SET").arg(key).arg(epoch).arg("PX").arg(ttl).query_async::<()>(&mut conn).await }
        })
        .await;
        tracing::warn!(channel, %epoch, "channel seqs went backwards: new epoch");
        epoch
    }

    /// Fetches `from..=to` from the stream.
    async fn range(&self, channel: &str, from: u64, to: u64) -> redis::RedisResult<Range> {
        let keys = Keys::new(&self.prefix, channel);
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self
            .range_script
            .key(&keys.seq)
            .key(&keys.epoch)
            .key(&keys.hist)
            .arg(from)
            .arg(to)
            .invoke_async(&mut conn)
            .await?;
        scripts::parse_range(reply, from, to)
    }
}

/// How long the answers to one question are kept in Redis.
const REPLY_TTL_MS: u64 = 10_000;

/// Answers another node's question on the list it named (only a list of this engine's
/// `reply:` namespace).
async fn answer(inner: Arc<EngineInner>, reply: String, question: Question) {
    if !reply.starts_with(&Keys::reply(&inner.prefix, "")) {
        tracing::warn!(%reply, "a question whose answer would go outside the reply namespace");
        return;
    }
    let text = match question {
        Question::Presence { channel } => {
            let members: Vec<u64> = lock(&inner.channels)
                .get(&channel)
                .map(|handle| handle.members.iter().copied().collect())
                .unwrap_or_default();
            serde_json::to_string(&super::local_presence(&inner.shared, &members)).unwrap_or_default()
        }
        Question::Connections { user } => {
            serde_json::to_string(&inner.shared.connections(user.as_deref())).unwrap_or_default()
        }
    };
    let mut conn = inner.conn.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("RPUSH").arg(&reply).arg(text).ignore().cmd("PEXPIRE").arg(&reply).arg(REPLY_TTL_MS).ignore();
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        tracing::warn!("could not answer another node's question: {e}");
    }
}

/// Keeps the "Redis answers" flag true only while it does.
async fn watch_health(engine: std::sync::Weak<EngineInner>) {
    loop {
        let Some(inner) = engine.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let ping =
            tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut conn)).await;
        let up = matches!(ping, Ok(Ok(_)));
        if inner.answers.swap(up, Ordering::SeqCst) != up {
            if up {
                tracing::info!("broker reachable");
            } else {
                tracing::warn!("broker unreachable");
            }
        }
        drop(inner);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Engine for RedisEngine {
    fn publish(&self, prepared: Prepared) -> BoxFuture<'_, Result<Accepted, PublishError>> {
        Box::pin(self.inner.publish(prepared))
    }

    fn sweep(&self) {
        // Announce this node, so every node's `GET /api/info` lists it while it lives.
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let info = inner.shared.node_info(false);
            let _ = announce_node(&inner, &info).await;
        });
    }

    fn nodes(&self, this: NodeInfo) -> BoxFuture<'_, Result<Vec<NodeInfo>, PublishError>> {
        Box::pin(async move {
            let unavailable = |e: redis::RedisError| PublishError::new(ErrorCode::Unavailable, format!("Redis: {e}"));
            announce_node(&self.inner, &this).await.map_err(unavailable)?;
            let mut conn = self.inner.conn.clone();
            let keys: Vec<String> = live_nodes(&self.inner)
                .await
                .map_err(unavailable)?
                .iter()
                .map(|id| Keys::node(&self.inner.prefix, id))
                .collect();
            if keys.is_empty() {
                return Ok(vec![this]);
            }
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(unavailable)?;
            Ok(values.into_iter().flatten().filter_map(|text| serde_json::from_str(&text).ok()).collect())
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, PublishError>> {
        Box::pin(async move {
            let keys = Keys::new(&self.inner.prefix, channel);
            let mut conn = self.inner.conn.clone();
            let reply: Vec<redis::Value> = self
                .inner
                .history_script
                .key(&keys.seq)
                .key(&keys.epoch)
                .key(&keys.hist)
                .arg(query.since.unwrap_or(0))
                .arg(query.limit)
                .arg(if query.newest_first { 1 } else { 0 })
                .arg(query.max_bytes)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| PublishError::new(ErrorCode::Unavailable, format!("Redis: {e}")))?;
            scripts::parse_history(reply).map_err(|e| PublishError::new(ErrorCode::InternalError, e.to_string()))
        })
    }

    fn broadcast(&self, notice: Notice) -> BoxFuture<'_, Result<(), PublishError>> {
        let text =
            serde_json::to_string(&Broadcast { from: self.inner.shared.instance.clone(), notice }).unwrap_or_default();
        let channel = Keys::control(&self.inner.prefix);
        let mut conn = self.inner.conn.clone();
        Box::pin(async move {
            redis::cmd("PUBLISH").arg(channel).arg(text).query_async::<i64>(&mut conn).await.map(|_| ()).map_err(|e| {
                PublishError::new(ErrorCode::Unavailable, format!("the other nodes could not be told (Redis: {e})"))
            })
        })
    }

    fn revoke(&self, revocation: &Revocation) -> BoxFuture<'_, Result<(), PublishError>> {
        let (member, cut) = revocation.member();
        let notice = Notice::Revoke { revocation: revocation.clone() };
        let text =
            serde_json::to_string(&Broadcast { from: self.inner.shared.instance.clone(), notice }).unwrap_or_default();
        let expires_at = revocation.expires_at();
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn.clone();
            let kept: i64 = inner
                .revoke_script
                .key(Keys::revocations(&inner.prefix))
                .key(Keys::revocation_cuts(&inner.prefix))
                .arg(member)
                .arg(expires_at)
                .arg(cut.map(|c| c.to_string()).unwrap_or_default())
                .arg(crate::auth::unix_now())
                .arg(inner.shared.config.max_revocations)
                .arg(Keys::control(&inner.prefix))
                .arg(text)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| PublishError::new(ErrorCode::Unavailable, format!("Redis: {e}")))?;
            if kept == 0 {
                let max = inner.shared.config.max_revocations;
                return Err(PublishError::new(
                    ErrorCode::TooManyKeys,
                    format!("the cluster holds its limit of {max} revocations (--max-revocations)"),
                ));
            }
            Ok(())
        })
    }

    fn members(&self, channel: &str) -> Vec<u64> {
        lock(&self.inner.channels)
            .get(channel)
            .map(|handle| handle.members.iter().copied().collect())
            .unwrap_or_default()
    }

    fn ask<'a>(&'a self, question: Question) -> BoxFuture<'a, Result<(Vec<String>, usize), PublishError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let unavailable = |e: redis::RedisError| PublishError::new(ErrorCode::Unavailable, format!("Redis: {e}"));
            let number = inner.next_question.fetch_add(1, Ordering::Relaxed);
            let reply = Keys::reply(&inner.prefix, &format!("{}-{number}", inner.shared.instance));
            let notice = Notice::Ask { reply: reply.clone(), question };
            let text =
                serde_json::to_string(&Broadcast { from: inner.shared.instance.clone(), notice }).unwrap_or_default();
            // Answers are read on a connection of their own: a blocking pop would hold
            // up every other command on the shared one.
            let connect = inner.client.get_multiplexed_async_connection();
            let mut answers_conn = tokio::time::timeout(Duration::from_secs(1), connect)
                .await
                .map_err(|_| PublishError::new(ErrorCode::Unavailable, "Redis: no connection within 1 s"))?
                .map_err(unavailable)?;
            let mut conn = inner.conn.clone();
            // Asked: every other live node, as their announcements say (not the
            // channel's listeners, which a monitor or a half-open link would miscount).
            let asked =
                live_nodes(inner).await.map_err(unavailable)?.iter().filter(|id| **id != inner.shared.instance).count();
            redis::cmd("PUBLISH")
                .arg(Keys::control(&inner.prefix))
                .arg(text)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut answers = Vec::new();
            let deadline = tokio::time::Instant::now() + super::presence::ANSWER_WINDOW;
            while answers.len() < asked {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut blpop = redis::cmd("BLPOP");
                blpop.arg(&reply).arg(left.as_secs_f64().max(0.01));
                let pop = blpop.query_async::<Option<(String, String)>>(&mut answers_conn);
                match tokio::time::timeout(left + Duration::from_millis(500), pop).await {
                    Ok(Ok(Some((_, text)))) => answers.push(text),
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(e)) => return Err(unavailable(e)),
                }
            }
            let _ = redis::cmd("DEL").arg(&reply).query_async::<i64>(&mut conn).await;
            Ok((answers, asked))
        })
    }

    fn subscribe(&self, request: SubscribeRequest) -> Result<(), PublishError> {
        let inner = &self.inner;
        let mut channels = lock(&inner.channels);
        if !channels.contains_key(&request.channel) && channels.len() >= inner.shared.config.max_node_channels {
            return Err(inner.shared.node_full());
        }
        let handle = channels.entry(request.channel.clone()).or_insert_with(|| {
            let id = inner.next_actor.fetch_add(1, Ordering::Relaxed);
            let (inbox, input) = mpsc::unbounded_channel();
            let (done, ready) = oneshot::channel();
            let _ = inner.pubsub.send(PubSubCommand::Subscribe {
                channel: request.channel.clone(),
                actor: id,
                inbox: inbox.clone(),
                done,
            });
            let starting = Arc::new(Mutex::new(HashSet::new()));
            tokio::spawn(Actor::new(inner.clone(), &request.channel, starting.clone()).run(input, ready));
            Handle { id, inbox, members: HashSet::new(), starting }
        });
        if !lock(&handle.starting).insert(request.connection) {
            return Err(PublishError::new(
                ErrorCode::RateLimitExceeded,
                format!(
                    "a subscription to {} is starting already on this connection; wait for its answer",
                    request.channel
                ),
            ));
        }
        if handle.members.insert(request.connection) {
            inner.shared.metrics.subscriptions.inc();
        }
        let _ = handle.inbox.send(Input::Subscribe(request));
        inner.shared.metrics.channels.set(channels.len() as i64);
        Ok(())
    }

    fn unsubscribe(&self, connection: u64, channel: &str, reply: Option<Reply>) -> bool {
        let inner = &self.inner;
        let mut channels = lock(&inner.channels);
        let member = channels.get_mut(channel).filter(|h| h.members.contains(&connection));
        let Some(handle) = member else {
            Reply::deliver(reply);
            return false;
        };
        handle.members.remove(&connection);
        inner.shared.metrics.subscriptions.dec();
        let _ = handle.inbox.send(Input::Unsubscribe(connection, reply));
        if handle.members.is_empty() {
            // The last local subscriber left: stop listening to this channel.
            let _ = handle.inbox.send(Input::Stop);
            let _ = inner.pubsub.send(PubSubCommand::Unsubscribe { channel: channel.to_owned(), actor: handle.id });
            channels.remove(channel);
            inner.shared.metrics.channels.set(channels.len() as i64);
        }
        true
    }

    fn channels(&self) -> BoxFuture<'_, Vec<ChannelInfo>> {
        Box::pin(async move {
            let local: Vec<(String, usize)> =
                lock(&self.inner.channels).iter().map(|(name, handle)| (name.clone(), handle.members.len())).collect();
            let mut infos = Vec::with_capacity(local.len());
            for (channel, subscribers) in local {
                let keys = Keys::new(&self.inner.prefix, &channel);
                let mut conn = self.inner.conn.clone();
                let state: redis::RedisResult<(Option<u64>, Option<String>, usize)> =
                    redis::pipe().get(&keys.seq).get(&keys.epoch).xlen(&keys.hist).query_async(&mut conn).await;
                let (seq, epoch, history) = state.unwrap_or_default();
                infos.push(ChannelInfo {
                    channel,
                    subscribers,
                    seq: seq.unwrap_or(0),
                    epoch: epoch.unwrap_or_default(),
                    history,
                });
            }
            infos.sort_by(|a, b| a.channel.cmp(&b.channel));
            infos
        })
    }

    fn is_ready(&self) -> bool {
        self.inner.answers.load(Ordering::SeqCst) && self.inner.listening.load(Ordering::SeqCst)
    }
}
