//! The Redis engine: several nodes act as one.
//!
//! **In Redis**, per channel (keys share a `{channel}` hash tag, under a configurable
//! prefix): `seq` (the head, `INCR`ed), `epoch` (a random id set when the channel's
//! state is first created, so it changes when Redis loses the channel), `hist` (a stream
//! of the last publications, ids `<seq>-1`, trimmed by length and expired with the
//! history TTL), and `latest` (a hash: key → latest message). One Lua script numbers a
//! publication, appends it, records the latest value and `PUBLISH`es it, atomically, so
//! the seq is global and every node sees each channel's publications in seq order.
//!
//! **On a node**, a channel with local subscribers has an actor task: it is the only
//! place that fans that channel out, and it handles, in order, what pub/sub delivers and
//! the subscribe requests. A new subscription runs a second script (head, epoch, and
//! either the replay after `since` or the snapshot) after the node's pub/sub
//! subscription is confirmed, so anything published later arrives through pub/sub and
//! the subscriber's start position separates the two exactly. The node subscribes to a
//! channel's pub/sub only while it has local subscribers.
//!
//! **Faults.** While Redis is unreachable, publishes fail with `UNAVAILABLE` (HTTP 503),
//! `/ready` answers 503, subscriptions wait, and connected clients stay connected. The
//! pub/sub connection is re-established with backoff; every channel then resyncs: a
//! seq jump is filled from the stream, or announced with an overflow gap notice when the
//! stream no longer has it; a changed epoch (Redis lost the channel) re-announces the
//! subscription with `recovered: false`. Nothing is lost silently.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tidewire_protocol::batch::{Outbound, Position};
use tidewire_protocol::message::{GapNotice, GapReason, Subscribed};
use tidewire_protocol::{Control, EncodedMessage, ErrorCode, NewPublication, Publication, PublicationTemplate};
use tokio::sync::{mpsc, oneshot};

use super::engine::{control, Engine, Reply, Shared, SubscribeRequest};
use super::{lock, now_timestamp, too_big, Accepted, ChannelInfo, Outbox, PublishError, ENVELOPE_ALLOWANCE};

const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[4], epoch)
end
local seq = redis.call('INCR', KEYS[1])
local msg = ARGV[1] .. seq .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-1', 'm', msg)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[3], seq .. '\n' .. msg)
end
redis.call('PUBLISH', ARGV[7], epoch .. '\n' .. seq .. '\n' .. string.len(ARGV[3]) .. '\n' .. ARGV[3] .. msg)
return {seq, epoch}
"#;

/// Returns `{epoch, head, recovered (1/0), messages…}`: the replay after `since` when the
/// epoch matches and the stream has every entry, else the snapshot (`seq\nmsg` values).
const START_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[4], epoch)
end
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
if since >= 0 and ARGV[3] ~= '' and ARGV[3] ~= epoch then since = -1 end
if since >= 0 and since <= head and head - since <= max then
  local missing = head - since
  local reply = {epoch, head, 1}
  if missing == 0 then return reply end
  local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-1', head .. '-1')
  if #entries == missing then
    for i, entry in ipairs(entries) do reply[3 + i] = entry[2][2] end
    return reply
  end
end
local reply = {epoch, head, 0}
local latest = redis.call('HVALS', KEYS[3])
for i, value in ipairs(latest) do reply[3 + i] = value end
return reply
"#;

/// Returns `{epoch or false, head, messages…}` for `from..=to` when the stream has all of
/// them, else `{epoch, head}`.
const RANGE_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[2])
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local from = tonumber(ARGV[1])
local to = math.min(tonumber(ARGV[2]), head)
local reply = {epoch or '', head}
if to < from then return reply end
local entries = redis.call('XRANGE', KEYS[3], from .. '-1', to .. '-1')
if #entries == to - from + 1 then
  for i, entry in ipairs(entries) do reply[2 + i] = entry[2][2] end
end
return reply
"#;

/// The Redis keys of one channel.
struct Keys {
    seq: String,
    hist: String,
    latest: String,
    epoch: String,
    pubsub: String,
}

impl Keys {
    fn new(prefix: &str, channel: &str) -> Keys {
        let base = format!("{prefix}:{{{channel}}}");
        Keys {
            seq: format!("{base}:seq"),
            hist: format!("{base}:hist"),
            latest: format!("{base}:latest"),
            epoch: format!("{base}:epoch"),
            pubsub: format!("{prefix}:pub:{channel}"),
        }
    }
}

