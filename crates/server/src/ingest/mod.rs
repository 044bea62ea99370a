//! Ingest: events from the brokers users already run, routed to channels.
//!
//! `--ingest FILE` names a routing file (TOML) with sources and routes:
//!
//! ```toml
//! [[amqp]]                        # RabbitMQ (AMQP 0.9.1)
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//! exchange = "freqsearch_events"  # declared if missing (topic, durable)
//! queue = "tidewire.events"       # durable; dead letters go to "<exchange>.dead" → "<queue>.dead"
//! bindings = ["#"]
//!
//! [[nats]]
//! url = "nats://127.0.0.1:4222"
//! subject = "events.>"
//! jetstream = { stream = "EVENTS", durable = "tidewire" }   # omit for core NATS
//!
//! [[postgres]]                   # a transactional outbox table (see `postgres.rs`)
//! url = "postgres://app@127.0.0.1:5432/app"
//! table = "tidewire_outbox"       # created if missing, with tidewire_outbox_dead
//!
//! [[kafka]]                      # a consumer group member (see `kafka.rs`)
//! brokers = ["127.0.0.1:9092"]
//! topics = ["market-data.*"]
//! group = "tidewire"
//!
//! [[route]]
//! when_field = "assessmentId"
//! channel = "assessment#{assessmentId}"
//!
//! [[route]]
//! when_key = "#"
//! channel = "events"
//! ```
//!
//! Delivery is at least once where the broker allows it: an AMQP message and a
//! JetStream message are acknowledged only after the node accepted the publication, so
//! a node that stops or fails to publish (Redis down) gets them redelivered. Events no
//! route can publish go to a dead-letter path (an AMQP dead-letter exchange and queue, a
//! NATS subject) with the reason, and are counted. Core NATS is at most once by nature.
//! An outbox row is deleted in the transaction that follows its publication, and
//! publish it twice. A Kafka message's offset is committed only after the node accepted
//! it, and what a node reads again after a crash or a rebalance carries the idempotency
//! key of its partition and offset, so it is published once. Sources reconnect with
//! exponential backoff.

mod amqp;
pub mod kafka;
mod nats;
pub mod postgres;
pub mod routing;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tidewire_protocol::ErrorCode;

use crate::hub::Hub;
use crate::metrics::IngestLabel;
use routing::Route;

fn default_backoff_min() -> Duration {
    Duration::from_millis(500)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

mod duration_text {
    use serde::{Deserialize, Deserializer};
    /// Durations in the routing file read as on the command line (`100ms`, `30s`).
    pub fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        crate::config::duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An AMQP source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSource {
    #[serde(default = "default_name")]
    pub name: String,
    pub url: String,
    pub exchange: String,
    #[serde(default = "default_exchange_type")]
    pub exchange_type: String,
    pub queue: String,
    #[serde(default = "default_bindings")]
    pub bindings: Vec<String>,
    /// Defaults to `<exchange>.dead`; its queue is `<queue>.dead`.
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    #[serde(default = "default_backoff_min", deserialize_with = "duration_text::parse")]
    pub reconnect_delay: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "duration_text::parse")]
    pub max_reconnect_wait: Duration,
}

/// JetStream settings of a NATS source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStream {
    pub stream: String,
    pub durable: String,
}

/// A NATS source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSource {
    #[serde(default = "default_name")]
    pub name: String,
    pub url: String,
    pub subject: String,
    #[serde(default)]
    pub queue_group: Option<String>,
    #[serde(default)]
    pub jetstream: Option<JetStream>,
    /// Where unroutable events go (default `tidewire.dead`).
    #[serde(default = "default_dead_subject")]
    pub dead_letter_subject: String,
    #[serde(default = "default_backoff_min", deserialize_with = "duration_text::parse")]
    pub reconnect_delay: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "duration_text::parse")]
    pub max_reconnect_wait: Duration,
}

/// A PostgreSQL outbox source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    #[serde(default = "default_name")]
    pub name: String,
    /// A libpq-style URL or key=value string (`postgres://user@host:5432/db`).
    pub url: String,
    /// The outbox table (a plain lowercase identifier of at most 40 characters); its
    /// dead letters go to `<table>_dead`.
    #[serde(default = "default_outbox_table")]
    pub table: String,
    /// Create the tables and the notifying trigger when missing.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Rows taken per transaction.
    #[serde(default = "default_outbox_batch")]
    pub batch: u32,
    /// How often to look without a notification.
    #[serde(default = "default_poll_interval", deserialize_with = "duration_text::parse")]
    pub poll_interval: Duration,
    /// Times a row may fail to publish (the node could not take it) before it is
    /// dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    #[serde(default = "default_backoff_min", deserialize_with = "duration_text::parse")]
    pub reconnect_delay: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "duration_text::parse")]
    pub max_reconnect_wait: Duration,
}

