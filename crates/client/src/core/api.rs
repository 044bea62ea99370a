//! What the client core and its drivers exchange: the configuration, the events a
//! driver feeds in, the actions it performs, and what the app is told.
//!
//! These are the whole public face of [`ClientCore`](super::ClientCore); both drivers
//! translate them to their platform (JS callbacks, tokio channels) and nothing else.

use std::time::Duration;

use tidewire_protocol::command::Publish;
use tidewire_protocol::{Command, EncodedMessage, ErrorCode, NewPublication, Op};

use super::backoff::Backoff;

/// Identifies one transport (one WebSocket); events from a replaced transport are ignored.
pub type TransportId = u64;

/// How a link reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// `GET /ws`.
    WebSocket,
    /// The HTTP fallback: an event stream (`GET /http/stream`) plus POSTed commands
    /// (`POST /http/send`), for networks that break WebSocket upgrades.
    Http,
}

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
    /// The transports to try, in order (WebSocket only; the browser driver adds the
    /// HTTP fallback). See `transports.rs`.
    pub transports: Vec<TransportKind>,
    /// How long an opening link may take to say `connected` before the next transport
    /// is tried (5 s).
    pub open_timeout: Duration,
    /// How long a link on a fallback transport lives before the first is tried again
    /// (60 s, doubling while it keeps failing, up to 30 min).
    pub upgrade_after: Duration,
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
            transports: vec![TransportKind::WebSocket],
            open_timeout: Duration::from_secs(5),
            upgrade_after: Duration::from_secs(60),
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
    Subscribed {
        recovered: Option<bool>,
    },
    Unsubscribed,
    /// The snapshot that followed `subscribed` is complete (also when it was empty): the
    /// app now holds every latest value of the channel.
    SnapshotEnd,
    /// The server refused the channel; not retried until the app subscribes again.
    Refused {
        code: ErrorCode,
        message: String,
    },
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
    /// The whole message object as received: `{"type":…,"timestamp":…,"data":…}`; for
    /// a field delta, rebuilt with the whole value in `data` (and without `base`).
    pub json: String,
    /// For a value that arrived as a field delta, the top-level fields it changed.
    pub changed: Option<Vec<String>>,
    /// How many bytes the message took on the wire (a delta's, not the rebuilt value's).
    pub wire_bytes: usize,
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
    /// Open a transport of `kind` to `url` (for HTTP, the stream's), authenticating
    /// with `token`.
    Open {
        transport: TransportId,
        kind: TransportKind,
        url: String,
        token: Option<String>,
    },
    /// Send a text frame.
    Send {
        transport: TransportId,
        text: String,
    },
    /// Close the WebSocket (the core already treats it as gone).
    Close {
        transport: TransportId,
        code: u16,
        reason: String,
    },
    /// Hand a publication to the channel's handler.
    Deliver(Delivery),
    State {
        state: ConnectionState,
        attempt: u32,
        stopped: Option<StopReason>,
    },
    Subscription {
        channel: String,
        event: SubscriptionEvent,
    },
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
    TransportOpened {
        transport: TransportId,
    },
    TransportClosed {
        transport: TransportId,
        code: u16,
        reason: String,
    },
    Frame {
        transport: TransportId,
        text: String,
    },
    Token(Result<String, TokenError>),
    Subscribe {
        channel: String,
    },
    /// Subscribe with a server-side filter. The options of a channel's first subscribe
    /// hold until the app leaves it.
    SubscribeWith {
        channel: String,
        options: SubscriptionOptions,
    },
    Unsubscribe {
        channel: String,
    },
    Publish(OutgoingPublish),
}

/// What a subscription asks of the server: only these message types, only these keys
/// (unkeyed publications pass a key filter), at least this many milliseconds between two
/// updates of one key (the server grants an interval at least this). `None`: no
/// restriction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub types: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub min_interval_ms: Option<u64>,
    /// Ask for field deltas (see [`tidewire_protocol::delta`]); the core rebuilds whole
    /// values, so the app sees whole records either way.
    pub deltas: bool,
}

impl SubscriptionOptions {
    /// Whether the server skips some of this subscription's seqs (a filter excludes
    /// them, or a rate resamples them): a jump in seqs is then no loss, and the server
    /// announces real ones.
    pub fn skips_seqs(&self) -> bool {
        self.types.is_some() || self.keys.is_some() || self.min_interval_ms.is_some()
    }

    /// Whether it asks anything of the server, so that its subscribe carries options of
    /// its own.
    pub fn asks_anything(&self) -> bool {
        self.skips_seqs() || self.deltas
    }
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

    /// From parts whose `data` is already JSON text (browsers stringify it in JS); `op`
    /// deletes `key` from the channel's table or clears it.
    pub fn from_json(channel: String, kind: &str, data_json: &str, key: Option<String>, op: Op) -> OutgoingPublish {
        let command = tidewire_protocol::command::encode_publish(&channel, kind, data_json, key.as_deref(), op);
        OutgoingPublish { channel, key, command }
    }
}