/// A publication as pub/sub delivers it.
#[derive(Debug, Clone)]
struct Delivered {
    epoch: Arc<str>,
    seq: u64,
    key: Option<Arc<str>>,
    message: EncodedMessage,
}

fn parse_delivered(payload: &[u8]) -> Option<Delivered> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, rest) = text.split_once('\n')?;
    let (seq, rest) = rest.split_once('\n')?;
    let (key_len, rest) = rest.split_once('\n')?;
    let key_len: usize = key_len.parse().ok()?;
    let key = rest.get(..key_len)?;
    let message = rest.get(key_len..)?;
    Some(Delivered {
        epoch: epoch.into(),
        seq: seq.parse().ok()?,
        key: (!key.is_empty()).then(|| key.into()),
        message: PublicationTemplate::message_from_text(message.to_owned()),
    })
}

enum Input {
    Delivered(Delivered),
    Subscribe(SubscribeRequest),
    Unsubscribe(u64, Option<Reply>),
    /// Pub/sub was re-established: catch up from Redis.
    Resync,
    Stop,
}

struct Handle {
    id: u64,
    inbox: mpsc::UnboundedSender<Input>,
    members: HashSet<u64>,
}

enum PubSubCommand {
    Subscribe { channel: String, actor: u64, inbox: mpsc::UnboundedSender<Input>, done: oneshot::Sender<()> },
    Unsubscribe { channel: String, actor: u64 },
}

#[derive(Debug)]
pub struct RedisEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    shared: Arc<Shared>,
    prefix: String,
    conn: ConnectionManager,
    publish_script: redis::Script,
    start_script: redis::Script,
    range_script: redis::Script,
    channels: Mutex<HashMap<String, Handle>>,
    next_actor: AtomicU64,
    pubsub: mpsc::UnboundedSender<PubSubCommand>,
    ready: Arc<AtomicBool>,
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
        let ready = Arc::new(AtomicBool::new(false));
        let (pubsub, commands) = mpsc::unbounded_channel();
        let inner = Arc::new(EngineInner {
            shared,
            prefix: prefix.to_owned(),
            conn,
            publish_script: redis::Script::new(PUBLISH_SCRIPT),
            start_script: redis::Script::new(START_SCRIPT),
            range_script: redis::Script::new(RANGE_SCRIPT),
            channels: Mutex::new(HashMap::new()),
            next_actor: AtomicU64::new(1),
            pubsub,
            ready: ready.clone(),
        });
        tokio::spawn(run_pubsub(client, prefix.to_owned(), commands, ready.clone()));
        tokio::spawn(watch_health(Arc::downgrade(&inner)));
        Ok(RedisEngine { inner })
    }
}

impl EngineInner {
    fn new_epoch(&self) -> String {
        format!("{}-{:08x}", self.shared.instance, fastrand::u32(..))
    }

    fn unavailable(&self, error: &redis::RedisError) -> PublishError {
        self.ready.store(false, Ordering::SeqCst);
        PublishError::new(ErrorCode::Unavailable, format!("the broker is unreachable: {error}"))
    }

    async fn publish(&self, new: NewPublication) -> Result<Accepted, PublishError> {
        let config = &self.shared.config;
        let key = new.key.clone().unwrap_or_default();
        let publication = Publication {
            kind: new.kind,
            timestamp: now_timestamp(),
            channel: new.channel,
            seq: 0,
            key: new.key,
            snapshot: false,
            data: new.data,
        };
        let template = PublicationTemplate::new(&publication).map_err(|e| PublishError::new(ErrorCode::BadRequest, e.to_string()))?;
        let size = template.len(20);
        if size > config.max_publication_bytes + ENVELOPE_ALLOWANCE {
            return Err(too_big(size - ENVELOPE_ALLOWANCE.min(size), config.max_publication_bytes));
        }
        let keys = Keys::new(&self.prefix, &publication.channel);
        let ttl_ms = config.history_ttl.as_millis().max(1) as u64;
        let mut conn = self.conn.clone();
        let (seq, _epoch): (u64, String) = self
            .publish_script
            .key(&keys.seq)
            .key(&keys.hist)
            .key(&keys.latest)
            .key(&keys.epoch)
            .arg(&template.prefix)
            .arg(&template.suffix)
            .arg(&key)
            .arg(config.history_size.max(1))
            .arg(ttl_ms)
            .arg(self.new_epoch())
            .arg(&keys.pubsub)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.ready.store(true, Ordering::SeqCst);
        Ok(Accepted { channel: publication.channel, seq })
    }

