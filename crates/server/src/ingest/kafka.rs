//! The Kafka source: a consumer group member that routes each message and commits its
//! offset only once the node has taken what it carried.
//!
//! ```toml
//! [[kafka]]
//! brokers = ["127.0.0.1:9092"]
//! topics = ["market-data.*", "trading.#", "alerts"]  # routing-key patterns, names, or ^regex
//! group = "tidewire"
//! start = "earliest"                # where a new group starts: "earliest" or "latest"
//! dead_letter_topic = "tidewire.dead"
//! ```
//!
//! **Why librdkafka** (through `rdkafka`): a source that shares partitions between nodes
//! needs the whole consumer-group protocol (join, sync, heartbeats, rebalances, offset
//! commits on revoke), and librdkafka is the implementation every Kafka deployment has
//! already met; the pure-Rust clients stop short of it (`rskafka` reads partitions but
//! has no groups, `kafka` stores group offsets but has no membership). Its C source is
//! vendored by `rdkafka-sys` and built with the node, zlib included, so the static musl
//! binary of the container stays static; TLS and SASL are left out of this build.
//!
//! **Delivery**: automatic offset storing is off, so librdkafka commits (every
//! `commit_interval`, on a rebalance and on drain) only the offsets this source stored,
//! and it stores a message's offset after the node accepted the publication or the
//! dead-letter topic took the message. A node that stops, crashes or loses a partition
//! in a rebalance leaves the messages after its last commit to be read again: at least
//! once. Those repeats are published with the idempotency key
//! `kafka:<partition>:<offset>:<hash of cluster id and topic>` (a prefix clients may not
//! use), so within the hub's idempotency window a message read twice, by this node or
//! another, is published once.
//!
//! **Order**: messages are handled one at a time, in the order the client hands them
//! over, which keeps each partition's order and so the order of every channel fed
//! from one partition. A message the node refuses for now (a publish rate) is tried
//! again, with backoff, before anything behind it, and dead-lettered after
//! `max_attempts`; while the broker behind the hub is down it waits, uncounted.
//!
//! **Dead letters**: a message no route can publish, or the hub refuses for good (not
//! JSON, too large, an invalid channel), goes to `dead_letter_topic` with its key, its
//! payload and the headers `Tidewire-Dead-Letter-Reason`, `Tidewire-Source-Topic`,
//! `-Partition` and `-Offset`; one too large for the dead-letter topic goes without its
//! payload (then its key), and one the topic keeps refusing is skipped after
//! `max_attempts`, logged and counted, so a bad message never blocks the partition
//! behind it for good. The subscription never includes the dead-letter topic or
//! Kafka's internal `__` topics.
//!
//! **Bounds**: the client fetches ahead at most `max_prefetch_bytes` for all partitions
//! together; consumer lag per assigned partition is exported every `lag_interval` as
//! `tidewire_ingest_consumer_lag`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Message, TopicPartitionList};

use super::routing::{self, Route};
use super::{Backoff, KafkaSource, Outcome, StartPosition};
use crate::hub::Hub;
use crate::metrics::{IngestLabel, PartitionLabel, SourceLabel};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;

/// Runs the source until the node drains.
pub async fn run(hub: Hub, source: KafkaSource, routes: Arc<[Route]>) {
    let mut backoff = Backoff::new(source.reconnect_delay, source.max_reconnect_wait);
    loop {
        match consume(&hub, &source, &routes, &mut backoff).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(source = %source.name, "Kafka source failed: {e}; starting again"),
        }
        if !backoff.wait(&hub).await {
            return;
        }
    }
}

