//! Every setting of the gateway, with its default, its flag and its `TIDEWIRE_*` variable.
//!
//! One struct serves the binary (clap parses flags and the environment into it) and the
//! library (`Config::default()` plus field updates). Durations are written the human way
//! (`16ms`, `25s`, `5m`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tidewire_protocol::batch::{BatchConfig, DEFAULT_MAX_QUEUED_BYTES};
use tidewire_protocol::channel::ChannelPattern;
use tidewire_protocol::message::Limits;

/// The JWT algorithms a deployment may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `--jwt-secret`.
    #[value(name = "HS256")]
    Hs256,
    /// RSA with `--jwt-public-key` (PEM).
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with `--jwt-public-key` (PEM).
    #[value(name = "ES256")]
    Es256,
    /// Ed25519 with `--jwt-public-key` (PEM).
    #[value(name = "EdDSA")]
    EdDsa,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A per-channel publish rate limit: channels matching `pattern` accept `burst`
/// publications at once and `per_minute` sustained, each channel counted on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRateLimit {
    pub pattern: ChannelPattern,
    pub burst: u32,
    pub per_minute: u32,
}

impl std::str::FromStr for PublishRateLimit {
    type Err = String;

    /// `pattern=burst/per_minute`, e.g. `prices.*=1000/100`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("{text:?}: write PATTERN=BURST/PER_MINUTE, e.g. prices.*=1000/100");
        let (pattern, rate) = text.split_once('=').ok_or_else(usage)?;
        let (burst, per_minute) = rate.split_once('/').ok_or_else(usage)?;
        let pattern = ChannelPattern::parse(pattern.trim()).map_err(|e| format!("{}: {e}", usage()))?;
        let number = |n: &str| n.trim().parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(usage);
        Ok(PublishRateLimit { pattern, burst: number(burst)?, per_minute: number(per_minute)? })
    }
}

/// A channel pattern (`prefix.*` or an exact name).
fn channel_pattern(text: &str) -> Result<ChannelPattern, String> {
    ChannelPattern::parse(text.trim()).map_err(|e| format!("{text:?}: {e}"))
}

/// An address or a CIDR range.
fn proxy_range(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range (e.g. 10.0.0.0/8)"))
}

pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write durations like 16ms, 25s, 5m)"))
}