/// Where a new consumer group starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest message the broker keeps.
    Earliest,
    /// Only what arrives after the group first joins.
    Latest,
}

/// A Kafka source (see `kafka.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    #[serde(default = "default_name")]
    pub name: String,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic names, or patterns in the routing keys' syntax (`market-data.*`,
    /// `trading.#`), or regular expressions starting with `^`.
    pub topics: Vec<String>,
    /// The consumer group: nodes in one group share the partitions.
    pub group: String,
    /// Where a group with no committed offset starts (also where a partition restarts
    /// when its committed offset is no longer kept): `earliest`, the default, skips
    /// nothing.
    #[serde(default = "default_start")]
    pub start: StartPosition,
    /// Where unpublishable messages go, with the reason in a header.
    #[serde(default = "default_dead_topic")]
    pub dead_letter_topic: String,
    /// Create the dead-letter topic when missing (one partition, the broker's
    /// replication).
    #[serde(default = "default_true")]
    pub create_dead_letter_topic: bool,
    /// How often offsets of published messages are committed.
    #[serde(default = "default_commit_interval", deserialize_with = "duration_text::parse")]
    pub commit_interval: Duration,
    /// How often the consumer lag is measured.
    #[serde(default = "default_lag_interval", deserialize_with = "duration_text::parse")]
    pub lag_interval: Duration,
    /// Times a message the node refuses for now is tried before it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// Bytes the client may hold fetched ahead of the node, all partitions together.
    #[serde(default = "default_kafka_prefetch_bytes")]
    pub max_prefetch_bytes: u32,
    /// Further librdkafka settings (security, timeouts), applied last.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_backoff_min", deserialize_with = "duration_text::parse")]
    pub reconnect_delay: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "duration_text::parse")]
    pub max_reconnect_wait: Duration,
}

fn default_start() -> StartPosition {
    StartPosition::Earliest
}
fn default_dead_topic() -> String {
    "tidewire.dead".to_owned()
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_lag_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_kafka_prefetch_bytes() -> u32 {
    16 << 20
}

fn default_outbox_table() -> String {
    "tidewire_outbox".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_outbox_batch() -> u32 {
    100
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_attempts() -> i32 {
    10
}

fn default_name() -> String {
    "ingest".to_owned()
}
fn default_exchange_type() -> String {
    "topic".to_owned()
}
fn default_bindings() -> Vec<String> {
    vec!["#".to_owned()]
}
fn default_prefetch() -> u16 {
    256
}
fn default_dead_subject() -> String {
    "tidewire.dead".to_owned()
}

/// The routing file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default)]
    pub amqp: Vec<AmqpSource>,
    #[serde(default)]
    pub nats: Vec<NatsSource>,
    #[serde(default)]
    pub postgres: Vec<PostgresSource>,
    #[serde(default)]
    pub kafka: Vec<KafkaSource>,
    #[serde(default)]
    pub route: Vec<Route>,
}

/// A routing file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read the routing file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the routing file {path} is invalid: {message}")]
    Invalid { path: String, message: String },
}

impl IngestConfig {
    pub fn load(path: &Path) -> Result<IngestConfig, IngestError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| IngestError::Read { path: shown.clone(), source })?;
        let config: IngestConfig =
            toml::from_str(&text).map_err(|e| IngestError::Invalid { path: shown.clone(), message: e.to_string() })?;
        if config.route.is_empty() && (!config.amqp.is_empty() || !config.nats.is_empty() || !config.kafka.is_empty()) {
            return Err(IngestError::Invalid {
                path: shown,
                message: "sources need at least one [[route]]".to_owned(),
            });
        }
        config.check().map_err(|message| IngestError::Invalid { path: shown, message })?;
        Ok(config)
    }

    /// What the file cannot mean (whatever loaded it).
    pub fn check(&self) -> Result<(), String> {
        for source in &self.postgres {
            if !postgres::valid_table_name(&source.table) {
                return Err(format!(
                    "[[postgres]] table {:?}: a lowercase identifier (a-z, 0-9, _) of at most {} characters",
                    source.table,
                    postgres::MAX_TABLE_NAME
                ));
            }
            if source.batch == 0 || source.max_attempts < 1 {
                return Err(format!("[[postgres]] {}: batch and max_attempts must be at least 1", source.name));
            }
        }
        for source in &self.kafka {
            kafka::check(source).map_err(|message| format!("[[kafka]] {}: {message}", source.name))?;
        }
        Ok(())
    }
}