    /// Runs the start script for a subscription.
    async fn start(&self, channel: &str, since: Option<&tidewire_protocol::StreamPosition>) -> redis::RedisResult<Start> {
        let keys = Keys::new(&self.prefix, channel);
        let (since_seq, since_epoch) = match since {
            Some(position) => (position.seq as i64, position.epoch.clone().unwrap_or_default()),
            None => (-1, String::new()),
        };
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self
            .start_script
            .key(&keys.seq)
            .key(&keys.hist)
            .key(&keys.latest)
            .key(&keys.epoch)
            .arg(since_seq)
            .arg(self.shared.max_recovery())
            .arg(since_epoch)
            .arg(self.new_epoch())
            .invoke_async(&mut conn)
            .await?;
        let mut items = reply.into_iter();
        let epoch: String = redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
        let head: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
        let recovered: i64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
        let texts: Vec<String> = items.map(redis::from_redis_value).collect::<Result<_, _>>()?;
        Ok(Start { epoch, head, recovered: recovered == 1, texts })
    }

    /// Gives the channel a new epoch: its seqs went backwards (Redis restored an older
    /// snapshot, or failed over to a replica that was behind) while the epoch survived,
    /// so positions in the old epoch no longer name the same publications.
    /// Waits for Redis like the other actor steps: a channel left in the old epoch would
    /// deliver nothing between the rolled-back head and the one it had seen.
    async fn rotate_epoch(&self, channel: &str) -> String {
        let keys = Keys::new(&self.prefix, channel);
        let epoch = self.new_epoch();
        until_redis_answers(channel, "new epoch", || {
            let mut conn = self.conn.clone();
            let (key, epoch) = (keys.epoch.clone(), epoch.clone());
            async move { redis::cmd("SET").arg(key).arg(epoch).query_async::<()>(&mut conn).await }
        })
        .await;
        tracing::warn!(channel, %epoch, "channel seqs went backwards: new epoch");
        epoch
    }

    /// Fetches `from..=to` from the stream; `None` when some of it is gone.
    async fn range(&self, channel: &str, from: u64, to: u64) -> redis::RedisResult<Range> {
        let keys = Keys::new(&self.prefix, channel);
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> =
            self.range_script.key(&keys.seq).key(&keys.epoch).key(&keys.hist).arg(from).arg(to).invoke_async(&mut conn).await?;
        let mut items = reply.into_iter();
        let epoch: String = redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
        let head: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
        let texts: Vec<String> = items.map(redis::from_redis_value).collect::<Result<_, _>>()?;
        let complete = to < from || texts.len() as u64 == to.min(head).saturating_sub(from) + 1;
        Ok(Range { epoch, head, texts: complete.then_some(texts) })
    }
}

struct Start {
    epoch: String,
    head: u64,
    recovered: bool,
    texts: Vec<String>,
}

struct Range {
    epoch: String,
    head: u64,
    texts: Option<Vec<String>>,
}

/// How often a channel actor's step asks Redis again while it does not answer.
const BROKER_RETRY: Duration = Duration::from_millis(250);

/// Runs a channel actor's step until Redis answers. Steps wait for the broker rather
/// than being skipped: the channel's subscribers stay connected meanwhile, and a skipped
/// step would leave the actor's view of the channel behind Redis's.
async fn until_redis_answers<T, Fut>(channel: &str, step: &str, mut attempt: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                tracing::debug!(channel, "{step} waits for the broker: {e}");
                tokio::time::sleep(BROKER_RETRY).await;
            }
        }
    }
}