/// Gateway settings. See `tidewire serve --help` for each one.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TIDEWIRE_LISTEN", default_value = "0.0.0.0:7999")]
    pub listen: SocketAddr,

    /// HS256 secret that signs tokens (required with --jwt-algorithm HS256).
    #[arg(long, env = "TIDEWIRE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file for RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "TIDEWIRE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// The only JWT algorithm accepted (`alg: none` never is).
    #[arg(long, env = "TIDEWIRE_JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,

    /// Required `aud` claim, when set.
    #[arg(long, env = "TIDEWIRE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "TIDEWIRE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Browser origins allowed to connect, comma-separated (`*` allows any, with a warning).
    /// The server's own origin is always allowed; requests without an Origin header are
    /// not from browsers and are allowed.
    #[arg(long, env = "TIDEWIRE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Messages per frame.
    #[arg(long, env = "TIDEWIRE_MAX_BATCH", default_value_t = 50)]
    pub max_batch: usize,

    /// Minimum time between two frames to one client.
    #[arg(long, env = "TIDEWIRE_BATCH_INTERVAL", default_value = "16ms", value_parser = duration)]
    pub batch_interval: Duration,

    /// Frames' worth of publications queued per client before the oldest are dropped.
    #[arg(long, env = "TIDEWIRE_MAX_QUEUED_BATCHES", default_value_t = 10)]
    pub max_queued_batches: usize,

    /// Bytes the server may queue for one client (publications, replies, errors,
    /// snapshots, gap notices). Over it, the oldest publications are dropped (with gap
    /// notices); when what is left still exceeds it, the client is closed (4002).
    #[arg(long, env = "TIDEWIRE_MAX_QUEUED_BYTES", default_value_t = DEFAULT_MAX_QUEUED_BYTES)]
    pub max_queued_bytes: usize,

    /// Channels one connection may subscribe to.
    #[arg(long, env = "TIDEWIRE_MAX_CHANNELS", default_value_t = 128)]
    pub max_channels: usize,

    /// Largest inbound WebSocket message, in bytes (larger: close 1009).
    #[arg(long, env = "TIDEWIRE_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Largest publication `data`, in bytes of JSON (larger: MESSAGE_TOO_BIG).
    #[arg(long, env = "TIDEWIRE_MAX_PUBLICATION_BYTES", default_value_t = 65_536)]
    pub max_publication_bytes: usize,

    /// Inbound commands per second per connection (token bucket).
    #[arg(long, env = "TIDEWIRE_COMMANDS_PER_SECOND", default_value_t = 1000)]
    pub commands_per_second: u32,

    /// Commands a connection may send in one burst.
    #[arg(long, env = "TIDEWIRE_COMMAND_BURST", default_value_t = 200)]
    pub command_burst: u32,

    /// Per-channel publish limits, `PATTERN=BURST/PER_MINUTE` (repeat the flag, or separate
    /// with `;` in the variable); the first matching rule applies, each channel on its own
    /// budget. Over the limit: RATE_LIMIT_EXCEEDED (HTTP 429).
    #[arg(long = "publish-rate-limit", env = "TIDEWIRE_PUBLISH_RATE_LIMITS", value_delimiter = ';')]
    pub publish_rate_limits: Vec<PublishRateLimit>,

    /// Connections the node accepts in total (more: close 1013).
    #[arg(long, env = "TIDEWIRE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Connections one user (token subject) may hold (more: close 1013).
    #[arg(long, env = "TIDEWIRE_MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,

    /// Connections from one IP address (more: close 1013). Clients behind one NAT share it.
    #[arg(long, env = "TIDEWIRE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Open HTTP connections the node accepts in total, WebSocket handshakes included
    /// (an upgraded WebSocket counts as a connection instead). More are closed at once.
    #[arg(long, env = "TIDEWIRE_MAX_HTTP_CONNECTIONS", default_value_t = 10_000)]
    pub max_http_connections: usize,

    /// Open HTTP connections (not yet WebSockets) from one peer address; trusted proxies
    /// are exempt. More are closed at once.
    #[arg(long, env = "TIDEWIRE_MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_http_connections_per_ip: usize,

    /// Channel patterns (comma-separated, e.g. `public.*,status`) a connection without a
    /// token may subscribe to, read-only: public feeds. Empty (the default) refuses
    /// connections without a token (4500).
    #[arg(long, env = "TIDEWIRE_ANONYMOUS_CHANNELS", value_delimiter = ',', value_parser = channel_pattern)]
    pub anonymous_channels: Vec<ChannelPattern>,

    /// Connections without a token the node accepts, all together (more: close 1013);
    /// each also counts against `--max-connections-per-ip`.
    #[arg(long, env = "TIDEWIRE_MAX_ANONYMOUS_CONNECTIONS", default_value_t = 10_000)]
    pub max_anonymous_connections: usize,

    /// Proxies whose `X-Forwarded-For` is believed, as addresses or CIDR ranges,
    /// comma-separated (e.g. `10.0.0.0/8`). Behind them, per-IP limits count the client's
    /// address; without this, every client behind a proxy shares the proxy's.
    #[arg(long, env = "TIDEWIRE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = proxy_range)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Largest HTTP request body (`POST /api/publish`), in bytes (larger: 413).
    #[arg(long, env = "TIDEWIRE_MAX_HTTP_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_http_body_bytes: usize,

    /// Time allowed to send a request body, once its headers are in (longer: 408).
    #[arg(long, env = "TIDEWIRE_HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_body_timeout: Duration,

    /// Bytes of request bodies the node reads at once, all requests together; a request
    /// that would exceed it is answered 503 without reading its body.
    #[arg(long, env = "TIDEWIRE_MAX_HTTP_BODY_MEMORY", default_value_t = 64 << 20)]
    pub max_http_body_memory: usize,

    /// Publications in one `POST /api/publish` array (more: 400).
    #[arg(long, env = "TIDEWIRE_MAX_PUBLISH_BATCH", default_value_t = 100)]
    pub max_publish_batch: usize,

    /// WebSocket ping period, and the idle time after which a `heartbeat` message is sent.
    #[arg(long, env = "TIDEWIRE_HEARTBEAT_INTERVAL", default_value = "25s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// How long a pong may take before the connection is closed (4001).
    #[arg(long, env = "TIDEWIRE_PONG_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub pong_timeout: Duration,

    /// How long a frame write may block before the client is closed as slow (4000).
    #[arg(long, env = "TIDEWIRE_WRITE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,

    /// Kernel send buffer per connection in bytes (SO_SNDBUF); 0 leaves it to the
    /// kernel's autotuning (up to 4 MiB on Linux). It bounds the kernel memory a client
    /// that stops reading can hold, and how soon it is noticed: writes block once the
    /// buffer is full, and then the write timeout runs. 256 KiB carries 2.5 MB/s to a
    /// client 100 ms away. The kernel caps it at `net.core.wmem_max`.
    #[arg(long, env = "TIDEWIRE_SEND_BUFFER", default_value_t = 256 * 1024)]
    pub send_buffer: usize,

    /// Publications kept per channel for recovery.
    #[arg(long, env = "TIDEWIRE_HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,

    /// How long publications are kept for recovery.
    #[arg(long, env = "TIDEWIRE_HISTORY_TTL", default_value = "5m", value_parser = duration)]
    pub history_ttl: Duration,

    /// Distinct keys a channel keeps latest values for (its snapshot). A publication
    /// with a new key beyond it is refused (TOO_MANY_KEYS), as is one that would make the
    /// channel's latest values exceed half of --max-queued-bytes, so a snapshot always fits
    /// a subscriber's queue.
    #[arg(long, env = "TIDEWIRE_MAX_KEYS_PER_CHANNEL", default_value_t = 1000)]
    pub max_keys_per_channel: usize,

    /// Bytes the subscription filters (`options.types` and `options.keys`) of one
    /// connection may hold, all its channels together; a subscribe beyond it is refused
    /// (TOO_MANY_KEYS).
    #[arg(long, env = "TIDEWIRE_MAX_FILTER_BYTES", default_value_t = 64 * 1024)]
    pub max_filter_bytes: usize,

    /// The shortest interval between two updates of one key that a subscription's
    /// `options.minInterval` (`maxRate` in the JavaScript API) is granted; a shorter
    /// request is granted the shortest step of the protocol's ladder at least this.
    #[arg(long, env = "TIDEWIRE_MIN_SUBSCRIBER_INTERVAL", default_value = "20ms", value_parser = duration)]
    pub min_subscriber_interval: Duration,

    /// How long a channel's state (its head seq, epoch and latest values) outlives its
    /// last publication. After it, the channel starts again (a new epoch); in memory, a
    /// channel is kept while it has subscribers.
    #[arg(long, env = "TIDEWIRE_CHANNEL_TTL", default_value = "24h", value_parser = duration)]
    pub channel_ttl: Duration,

    /// How long a publication's idempotency key is remembered: the same key on the same
    /// channel within it is answered with the first publication's seq, not published
    /// again. Clients drop (and report) unacknowledged publishes older than this rather
    /// than resend them.
    #[arg(long, env = "TIDEWIRE_IDEMPOTENCY_WINDOW", default_value = "2m", value_parser = duration)]
    pub idempotency_window: Duration,

    /// Idempotency keys remembered per channel; beyond it the oldest are forgotten
    /// early (the window shrinks for a channel published faster than this per window).
    #[arg(long, env = "TIDEWIRE_IDEMPOTENCY_KEYS_PER_CHANNEL", default_value_t = 10_000)]
    pub idempotency_keys_per_channel: usize,

    /// Channels this node holds at once (with state or local subscribers). A new one
    /// beyond it is refused (TOO_MANY_CHANNELS).
    #[arg(long, env = "TIDEWIRE_MAX_NODE_CHANNELS", default_value_t = 200_000)]
    pub max_node_channels: usize,

    /// Channel patterns (comma-separated, e.g. `rooms.*,desk-chat`) whose subscribers
    /// get join and leave messages: each subscription's start and end is published on
    /// the channel as a `presence.join` / `presence.leave` publication (`{user,
    /// connection}`), paid for by each connection (`--presence-joins-per-minute`). Off by
    /// default.
    #[arg(long, env = "TIDEWIRE_PRESENCE_EVENTS", value_delimiter = ',', value_parser = channel_pattern)]
    pub presence_events: Vec<ChannelPattern>,

    /// Subscriptions to `--presence-events` channels one connection may start per
    /// minute (each pays for its join and its leave); a subscribe beyond it is refused
    /// (RATE_LIMIT_EXCEEDED), so no client can flood a channel with joins and leaves.
    #[arg(long, env = "TIDEWIRE_PRESENCE_JOINS_PER_MINUTE", default_value_t = 30)]
    pub presence_joins_per_minute: u32,

    /// How long a revocation (`POST /api/revoke`) is kept when the operator does not say
    /// when the tokens it covers expire: set it to the longest lifetime of the tokens
    /// you issue, so no revoked token outlives its revocation.
    #[arg(long, env = "TIDEWIRE_REVOCATION_TTL", default_value = "24h", value_parser = duration)]
    pub revocation_ttl: Duration,

    /// Revocations the node (and the cluster, through Redis) keeps at once; a new one
    /// beyond it is refused (TOO_MANY_KEYS) until older ones expire.
    #[arg(long, env = "TIDEWIRE_MAX_REVOCATIONS", default_value_t = 100_000)]
    pub max_revocations: usize,

    /// How long a client may take to send its HTTP request headers (the WebSocket
    /// handshake included) before the connection is dropped (slowloris defence).
    #[arg(long, env = "TIDEWIRE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// Window over which clients are closed on shutdown, so they don't all reconnect at once.
    #[arg(long, env = "TIDEWIRE_DRAIN_WINDOW", default_value = "5s", value_parser = duration)]
    pub drain_window: Duration,

    /// Share channels through Redis (`redis://host:6379/0`), so several nodes act as one.
    /// Without it, channels live in this process.
    #[arg(long, env = "TIDEWIRE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and pub/sub channel tidewire uses.
    #[arg(long, env = "TIDEWIRE_REDIS_PREFIX", default_value = "tidewire")]
    pub redis_prefix: String,

    /// A routing file (TOML) of broker sources (RabbitMQ, NATS) and routes to channels.
    #[arg(long, env = "TIDEWIRE_INGEST")]
    pub ingest: Option<PathBuf>,

    /// A directory of static files (a dashboard) to serve at `/`.
    #[arg(long, env = "TIDEWIRE_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "TIDEWIRE_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Default for Config {
    /// The documented defaults, with no environment variables read.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Bare {
            #[command(flatten)]
            config: Config,
        }
        // Parse an empty command line with every TIDEWIRE_* variable hidden, so a
        // library user's defaults never depend on the process environment.
        let command = <Bare as clap::CommandFactory>::command();
        let command = command.mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["tidewire"]);
        <Bare as clap::FromArgMatches>::from_arg_matches(&matches).map(|bare| bare.config).unwrap_or_else(|e| e.exit())
    }
}