/// The header that carries why an event was dead-lettered (NATS and AMQP alike).
pub const DEAD_LETTER_REASON_HEADER: &str = "Tidewire-Dead-Letter-Reason";

/// A dead-letter reason as a header value: no control characters, at most 200 characters.
fn header_reason(reason: &str) -> String {
    reason.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Published: acknowledge.
    Published,
    /// Never publishable: dead-letter it (with the reason) and acknowledge.
    DeadLetter(String),
    /// The node refused it for now (a publish rate, an internal error): redeliver later,
    /// a limited number of times where the source counts them.
    Retry(String),
    /// The node cannot publish anything now (the broker behind the hub is down): redeliver
    /// later, without counting it against the event.
    Unavailable(String),
}

/// Routes and publishes one event.
pub async fn deliver(hub: &Hub, routes: &[Route], source: &str, key: &str, payload: &[u8]) -> Outcome {
    deliver_publication(hub, source, key, routing::route(routes, key, payload).map_err(|e| e.to_string())).await
}

/// Publishes what an event became (or dead-letters why it could not become one), and
/// counts the outcome.
pub async fn deliver_publication(
    hub: &Hub,
    source: &str,
    key: &str,
    routed: Result<tidewire_protocol::NewPublication, String>,
) -> Outcome {
    let outcome = match routed {
        Err(unroutable) => Outcome::DeadLetter(unroutable),
        Ok(publication) => match hub.publish(publication).await {
            Ok(_) => Outcome::Published,
            Err(e) if e.code == ErrorCode::Unavailable => Outcome::Unavailable(e.to_string()),
            // The node is full of channels, or refused for now: not the event's fault for good.
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::InternalError | ErrorCode::RateLimitExceeded | ErrorCode::TooManyChannels
                ) =>
            {
                Outcome::Retry(e.to_string())
            }
            Err(e) => Outcome::DeadLetter(e.to_string()),
        },
    };
    let label = match &outcome {
        Outcome::Published => "published",
        Outcome::DeadLetter(reason) => {
            tracing::warn!(source, key, reason, "event dead-lettered");
            "dead_lettered"
        }
        Outcome::Retry(reason) | Outcome::Unavailable(reason) => {
            tracing::debug!(source, key, reason, "event will be redelivered");
            "retried"
        }
    };
    hub.metrics().ingest_events.get_or_create(&IngestLabel { source: source.to_owned(), outcome: label }).inc();
    outcome
}

/// Starts every source of the routing file; they run until the node drains, and the
/// handles end when they have (a Kafka source's last commit included).
pub fn start(hub: &Hub, config: IngestConfig) -> Vec<tokio::task::JoinHandle<()>> {
    let routes: std::sync::Arc<[Route]> = config.route.into();
    let mut tasks = Vec::new();
    for source in config.amqp {
        tasks.push(tokio::spawn(amqp::run(hub.clone(), source, routes.clone())));
    }
    for source in config.nats {
        tasks.push(tokio::spawn(nats::run(hub.clone(), source, routes.clone())));
    }
    for source in config.postgres {
        tasks.push(tokio::spawn(postgres::run(hub.clone(), source, routes.clone())));
    }
    for source in config.kafka {
        tasks.push(tokio::spawn(kafka::run(hub.clone(), source, routes.clone())));
    }
    tasks
}

/// Exponential backoff between reconnects, cut short by the node draining.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { next: min, min, max }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Waits before the next attempt; false when the node is draining.
    pub async fn wait(&mut self, hub: &Hub) -> bool {
        let delay = self.next.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.next = (self.next * 2).min(self.max);
        let shutdown = hub.shutdown_token();
        tokio::select! {
            () = tokio::time::sleep(delay) => !hub.is_draining(),
            () = shutdown.cancelled() => false,
        }
    }
}