/// Keeps the readiness flag true only while Redis answers.
async fn watch_health(engine: std::sync::Weak<EngineInner>) {
    loop {
        let Some(inner) = engine.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let ping = tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut conn)).await;
        let up = matches!(ping, Ok(Ok(_)));
        if inner.ready.swap(up, Ordering::SeqCst) != up {
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

/// Owns the pub/sub connection: (re)connects with backoff, keeps the set of channels
/// this node listens to, and routes each message to its channel's actor.
async fn run_pubsub(
    client: redis::Client,
    prefix: String,
    mut commands: mpsc::UnboundedReceiver<PubSubCommand>,
    ready: Arc<AtomicBool>,
) {
    let pubsub_prefix = format!("{prefix}:pub:");
    // channel → (actor id, inbox), plus confirmations owed once connected.
    let mut routes: HashMap<String, (u64, mpsc::UnboundedSender<Input>)> = HashMap::new();
    let mut waiting: Vec<(String, oneshot::Sender<()>)> = Vec::new();
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    loop {
        let connection = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await;
        let (mut sink, mut stream) = match connection {
            Ok(Ok(pubsub)) => pubsub.split(),
            _ => {
                // Keep taking commands while down, so subscribers queue up.
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        command = commands.recv() => match command {
                            None => return,
                            Some(command) => apply_offline(command, &mut routes, &mut waiting),
                        },
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        let mut healthy = true;
        for channel in routes.keys() {
            if sink.subscribe(format!("{pubsub_prefix}{channel}")).await.is_err() {
                healthy = false;
                break;
            }
        }
        if !healthy {
            continue;
        }
        for (_, done) in waiting.drain(..) {
            let _ = done.send(());
        }
        if !first {
            tracing::info!(channels = routes.len(), "pub/sub re-established; resyncing channels");
            for (_, inbox) in routes.values() {
                let _ = inbox.send(Input::Resync);
            }
        }
        first = false;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(channel) = message.get_channel_name().strip_prefix(&pubsub_prefix) else { continue };
                    let (Some((_, inbox)), Some(delivered)) = (routes.get(channel), parse_delivered(message.get_payload_bytes())) else { continue };
                    let _ = inbox.send(Input::Delivered(delivered));
                }
                command = commands.recv() => match command {
                    None => return,
                    Some(PubSubCommand::Subscribe { channel, actor, inbox, done }) => {
                        let fresh = routes.insert(channel.clone(), (actor, inbox)).is_none();
                        if fresh && sink.subscribe(format!("{pubsub_prefix}{channel}")).await.is_err() {
                            waiting.push((channel, done));
                            break;
                        }
                        let _ = done.send(());
                    }
                    Some(PubSubCommand::Unsubscribe { channel, actor }) => {
                        if routes.get(&channel).is_some_and(|(id, _)| *id == actor) {
                            routes.remove(&channel);
                            if sink.unsubscribe(format!("{pubsub_prefix}{channel}")).await.is_err() {
                                break;
                            }
                        }
                    }
                },
            }
        }
        ready.store(false, Ordering::SeqCst);
        tracing::warn!("pub/sub connection lost; reconnecting");
    }
}

fn apply_offline(
    command: PubSubCommand,
    routes: &mut HashMap<String, (u64, mpsc::UnboundedSender<Input>)>,
    waiting: &mut Vec<(String, oneshot::Sender<()>)>,
) {
    match command {
        PubSubCommand::Subscribe { channel, actor, inbox, done } => {
            routes.insert(channel.clone(), (actor, inbox));
            waiting.push((channel, done));
        }
        PubSubCommand::Unsubscribe { channel, actor } => {
            if routes.get(&channel).is_some_and(|(id, _)| *id == actor) {
                routes.remove(&channel);
            }
        }
    }
}

