//! The tokio driver: the core's decisions carried out with tokio-tungstenite.
//!
//! One task owns the [`ClientCore`] and the WebSocket. It feeds the core what happens
//! (app commands, frames, closes, token answers, timers) and performs what the core asks
//! (open, send, close, fetch a token, deliver). Everything clever lives in the core; this
//! file only moves bytes and time.
//!
//! ```no_run
//! # async fn demo() {
//! use tidewire_client::native::{Client, Config, Item};
//! let client = Client::connect(Config::new("ws://127.0.0.1:7999/ws").token("eyJ…"));
//! let mut alerts = client.subscribe("alerts");
//! while let Some(item) = alerts.next().await {
//!     if let Item::Message(delivery) = item {
//!         println!("{} #{}: {}", delivery.channel, delivery.seq, delivery.json);
//!     }
//! }
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tidewire_protocol::NewPublication;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::core::{
    Action, ClientConfig, ClientCore, ClientError, ConnectionState, Delivery, Event, OutgoingPublish, StopReason,
    SubscriptionEvent, SubscriptionOptions, TokenError, TransportId, TransportKind,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one frame's write may take before the link counts as dead (1006).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A token provider: called before each connect and before the token expires.
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send>> + Send + Sync>;

/// Driver settings: the core's, plus the token provider.
#[derive(Clone)]
pub struct Config {
    pub core: ClientConfig,
    pub token_provider: Option<TokenProvider>,
}

impl Config {
    pub fn new(url: impl Into<String>) -> Config {
        let mut core = ClientConfig::new(url);
        core.seed = fastseed();
        Config { core, token_provider: None }
    }

    /// Servers to rotate through (replaces the first URL).
    pub fn urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Config {
        self.core.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// A fixed token.
    pub fn token(mut self, token: impl Into<String>) -> Config {
        self.core.token = Some(token.into());
        self
    }

    /// A token provider (called before each connect and before expiry).
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Config
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, TokenError>> + Send + 'static,
    {
        self.core.token_provider = true;
        self.token_provider = Some(Arc::new(move || Box::pin(provider())));
        self
    }
}

fn fastseed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
    (nanos as u64) ^ (std::process::id() as u64).rotate_left(32)
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message(Delivery),
    Event(SubscriptionEvent),
}

/// The connection's state, as published on [`Client::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: ConnectionState,
    pub attempt: u32,
    pub stopped: Option<StopReason>,
}

enum Request {
    Subscribe { channel: String, handle: u64, sender: mpsc::UnboundedSender<Item>, options: SubscriptionOptions },
    Unsubscribe { channel: String, handle: u64 },
    Publish(NewPublication),
    Close,
}

/// A running client. Dropping it closes the connection.
pub struct Client {
    requests: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<Status>,
    errors: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<ClientError>>>>,
    next_handle: std::sync::atomic::AtomicU64,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A channel subscription; dropping it unsubscribes (when it was the channel's last).
pub struct Subscription {
    channel: String,
    handle: u64,
    receiver: mpsc::UnboundedReceiver<Item>,
    requests: mpsc::UnboundedSender<Request>,
}

impl Subscription {
    /// The next message or subscription event; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<Item> {
        self.receiver.recv().await
    }

    /// The next delivered message, skipping subscription events.
    pub async fn next_message(&mut self) -> Option<Delivery> {
        loop {
            match self.next().await? {
                Item::Message(delivery) => return Some(delivery),
                Item::Event(_) => continue,
            }
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Unsubscribe { channel: self.channel.clone(), handle: self.handle });
    }
}

impl Client {
    /// Starts connecting, on the current tokio runtime.
    pub fn connect(config: Config) -> Client {
        let (requests, inbox) = mpsc::unbounded_channel();
        let (status_tx, status) =
            watch::channel(Status { state: ConnectionState::Connecting, attempt: 0, stopped: None });
        let errors = Arc::new(std::sync::Mutex::new(None));
        let driver = Driver::new(config, status_tx, errors.clone());
        let task = tokio::spawn(driver.run(inbox));
        Client { requests, status, errors, next_handle: std::sync::atomic::AtomicU64::new(1), task: Some(task) }
    }