/// What a `[[kafka]]` entry cannot mean.
pub fn check(source: &KafkaSource) -> Result<(), String> {
    if source.brokers.is_empty() || source.brokers.iter().any(|b| b.trim().is_empty() || b.contains(',')) {
        return Err("brokers: one or more host:port entries".to_owned());
    }
    if source.topics.is_empty() {
        return Err("topics: at least one topic or pattern".to_owned());
    }
    for topic in &source.topics {
        subscription(topic)?;
    }
    if !valid_topic_name(&source.dead_letter_topic) {
        return Err(format!("dead_letter_topic {:?} is not a topic name", source.dead_letter_topic));
    }
    if source.topics.iter().any(|t| t == &source.dead_letter_topic) {
        return Err(format!("topics name the dead_letter_topic {:?}", source.dead_letter_topic));
    }
    if let Some(own) = source.properties.keys().find(|name| OWN_PROPERTIES.contains(&name.as_str())) {
        return Err(format!("properties: {own:?} is set by the source itself (see its own settings)"));
    }
    if source.group.is_empty() {
        return Err("group must not be empty".to_owned());
    }
    if source.commit_interval.is_zero() || source.lag_interval.is_zero() {
        return Err("commit_interval and lag_interval must be more than zero".to_owned());
    }
    if source.max_attempts < 1 {
        return Err("max_attempts must be at least 1".to_owned());
    }
    if source.max_prefetch_bytes < 1 << 20 {
        return Err("max_prefetch_bytes must be at least 1 MiB".to_owned());
    }
    // librdkafka knows its own settings: one it refuses is refused now, not at every
    // reconnect.
    consumer_config(source).create::<BaseConsumer>().map(drop).map_err(|e| format!("properties: {e}"))
}

/// Whether `name` is a topic name Kafka accepts.
fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A `topics` entry as librdkafka subscribes to it: a name as it is, a regular
/// expression (`^…`) as it is, and a routing-key pattern (`*` one dot-separated token,
/// `#` or `>` the rest, as in `when_key`) as the regular expression that means the same.
pub fn subscription(entry: &str) -> Result<String, String> {
    if entry.starts_with('^') {
        return Ok(entry.to_owned());
    }
    let tokens: Vec<&str> = entry.split('.').collect();
    if !tokens.iter().any(|t| matches!(*t, "*" | "#" | ">")) {
        return if valid_topic_name(entry) {
            Ok(entry.to_owned())
        } else {
            Err(format!("{entry:?} is not a topic name"))
        };
    }
    let mut regex = String::from("^");
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "#" | ">" if i + 1 == tokens.len() => {
                // The rest, none included: `trading.#` is `trading` and `trading.…`.
                regex.push_str(if i == 0 { ".*" } else { "(\\..+)?" });
                return Ok(regex + "$");
            }
            "#" | ">" => return Err(format!("{entry:?}: `#` and `>` stand only at the end of a pattern")),
            token => {
                if i > 0 {
                    regex.push_str("\\.");
                }
                if token == "*" {
                    regex.push_str("[^.]+");
                } else if !token.is_empty() && valid_topic_name(token) {
                    regex.push_str(token);
                } else {
                    return Err(format!("{entry:?}: {token:?} is not part of a topic name"));
                }
            }
        }
    }
    Ok(regex + "$")
}

/// The idempotency key a message is published with: one per message of a topic of a
/// cluster, whoever reads it: `kafka:<partition>:<offset>:<hash of cluster and topic>`,
/// within the 64 bytes a key may have. (A client may not publish keys starting with
/// `kafka:`.)
pub fn idempotency_key(cluster: &str, topic: &str, partition: i32, offset: i64) -> String {
    // FNV-1a: stable across builds and nodes, which a std hasher does not promise.
    let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    let hash = cluster.bytes().chain([0]).chain(topic.bytes()).fold(0xcbf2_9ce4_8422_2325_u64, fnv);
    format!("kafka:{partition}:{offset}:{hash:016x}")
}

/// Settings the source sets itself, from its own fields: `properties` may not change them.
const OWN_PROPERTIES: [&str; 8] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "statistics.interval.ms",
    "queued.max.messages.kbytes",
    "topic.blacklist",
];

/// The source's `properties`, last, on any of its clients (security settings apply to
/// all three; librdkafka ignores, with a warning, what another client kind uses).
fn with_properties(mut config: ClientConfig, source: &KafkaSource) -> ClientConfig {
    for (name, value) in &source.properties {
        config.set(name, value);
    }
    config
}

/// A regular expression matching exactly `topic` (librdkafka's syntax: `.` escaped).
fn exactly(topic: &str) -> String {
    format!("^{}$", topic.replace('.', "\\."))
}

fn common_config(source: &KafkaSource) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", source.brokers.join(","))
        .set("client.id", format!("tidewire-{}", source.name))
        .set("reconnect.backoff.ms", millis(source.reconnect_delay))
        .set("reconnect.backoff.max.ms", millis(source.max_reconnect_wait.max(source.reconnect_delay)));
    config
}