impl Config {
    /// The batcher settings for one client.
    pub fn batch(&self) -> BatchConfig {
        BatchConfig {
            max_batch: self.max_batch.max(1),
            interval: self.batch_interval,
            max_queued_batches: self.max_queued_batches.max(1),
            max_bytes: self.max_queued_bytes.max(1),
        }
    }

    /// The limits announced in `connected`.
    pub fn limits(&self) -> Limits {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Limits {
            max_batch: clamp(self.max_batch),
            batch_interval_ms: self.batch_interval.as_millis().try_into().unwrap_or(u64::MAX),
            max_queued_batches: clamp(self.max_queued_batches),
            max_channels: clamp(self.max_channels),
            max_message_bytes: clamp(self.max_message_bytes),
            commands_per_second: self.commands_per_second,
            command_burst: self.command_quota().burst_size().get(),
            max_queued_bytes: clamp(self.max_queued_bytes),
            idempotency_window_ms: self.idempotency_window.as_millis().try_into().unwrap_or(u64::MAX),
        }
    }

    /// Each connection's command rate limit: `commands_per_second` (at least one) with a
    /// bucket of `command_burst` (zero: one second's worth).
    pub fn command_quota(&self) -> governor::Quota {
        let rate = NonZeroU32::new(self.commands_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.command_burst).unwrap_or(rate);
        governor::Quota::per_second(rate).allow_burst(burst)
    }

