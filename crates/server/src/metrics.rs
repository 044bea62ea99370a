//! Prometheus metrics, named `tidewire_*`, one registry per hub.
//!
//! A registry per hub (rather than a process-global recorder) keeps embedded hubs and
//! parallel tests from mixing their numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A close code as a label: the codes of RFC 6455 and tidewire's table by number,
/// anything else (a client may send any code from 3000 to 4999) as `other`, so a client
/// cannot create label values at will.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

impl CodeLabel {
    pub fn of(code: u16) -> CodeLabel {
        static LABELS: std::sync::OnceLock<std::collections::HashMap<u16, &'static str>> = std::sync::OnceLock::new();
        let labels = LABELS.get_or_init(|| {
            let standard = 1000..=1015;
            let table = tidewire_protocol::CloseCode::TABLE.iter().map(|row| row.code.0);
            // A few dozen strings made once for the process's life.
            standard.chain(table).map(|code| (code, &*Box::leak(code.to_string().into_boxed_str()))).collect()
        });
        CodeLabel { code: labels.get(&code).copied().unwrap_or("other") }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabel {
    pub source: String,
    pub outcome: &'static str,
}

/// One ingest source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// One partition of a source that reads partitioned logs (Kafka).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub source: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub code: &'static str,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub subscriptions: Gauge,
    pub channels: Gauge,
    pub keys: Gauge,
    pub publish_limiters: Gauge,
    pub published: Counter,
    pub duplicates: Counter,
    pub delivered: Counter,
    pub dropped: Family<ReasonLabel, Counter>,
    pub frames_sent: Counter,
    pub batch_size: Histogram,
    pub publish_to_write_seconds: Histogram,
    pub disconnects: Family<CodeLabel, Counter>,
    pub auth_failures: Family<ErrorLabel, Counter>,
    pub rate_limited: Counter,
    pub refused_connections: Family<ReasonLabel, Counter>,
    pub http_connections: Gauge,
    /// Open HTTP fallback sessions (each also counted in `connections`).
    pub http_sessions: Gauge,
    pub command_errors: Family<ErrorLabel, Counter>,
    pub ingest_events: Family<IngestLabel, Counter>,
    /// Messages a Kafka source has yet to commit, per assigned partition.
    pub ingest_consumer_lag: Family<PartitionLabel, Gauge>,
    /// Partitions a Kafka source holds in its consumer group.
    pub ingest_partitions: Family<SourceLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tidewire");
        let batch_buckets = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
        let latency_buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.016, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let metrics = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            subscriptions: Gauge::default(),
            channels: Gauge::default(),
            keys: Gauge::default(),
            publish_limiters: Gauge::default(),
            published: Counter::default(),
            duplicates: Counter::default(),
            delivered: Counter::default(),
            dropped: Family::default(),
            frames_sent: Counter::default(),
            batch_size: Histogram::new(batch_buckets),
            publish_to_write_seconds: Histogram::new(latency_buckets),
            disconnects: Family::default(),
            auth_failures: Family::default(),
            rate_limited: Counter::default(),
            refused_connections: Family::default(),
            http_connections: Gauge::default(),
            http_sessions: Gauge::default(),
            command_errors: Family::default(),
            ingest_events: Family::default(),
            ingest_consumer_lag: Family::default(),
            ingest_partitions: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open WebSocket connections", metrics.connections.clone());
        registry.register("connections_accepted", "WebSocket connections accepted", metrics.connections_total.clone());
        registry.register("subscriptions", "Active channel subscriptions", metrics.subscriptions.clone());
        registry.register("channels", "Channels with state on this node", metrics.channels.clone());
        registry.register(
            "channel_keys",
            "Latest values kept for snapshots, all channels together (in-memory engine)",
            metrics.keys.clone(),
        );
        registry.register(
            "publish_limiters",
            "Channels with publish-rate state (swept when back to a full bucket)",
            metrics.publish_limiters.clone(),
        );
        registry.register("messages_published", "Publications accepted", metrics.published.clone());
        registry.register(
            "duplicate_publishes",
            "Publishes answered with an earlier publication's seq (same idempotency key)",
            metrics.duplicates.clone(),
        );
        registry.register("messages_delivered", "Publications queued to subscribers", metrics.delivered.clone());
        registry.register(
            "messages_dropped",
            "Publications dropped for a subscriber, by reason",
            metrics.dropped.clone(),
        );
        registry.register("frames_sent", "Frames written to clients", metrics.frames_sent.clone());
        registry.register("batch_size", "Messages per frame", metrics.batch_size.clone());
        registry.register(
            "publish_to_write_seconds",
            "Time from a publication's acceptance to the write of the frame that carries it",
            metrics.publish_to_write_seconds.clone(),
        );
        registry.register("disconnects", "Connections closed, by close code", metrics.disconnects.clone());
        registry.register("auth_failures", "Refused tokens, by error code", metrics.auth_failures.clone());
        registry.register("rate_limited_commands", "Commands refused by the rate limit", metrics.rate_limited.clone());
        registry.register(
            "connections_refused",
            "Connections refused by a limit (http_node, http_address: at accept; \
             node, user, anonymous, address: sessions)",
            metrics.refused_connections.clone(),
        );
        registry.register(
            "http_connections",
            "Open HTTP connections that are not WebSockets",
            metrics.http_connections.clone(),
        );
        registry.register(
            "http_sessions",
            "Open HTTP fallback sessions (GET /http/stream), each also counted as a connection",
            metrics.http_sessions.clone(),
        );
        registry.register("command_errors", "Error replies to commands, by error code", metrics.command_errors.clone());
        registry.register(
            "ingest_events",
            "Broker events, by source and outcome (published, dead_lettered, retried)",
            metrics.ingest_events.clone(),
        );
        registry.register(
            "ingest_consumer_lag",
            "Messages between a Kafka source's committed offset and the end of each partition it holds",
            metrics.ingest_consumer_lag.clone(),
        );
        registry.register(
            "ingest_partitions",
            "Partitions a Kafka source holds in its consumer group",
            metrics.ingest_partitions.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The OpenMetrics text exposition (`# TYPE x counter`, samples `x_total`, `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