fn consumer_config(source: &KafkaSource) -> ClientConfig {
    let mut config = common_config(source);
    config
        .set("group.id", &source.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", millis(source.commit_interval))
        .set(
            "auto.offset.reset",
            match source.start {
                StartPosition::Earliest => "earliest",
                StartPosition::Latest => "latest",
            },
        )
        .set("statistics.interval.ms", millis(source.lag_interval))
        // Brokers that hold a fetch for its whole wait (tansu does) would otherwise hand
        // over half a second of messages at once: a burst subscribers feel.
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", (source.max_prefetch_bytes / 1024).to_string())
        // Never Kafka's internal topics, never the dead letters (a pattern that matched
        // them would feed the dead letters back in).
        .set("topic.blacklist", format!("^__.*,{}", exactly(&source.dead_letter_topic)));
    with_properties(config, source)
}

fn millis(duration: Duration) -> String {
    duration.as_millis().clamp(1, i32::MAX as u128).to_string()
}

/// The consumer's context: rebalances logged, and the lag of each partition it holds
/// exported from librdkafka's statistics.
struct Context {
    hub: Hub,
    source: String,
}

impl Context {
    fn label(&self, topic: &str, partition: i32) -> PartitionLabel {
        PartitionLabel { source: self.source.clone(), topic: topic.to_owned(), partition }
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let lag = &self.hub.metrics().ingest_consumer_lag;
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                // -1 is librdkafka's "unassigned partition" queue; a lag of -1 is unknown.
                if partition < 0 {
                    continue;
                }
                if p.consumer_lag >= 0 {
                    lag.get_or_create(&self.label(topic, partition)).set(p.consumer_lag);
                } else {
                    lag.remove(&self.label(topic, partition));
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(source = %self.source, "Kafka: {error}: {reason}");
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let held = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        let source = SourceLabel { source: self.source.clone() };
        self.hub.metrics().ingest_partitions.get_or_create(&source).set(i64::try_from(held).unwrap_or(i64::MAX));
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(source = %self.source, partitions = %describe(partitions), "Kafka partitions assigned")
            }
            Rebalance::Revoke(partitions) => {
                for p in partitions.elements() {
                    self.hub.metrics().ingest_consumer_lag.remove(&self.label(p.topic(), p.partition()));
                }
                tracing::info!(source = %self.source, partitions = %describe(partitions), "Kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(source = %self.source, "Kafka rebalance failed: {e}"),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(source = %self.source, offsets = %describe(offsets), "Kafka commit failed: {e}"),
        }
    }
}

fn describe(partitions: &TopicPartitionList) -> String {
    let parts: Vec<String> = partitions.elements().iter().map(|p| format!("{}/{}", p.topic(), p.partition())).collect();
    parts.join(",")
}

async fn consume(hub: &Hub, source: &KafkaSource, routes: &[Route], backoff: &mut Backoff) -> Result<(), Error> {
    let mut producer_config = common_config(source);
    // A dead letter carries the message whole: as large as the brokers' default limit.
    producer_config.set("message.timeout.ms", "30000").set("message.max.bytes", "1048588");
    let producer: OffThread<FutureProducer> = OffThread::new(with_properties(producer_config, source).create()?);
    if source.create_dead_letter_topic {
        create_topic(source, &source.dead_letter_topic).await?;
    }
    let context = Context { hub: hub.clone(), source: source.name.clone() };
    let consumer: OffThread<Arc<StreamConsumer<Context>>> =
        OffThread::new(Arc::new(consumer_config(source).create_with_context(context)?));
    let topics = source.topics.iter().map(|t| subscription(t)).collect::<Result<Vec<_>, _>>()?;
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    // The cluster's id goes into every idempotency key: two clusters' topics of one name
    // are two streams. Fetching it waits on the network, off the runtime.
    let client = Arc::clone(&consumer);
    // Without it, this node's keys would not match the other nodes': it starts again.
    let cluster = tokio::task::spawn_blocking(move || client.client().fetch_cluster_id(Duration::from_secs(10)))
        .await?
        .ok_or("the brokers did not tell their cluster id")?;
    tracing::info!(source = %source.name, topics = %topics.join(","), group = %source.group, "Kafka source consuming");
    backoff.reset();
    let shutdown = hub.shutdown_token();
    let dead = DeadLetters { producer: &producer, source };
    let mut failures = Backoff::new(Duration::from_millis(100), source.max_reconnect_wait);
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message,
            () = shutdown.cancelled() => break,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // The client reconnects by itself; pause so an error repeated at once
                // (no broker) is not a busy loop.
                tracing::warn!(source = %source.name, "Kafka consumer: {e}");
                if !failures.wait(hub).await {
                    break;
                }
                continue;
            }
        };
        failures.reset();
        if !handle(hub, source, routes, &dead, &cluster, &message).await {
            break;
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            // The partition went to another member in a rebalance: it reads this again.
            tracing::debug!(source = %source.name, "offset not stored: {e}");
        }
    }
    // Drain: commit what was taken, then leave the group (both block on the network), so
    // the partitions move to the other members at once.
    let consumer = consumer.into_inner();
    tokio::task::spawn_blocking(move || {
        if let Some(consumer) = consumer {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!("Kafka commit on drain failed: {e}"),
            }
            drop(consumer);
        }
    })
    .await?;
    Ok(())
}