    /// Subscribes to a channel; every handle for the channel gets every message.
    pub fn subscribe(&self, channel: impl Into<String>) -> Subscription {
        self.subscribe_with(channel, SubscriptionOptions::default())
    }

    /// Subscribes with a server-side filter (the channel's first subscribe sets it).
    pub fn subscribe_with(&self, channel: impl Into<String>, options: SubscriptionOptions) -> Subscription {
        let channel = channel.into();
        let handle = self.next_handle.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = self.requests.send(Request::Subscribe { channel: channel.clone(), handle, sender, options });
        Subscription { channel, handle, receiver, requests: self.requests.clone() }
    }

    /// Publishes (queued while disconnected; needs a token with a publish grant).
    pub fn publish(&self, publication: NewPublication) {
        let _ = self.requests.send(Request::Publish(publication));
    }

    /// The connection state, as it changes.
    pub fn state(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until the client is connected.
    pub async fn connected(&self) {
        let mut status = self.state();
        let _ = status.wait_for(|s| s.state == ConnectionState::Connected).await;
    }

    /// Errors the server or the decoder reported (only those after this call).
    pub fn errors(&self) -> mpsc::UnboundedReceiver<ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut slot) = self.errors.lock() {
            *slot = Some(tx);
        }
        rx
    }

    /// Closes the connection and waits for the driver to finish.
    pub async fn close(mut self) {
        let _ = self.requests.send(Request::Close);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Close);
    }
}

/// Transports opened in the background, by id (or why they could not be).
type Opened = (TransportId, Result<Socket, String>);
/// A channel's two ends.
type Pipe<T> = (mpsc::UnboundedSender<T>, mpsc::UnboundedReceiver<T>);

struct Driver {
    core: ClientCore,
    origin: Instant,
    token_provider: Option<TokenProvider>,
    status: watch::Sender<Status>,
    errors: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<ClientError>>>>,
    handlers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<Item>)>>,
    socket: Option<(TransportId, Socket)>,
    opened: Pipe<Opened>,
    tokens: Pipe<Result<String, TokenError>>,
    closing: bool,
}