/// One channel's local fan-out on this node.
struct Actor {
    engine: Arc<EngineInner>,
    channel: Arc<str>,
    /// Local subscribers and the seq after which each receives live publications.
    subscribers: HashMap<u64, (Arc<Outbox>, u64)>,
    epoch: Option<Arc<str>>,
    /// Last seq fanned out (or known to be before every local subscriber's start).
    head: u64,
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Input>, ready: oneshot::Receiver<()>) {
        // Listen before reading state, so nothing published after the read is missed.
        let _ = ready.await;
        while let Some(input) = inbox.recv().await {
            match input {
                Input::Subscribe(request) => self.subscribe(request).await,
                Input::Unsubscribe(connection, reply) => {
                    self.subscribers.remove(&connection);
                    if let Some((outbox, message)) = reply {
                        outbox.push(Outbound::control(message));
                    }
                }
                Input::Delivered(delivered) => self.deliver(delivered).await,
                Input::Resync => self.resync().await,
                Input::Stop => return,
            }
        }
    }

    async fn subscribe(&mut self, request: SubscribeRequest) {
        let mut start = until_redis_answers(&self.channel, "subscribe", || self.engine.start(&self.channel, request.since.as_ref())).await;
        let rolled_back = self.epoch.as_deref() == Some(start.epoch.as_str()) && start.head < self.head;
        if rolled_back {
            start.epoch = self.engine.rotate_epoch(&self.channel).await;
            start.recovered = false;
            start.texts.clear();
        }
        let epoch: Arc<str> = start.epoch.as_str().into();
        if self.epoch.as_deref() != Some(&*epoch) {
            if self.epoch.is_some() {
                self.epoch_changed(epoch.clone(), start.head);
            }
            self.epoch = Some(epoch.clone());
            self.head = start.head;
        }
        let mut outbounds = vec![Outbound::control(control(Control::Subscribed(Subscribed {
            timestamp: now_timestamp(),
            id: request.id,
            channel: self.channel.to_string(),
            seq: start.head,
            epoch: epoch.to_string(),
            recovered: request.since.as_ref().map(|_| start.recovered),
        })))];
        if start.recovered {
            let first = start.head + 1 - start.texts.len() as u64;
            for (i, text) in start.texts.into_iter().enumerate() {
                let message = PublicationTemplate::message_from_text(text);
                let position = Position { channel: self.channel.clone(), seq: first + i as u64, key: None };
                outbounds.push(Outbound::publication(message, position));
            }
        } else {
            let mut latest: Vec<(u64, String)> = start
                .texts
                .into_iter()
                .filter_map(|t| t.split_once('\n').and_then(|(seq, msg)| Some((seq.parse().ok()?, msg.to_owned()))))
                .collect();
            latest.sort_by_key(|(seq, _)| *seq);
            for (_, text) in latest {
                let message = PublicationTemplate::message_from_text(text).marked_as_snapshot();
                outbounds.push(Outbound::control(message));
            }
        }
        let dropped = request.outbox.push_all(outbounds);
        self.engine.shared.count_drops(dropped);
        self.subscribers.insert(request.connection, (request.outbox, start.head));
    }

    async fn deliver(&mut self, delivered: Delivered) {
        if self.epoch.as_deref() != Some(&*delivered.epoch) {
            if self.epoch.is_none() && self.subscribers.is_empty() {
                return; // nobody to tell yet; the first subscribe sets the epoch
            }
            self.epoch_changed(delivered.epoch.clone(), delivered.seq.saturating_sub(1));
        }
        if delivered.seq <= self.head {
            return;
        }
        if delivered.seq > self.head + 1 {
            self.fill(self.head + 1, delivered.seq - 1).await;
        }
        self.fan_out(delivered.seq, delivered.key, delivered.message);
    }

    /// Fans out one publication to the subscribers whose start is before it.
    fn fan_out(&mut self, seq: u64, key: Option<Arc<str>>, message: EncodedMessage) {
        let outbound = Outbound::publication(message, Position { channel: self.channel.clone(), seq, key });
        let mut delivered = 0;
        for (outbox, start) in self.subscribers.values() {
            if seq > *start {
                let dropped = outbox.push(outbound.clone());
                self.engine.shared.count_drops(dropped);
                delivered += 1;
            }
        }
        self.engine.shared.metrics.delivered.inc_by(delivered);
        self.head = seq;
    }

    /// Delivers `from..=to` from the stream, or announces it as lost.
    async fn fill(&mut self, from: u64, to: u64) {
        match self.engine.range(&self.channel, from, to).await {
            Ok(Range { texts: Some(texts), .. }) => {
                for (i, text) in texts.into_iter().enumerate() {
                    self.fan_out(from + i as u64, None, PublicationTemplate::message_from_text(text));
                }
            }
            _ => {
                tracing::warn!(channel = %self.channel, from, to, "publications missed while disconnected are gone; announcing a gap");
                for (outbox, start) in self.subscribers.values() {
                    let first = from.max(start + 1);
                    if first > to {
                        continue;
                    }
                    let notice = Control::Gap(GapNotice {
                        timestamp: now_timestamp(),
                        channel: self.channel.to_string(),
                        from: first,
                        to,
                        reason: GapReason::Overflow,
                    });
                    outbox.push(Outbound::control(control(notice)));
                }
                self.head = to;
            }
        }
    }

    /// After pub/sub came back: deliver what was published meanwhile.
    async fn resync(&mut self) {
        let range = until_redis_answers(&self.channel, "resync", || self.engine.range(&self.channel, self.head + 1, u64::MAX)).await;
        let epoch: Arc<str> = range.epoch.as_str().into();
        if !range.epoch.is_empty() && self.epoch.as_deref() != Some(&*epoch) {
            self.epoch_changed(epoch, range.head);
            return;
        }
        if range.head < self.head {
            let epoch = self.engine.rotate_epoch(&self.channel).await;
            self.epoch_changed(epoch.as_str().into(), range.head);
            return;
        }
        if range.head > self.head {
            let (from, to) = (self.head + 1, range.head);
            match range.texts {
                Some(texts) => {
                    for (i, text) in texts.into_iter().enumerate() {
                        self.fan_out(from + i as u64, None, PublicationTemplate::message_from_text(text));
                    }
                }
                None => self.fill(from, to).await,
            }
        }
    }

    /// Redis lost the channel (or was flushed): tell every local subscriber that its
    /// position is void, with a fresh `subscribed` that says `recovered: false`.
    fn epoch_changed(&mut self, epoch: Arc<str>, head: u64) {
        tracing::warn!(channel = %self.channel, %epoch, "channel epoch changed: history was lost");
        for (outbox, start) in self.subscribers.values_mut() {
            let notice = Control::Subscribed(Subscribed {
                timestamp: now_timestamp(),
                id: None,
                channel: self.channel.to_string(),
                seq: head,
                epoch: epoch.to_string(),
                recovered: Some(false),
            });
            outbox.push(Outbound::control(control(notice)));
            *start = head;
        }
        self.epoch = Some(epoch);
        self.head = head;
    }
}