/// A librdkafka handle dropped on a thread of its own: closing a consumer or a producer
/// waits on the network (leaving the group, flushing), which must not stall the runtime,
/// not even when the task holding it is cancelled.
struct OffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffThread<T> {
    fn new(handle: T) -> OffThread<T> {
        OffThread(Some(handle))
    }

    /// The handle, for a caller that closes it off the runtime itself.
    fn into_inner(mut self) -> Option<T> {
        self.0.take()
    }
}

impl<T: Send + 'static> std::ops::Deref for OffThread<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for OffThread<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let closing = std::thread::Builder::new().name("kafka-close".to_owned()).spawn(move || drop(handle));
            if let Err(e) = closing {
                tracing::warn!("cannot close a Kafka client off the runtime: {e}");
            }
        }
    }
}

/// Publishes (or dead-letters) one message; false when the node drains before it could.
async fn handle(
    hub: &Hub,
    source: &KafkaSource,
    routes: &[Route],
    dead: &DeadLetters<'_>,
    cluster: &str,
    message: &BorrowedMessage<'_>,
) -> bool {
    let topic = message.topic();
    if topic == source.dead_letter_topic {
        // Excluded from the subscription; should a broker hand one over anyway, it is
        // not fed back in.
        return true;
    }
    let payload = message.payload().unwrap_or_default();
    // A refusal for now (a publish rate) is retried briefly: the partition waits behind it.
    let mut retry = Backoff::new(Duration::from_millis(200), source.max_reconnect_wait.min(Duration::from_secs(2)));
    let mut attempts = 0;
    loop {
        let routed = routing::route(routes, topic, payload).map_err(|e| e.to_string()).map(|mut publication| {
            let key = idempotency_key(cluster, topic, message.partition(), message.offset());
            publication.idempotency_key = Some(key);
            publication
        });
        match super::deliver_publication(hub, &source.name, topic, routed).await {
            Outcome::Published => return true,
            Outcome::DeadLetter(reason) => return dead.send(hub, message, &reason).await,
            Outcome::Retry(reason) => {
                attempts += 1;
                if attempts >= source.max_attempts {
                    let reason = format!("not published after {attempts} attempts: {reason}");
                    return dead.send(hub, message, &reason).await;
                }
            }
            // Nothing can be published now: the message is not to blame, and waits uncounted.
            Outcome::Unavailable(_) => {}
        }
        if !retry.wait(hub).await {
            return false;
        }
    }
}

/// The dead-letter topic's producer.
struct DeadLetters<'a> {
    producer: &'a FutureProducer,
    source: &'a KafkaSource,
}