impl Driver {
    fn new(
        config: Config,
        status: watch::Sender<Status>,
        errors: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<ClientError>>>>,
    ) -> Driver {
        Driver {
            core: ClientCore::new(config.core),
            origin: Instant::now(),
            token_provider: config.token_provider,
            status,
            errors,
            handlers: HashMap::new(),
            socket: None,
            opened: mpsc::unbounded_channel(),
            tokens: mpsc::unbounded_channel(),
            closing: false,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        self.core.handle(event, now);
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Request>) {
        self.handle(Event::Connect);
        loop {
            self.perform().await;
            if self.closing && self.socket.is_none() {
                return;
            }
            let deadline = self.core.poll_timeout().map(|at| tokio::time::Instant::from_std(self.origin + at));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let inbound = async {
                match &mut self.socket {
                    Some((transport, socket)) => (*transport, socket.next().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = inbox.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => {
                        self.closing = true;
                        self.handle(Event::Close);
                    }
                },
                (transport, message) = inbound => self.on_inbound(transport, message),
                Some((transport, result)) = self.opened.1.recv() => match result {
                    Ok(socket) => {
                        self.socket = Some((transport, socket));
                        self.handle(Event::TransportOpened { transport });
                    }
                    Err(reason) => self.handle(Event::TransportClosed { transport, code: 1006, reason }),
                },
                Some(token) = self.tokens.1.recv() => self.handle(Event::Token(token)),
                () = sleep => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Subscribe { channel, handle, sender, options } => {
                let handlers = self.handlers.entry(channel.clone()).or_default();
                handlers.push((handle, sender));
                if handlers.len() == 1 {
                    self.handle(Event::SubscribeWith { channel, options });
                }
            }
            Request::Unsubscribe { channel, handle } => {
                let Some(handlers) = self.handlers.get_mut(&channel) else { return };
                handlers.retain(|(h, _)| *h != handle);
                if handlers.is_empty() {
                    self.handlers.remove(&channel);
                    self.handle(Event::Unsubscribe { channel });
                }
            }
            Request::Publish(publication) => match OutgoingPublish::new(publication) {
                Ok(publish) => self.handle(Event::Publish(publish)),
                Err(e) => self.report(ClientError::Decode(format!("cannot encode the publication: {e}"))),
            },
            Request::Close => {
                self.closing = true;
                self.handle(Event::Close);
            }
        }
    }

    fn on_inbound(
        &mut self,
        transport: TransportId,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match message {
            Some(Ok(Message::Text(text))) => self.handle(Event::Frame { transport, text: text.as_str().to_owned() }),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                self.socket = None;
                self.handle(Event::TransportClosed { transport, code, reason });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                self.socket = None;
                self.handle(Event::TransportClosed { transport, code: 1006, reason: e.to_string() });
            }
            None => {
                self.socket = None;
                self.handle(Event::TransportClosed { transport, code: 1006, reason: "connection lost".to_owned() });
            }
        }
    }

    fn report(&self, error: ClientError) {
        if let Ok(slot) = self.errors.lock() {
            if let Some(sender) = slot.as_ref() {
                let _ = sender.send(error);
            }
        }
    }

    /// Carries out every pending action.
    async fn perform(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::FetchToken => match &self.token_provider {
                    Some(provider) => {
                        let fetch = provider();
                        let answer = self.tokens.0.clone();
                        tokio::spawn(async move {
                            let _ = answer.send(fetch.await);
                        });
                    }
                    None => self.handle(Event::Token(Err(TokenError::Unauthorized("no token provider".into())))),
                },
                Action::Open { transport, kind: TransportKind::Http, .. } => {
                    let reason = "the tokio driver speaks WebSocket only".to_owned();
                    self.handle(Event::TransportClosed { transport, code: 1006, reason });
                }
                Action::Open { transport, url, token, kind: TransportKind::WebSocket } => {
                    self.socket = None;
                    let answer = self.opened.0.clone();
                    tokio::spawn(async move {
                        let _ = answer.send((transport, open(&url, token.as_deref()).await));
                    });
                }
                Action::Send { transport, text } => {
                    if let Some((current, socket)) = &mut self.socket {
                        if *current != transport {
                            continue;
                        }
                        // A server that stops reading must not stall the client: the
                        // write gets as long as the core would wait for a dead link.
                        let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await;
                        let failure = match sent {
                            Ok(Ok(())) => None,
                            Ok(Err(_)) => Some("write failed"),
                            Err(_) => Some("write timed out"),
                        };
                        if let Some(reason) = failure {
                            self.socket = None;
                            self.handle(Event::TransportClosed { transport, code: 1006, reason: reason.into() });
                        }
                    }
                }
                Action::Close { transport, code, reason } => {
                    if let Some((current, mut socket)) = self.socket.take() {
                        if current == transport {
                            let frame = CloseFrame { code: code.into(), reason: reason.into() };
                            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(Some(frame))).await;
                        } else {
                            self.socket = Some((current, socket));
                        }
                    }
                }
                Action::Deliver(delivery) => {
                    if let Some(handlers) = self.handlers.get(&delivery.channel) {
                        for (_, sender) in handlers {
                            let _ = sender.send(Item::Message(delivery.clone()));
                        }
                    }
                }
                Action::Subscription { channel, event } => {
                    if let Some(handlers) = self.handlers.get(&channel) {
                        for (_, sender) in handlers {
                            let _ = sender.send(Item::Event(event.clone()));
                        }
                    }
                }
                Action::State { state, attempt, stopped } => {
                    let _ = self.status.send(Status { state, attempt, stopped });
                }
                Action::Error(error) => self.report(error),
            }
        }
    }
}

/// Opens a WebSocket, with the token as a bearer header.
async fn open(url: &str, token: Option<&str>) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| "token is not a valid header value".to_owned())?;
        request.headers_mut().insert("Authorization", value);
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".to_owned()),
    }
}