impl Engine for RedisEngine {
    fn publish(&self, new: NewPublication) -> BoxFuture<'_, Result<Accepted, PublishError>> {
        Box::pin(self.inner.publish(new))
    }

    fn subscribe(&self, request: SubscribeRequest) {
        let inner = &self.inner;
        let mut channels = lock(&inner.channels);
        let handle = channels.entry(request.channel.clone()).or_insert_with(|| {
            let id = inner.next_actor.fetch_add(1, Ordering::Relaxed);
            let (inbox, input) = mpsc::unbounded_channel();
            let (done, ready) = oneshot::channel();
            let _ = inner.pubsub.send(PubSubCommand::Subscribe { channel: request.channel.clone(), actor: id, inbox: inbox.clone(), done });
            let actor = Actor { engine: inner.clone(), channel: request.channel.as_str().into(), subscribers: HashMap::new(), epoch: None, head: 0 };
            tokio::spawn(actor.run(input, ready));
            Handle { id, inbox, members: HashSet::new() }
        });
        if handle.members.insert(request.connection) {
            inner.shared.metrics.subscriptions.inc();
        }
        let _ = handle.inbox.send(Input::Subscribe(request));
        inner.shared.metrics.channels.set(channels.len() as i64);
    }

    fn unsubscribe(&self, connection: u64, channel: &str, reply: Option<Reply>) -> bool {
        let inner = &self.inner;
        let mut channels = lock(&inner.channels);
        let member = channels.get_mut(channel).filter(|h| h.members.contains(&connection));
        let Some(handle) = member else {
            if let Some((outbox, message)) = reply {
                outbox.push(Outbound::control(message));
            }
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
                infos.push(ChannelInfo { channel, subscribers, seq: seq.unwrap_or(0), epoch: epoch.unwrap_or_default(), history });
            }
            infos.sort_by(|a, b| a.channel.cmp(&b.channel));
            infos
        })
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_payloads_parse() {
        let d = parse_delivered(b"ep-1\n42\n5\nOANDA{\"type\":\"x\"}").unwrap();
        assert_eq!((&*d.epoch, d.seq, d.key.as_deref(), d.message.as_str()), ("ep-1", 42, Some("OANDA"), "{\"type\":\"x\"}"));
        let d = parse_delivered(b"e\n1\n0\n{}").unwrap();
        assert_eq!(d.key, None);
        for bad in [&b"e\n1\n9\nab"[..], b"e\nx\n0\n{}", b"e\n1", b"\xff\n1\n0\n{}"] {
            assert!(parse_delivered(bad).is_none());
        }
    }

    #[test]
    fn keys_share_a_hash_tag() {
        let keys = Keys::new("tw", "lp-performance");
        assert_eq!(keys.seq, "tw:{lp-performance}:seq");
        assert_eq!(keys.hist, "tw:{lp-performance}:hist");
        assert_eq!(keys.pubsub, "tw:pub:lp-performance");
    }
}