impl DeadLetters<'_> {
    /// Sends a message to the dead-letter topic; false when the node drains first. A
    /// message too large for the topic goes without its payload, then without its key; one
    /// the topic refuses `max_attempts` times is given up, logged as an error and counted
    /// (`outcome="dead_letter_failed"`), so a broken dead-letter topic cannot stop the
    /// partition for good.
    async fn send(&self, hub: &Hub, message: &BorrowedMessage<'_>, reason: &str) -> bool {
        let reason = super::header_reason(reason);
        let (partition, offset) = (message.partition().to_string(), message.offset().to_string());
        let (mut with_payload, mut with_key, mut attempts) = (true, true, 0);
        let mut retry =
            Backoff::new(Duration::from_millis(200), self.source.max_reconnect_wait.min(Duration::from_secs(5)));
        loop {
            let payload = if with_payload { message.payload() } else { None };
            let reason = if with_payload {
                reason.clone()
            } else {
                let size = message.payload_len();
                let key = message.key().map_or(0, <[u8]>::len);
                super::header_reason(&format!("{reason} (too large for this topic: payload {size} bytes, key {key})"))
            };
            let headers = OwnedHeaders::new()
                .insert(Header { key: super::DEAD_LETTER_REASON_HEADER, value: Some(reason.as_str()) })
                .insert(Header { key: "Tidewire-Source-Topic", value: Some(message.topic()) })
                .insert(Header { key: "Tidewire-Source-Partition", value: Some(partition.as_str()) })
                .insert(Header { key: "Tidewire-Source-Offset", value: Some(offset.as_str()) });
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.source.dead_letter_topic).headers(headers);
            if let Some(key) = message.key().filter(|_| with_key) {
                record = record.key(key);
            }
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if with_payload || with_key =>
                {
                    if with_payload {
                        with_payload = false;
                    } else {
                        with_key = false;
                    }
                }
                Err((e, _)) => {
                    attempts += 1;
                    if attempts >= self.source.max_attempts {
                        tracing::error!(
                            source = %self.source.name, topic = message.topic(), partition, offset, reason,
                            "cannot send a dead letter after {attempts} attempts ({e}): the message is skipped"
                        );
                        let label = IngestLabel { source: self.source.name.clone(), outcome: "dead_letter_failed" };
                        hub.metrics().ingest_events.get_or_create(&label).inc();
                        return true;
                    }
                    tracing::warn!(source = %self.source.name, "cannot send a dead letter: {e}; trying again");
                    if !retry.wait(hub).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// Creates a topic (one partition, the broker's default replication) unless it exists.
async fn create_topic(source: &KafkaSource, topic: &str) -> Result<(), Error> {
    let admin: OffThread<AdminClient<DefaultClientContext>> =
        OffThread::new(with_properties(common_config(source), source).create()?);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&[NewTopic::new(topic, 1, TopicReplication::Fixed(-1))], &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("cannot create the topic {name}: {code}").into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{idempotency_key, subscription};

    #[test]
    fn topic_patterns_read_as_the_routing_keys_do() {
        assert_eq!(subscription("alerts").unwrap(), "alerts");
        assert_eq!(subscription("^trading\\..*").unwrap(), "^trading\\..*");
        assert_eq!(subscription("market-data.*").unwrap(), "^market-data\\.[^.]+$");
        assert_eq!(subscription("trading.#").unwrap(), "^trading(\\..+)?$");
        assert_eq!(subscription("a.*.c.>").unwrap(), "^a\\.[^.]+\\.c(\\..+)?$");
        assert_eq!(subscription("#").unwrap(), "^.*$");
        assert!(subscription("a.#.b").is_err());
        assert!(subscription("a..*").is_err());
        assert!(subscription("bad topic").is_err());
        assert!(subscription("").is_err());
    }

    #[test]
    fn idempotency_keys_fit_and_differ_by_cluster_topic_partition_and_offset() {
        let limit = tidewire_protocol::command::MAX_IDEMPOTENCY_KEY_BYTES;
        let key = idempotency_key("cluster-a", "prices", 3, 42);
        assert!(key.starts_with("kafka:3:42:") && tidewire_protocol::command::is_reserved_idempotency_key(&key));
        assert_eq!(key, idempotency_key("cluster-a", "prices", 3, 42), "stable");
        let long = "t".repeat(249);
        let key = idempotency_key(&"c".repeat(200), &long, i32::MAX, i64::MAX);
        assert!(key.len() <= limit, "{key}");
        assert_ne!(key, idempotency_key(&"c".repeat(200), &format!("{long}x"), i32::MAX, i64::MAX));
        assert_ne!(idempotency_key("a", "t", 0, 1), idempotency_key("a", "t", 1, 0));
        assert_ne!(idempotency_key("a", "t", 0, 1), idempotency_key("b", "t", 0, 1));
        assert_ne!(idempotency_key("ab", "c", 0, 1), idempotency_key("a", "bc", 0, 1));
    }
}