    /// Each connection's budget of presence events (two per subscription to a
    /// `--presence-events` channel: its join and its leave).
    pub fn presence_quota(&self) -> governor::Quota {
        let joins = NonZeroU32::new(self.presence_joins_per_minute.saturating_mul(2)).unwrap_or(NonZeroU32::MIN);
        governor::Quota::per_minute(joins)
    }

    /// Whether `peer` is a proxy whose `X-Forwarded-For` is believed.
    pub fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|range| range.contains(&peer))
    }

    /// A config for tests and embedding: listen on an ephemeral loopback port, HS256
    /// with the given secret.
    pub fn for_tests(secret: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_secret: Some(secret.to_owned()),
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_rate_limit_rules_parse() {
        let rule: PublishRateLimit = "prices.*=1000/100".parse().unwrap();
        assert_eq!(
            rule,
            PublishRateLimit { pattern: ChannelPattern::Prefix("prices.".into()), burst: 1000, per_minute: 100 }
        );
        for bad in ["prices.*", "prices.*=10", "a*b=1/1", "x=0/1", "x=1/-1", "=1/1"] {
            assert!(bad.parse::<PublishRateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen, "0.0.0.0:7999".parse().unwrap());
        assert_eq!((c.max_batch, c.batch_interval, c.max_queued_batches), (50, Duration::from_millis(16), 10));
        assert_eq!((c.max_channels, c.max_message_bytes, c.commands_per_second), (128, 4096, 1000));
        assert_eq!(
            (c.heartbeat_interval, c.write_timeout, c.drain_window),
            (Duration::from_secs(25), Duration::from_secs(10), Duration::from_secs(5))
        );
        assert_eq!(c.history_size, 1000);
        assert_eq!(c.send_buffer, 256 * 1024);
        assert_eq!(c.jwt_algorithm, JwtAlgorithm::Hs256);
    }
}
