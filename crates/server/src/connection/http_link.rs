//! A connection carried by plain HTTP instead of a WebSocket, as the IO loop sees it.
//!
//! Where proxies break WebSocket upgrades, a client holds one long response, an event
//! stream (`text/event-stream`) the server writes frames into, and sends its commands
//! as separate POSTs bound to the session by its id. [`HttpLink`] makes that pair look
//! like a WebSocket to [`super::serve`]: a stream of inbound messages (the POSTed
//! commands, fed through a bounded queue) and a sink of outbound ones (encoded as
//! events into the response body). So the one connection loop, with its batching,
//! backpressure, heartbeats, recovery, limits and drain, serves both transports.
//!
//! What maps to what:
//!
//! - a text frame is an event whose data is the frame ([`Format::Frames`]), or, on a
//!   one-way stream, one event per message ([`Format::Messages`]);
//! - a ping is a `ping` event, which the client answers with a command (a `ping`
//!   POST): that is the pong, so a client that stopped reading is closed with 4001 as
//!   on a WebSocket. A one-way stream cannot answer: it gets a comment (which keeps
//!   proxies from timing the stream out), and its liveness is the write timeout's and
//!   TCP's;
//! - a close frame is a `close` event with the code and reason, then the end of the
//!   response;
//! - the response going away (the client or a proxy hung up) ends the inbound stream,
//!   which the loop reads as the client leaving.
//!
//! Backpressure is the response body's: the body takes at most [`OUTBOUND_FRAMES`]
//! encoded frames ahead of what the HTTP connection has written, so a reader that stops
//! makes writes block, and the write timeout closes it as a slow consumer (4000), as
//! on a WebSocket.

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use serde::Deserialize;
use tidewire_protocol::StreamPosition;
use tidewire_protocol::event_stream::{CLOSE_EVENT, CloseEvent, PING_EVENT, StreamIds, write_comment, write_event};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard, PollSender, WaitForCancellationFutureOwned};

/// Encoded frames the response body may hold before writes wait for the client (the
/// HTTP connection holds at most one more in its write buffer).
pub const OUTBOUND_FRAMES: usize = 1;

/// Commands POSTed to a session that it has not read yet, and the most one POST may
/// carry (one per line); a POST finding no room is refused (429). With
/// `--max-message-bytes` per command, this bounds what a session's queue holds in bytes.
pub const INBOUND_COMMANDS: usize = 16;

/// Bytes of comment sent first on a fallback session: some proxies hold the first
/// kilobytes of a response before passing any on.
const PRELUDE_PADDING: usize = 2048;

/// What one inbound item is: a command, or the error a WebSocket would have read
/// (a command too big, not UTF-8).
pub type Inbound = Result<Message, axum::Error>;

/// How outbound frames become events.
#[derive(Debug)]
pub enum Format {
    /// One event per frame, its data the frame (the fallback session).
    Frames,
    /// One event per message (the one-way stream).
    Messages(OneWay),
}

/// A one-way stream's channels and the positions its event ids carry.
#[derive(Debug)]
pub struct OneWay {
    channels: Vec<String>,
    ids: StreamIds,
    /// Channels whose position stopped at a gap: their later publications do not move
    /// the id past what was lost, so a reconnect with `Last-Event-ID` recovers it.
    stopped: Vec<bool>,
}

impl OneWay {
    /// A stream of `channels` (distinct). Its ids name a channel's position only once
    /// the server confirmed one (`subscribed`), never one a `Last-Event-ID` claimed.
    pub fn new(channels: Vec<String>) -> OneWay {
        OneWay { stopped: vec![false; channels.len()], ids: StreamIds::new(channels.len()), channels }
    }

    /// The recovery positions a `Last-Event-ID` names for these channels.
    pub fn since(&self, resumed: &StreamIds) -> std::collections::BTreeMap<String, StreamPosition> {
        (0..self.channels.len()).filter_map(|i| Some((self.channels[i].clone(), resumed.get(i)?.clone()))).collect()
    }

    fn index(&self, channel: &str) -> Option<usize> {
        self.channels.iter().position(|c| c == channel)
    }

    /// Appends one event per message of `frame`.
    fn encode(&mut self, frame: &str, out: &mut String) {
        let Ok(messages) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(frame) else {
            // Frames are the server's own JSON arrays; never reached.
            write_event(out, Some("error"), None, frame);
            return;
        };
        for message in messages {
            let text = message.get();
            let head: Head<'_> = serde_json::from_str(text).unwrap_or_default();
            let index = head.channel.as_deref().and_then(|c| self.index(c));
            let kind = head.kind.as_deref().unwrap_or("");
            if tidewire_protocol::message::CONTROL_TYPES.contains(&kind) {
                let mut moved = false;
                if let Some(i) = index {
                    match kind {
                        "subscribed" => {
                            let epoch = head.epoch.map(Cow::into_owned);
                            self.ids.set(i, StreamPosition { seq: head.seq.unwrap_or(0), epoch });
                            self.stopped[i] = false;
                            moved = true;
                        }
                        "gap" if head.reason.as_deref() != Some("superseded") => self.stopped[i] = true,
                        _ => {}
                    }
                }
                let id = moved.then(|| self.ids.encode());
                write_event(out, Some(kind), id.as_deref(), text);
            } else {
                if let (Some(i), Some(seq)) = (index, head.seq) {
                    if !self.stopped[i] {
                        self.ids.advance(i, seq);
                    }
                }
                write_event(out, None, Some(&self.ids.encode()), text);
            }
        }
    }
}

/// The fields of a message the one-way stream reads to name its event and move its id.
#[derive(Debug, Default, Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// The connection loop's side of an HTTP connection.
pub struct HttpLink {
    inbound: mpsc::Receiver<Inbound>,
    out: PollSender<Bytes>,
    gone: Pin<Box<WaitForCancellationFutureOwned>>,
    format: Format,
    pong_due: bool,
    /// A `ping` event went out on a fallback session: its next command is the pong.
    awaiting_pong: bool,
    closed: bool,
    /// The session's place in the registry of fallback sessions, given up when the
    /// connection ends.
    _registration: Option<Registration>,
    /// The HTTP connection's place in the node's HTTP limits, given back once the
    /// session holds its own (the loop reads only after admission).
    http_place: Option<crate::hub::HttpSlot>,
}

/// The response body's side: the encoded events, ending when the link does. Dropping
/// it (the client hung up) tells the link.
pub struct Feed {
    events: mpsc::Receiver<Bytes>,
    _hung_up: DropGuard,
}

impl Stream for Feed {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx).map(|event| event.map(Ok))
    }
}

/// A link and its response body. A fallback session (one with `registration`) first
/// sends padding and its `session` event.
pub fn link(
    format: Format,
    inbound: mpsc::Receiver<Inbound>,
    registration: Option<Registration>,
    http_place: Option<crate::hub::HttpSlot>,
) -> (HttpLink, Feed) {
    // The prelude takes the one place; the first frame waits for it to be written.
    let (sender, events) = mpsc::channel(OUTBOUND_FRAMES);
    if let Some(registration) = &registration {
        let mut prelude = String::with_capacity(PRELUDE_PADDING + 64);
        write_comment(&mut prelude, &" ".repeat(PRELUDE_PADDING));
        write_event(&mut prelude, Some(tidewire_protocol::event_stream::SESSION_EVENT), None, &registration.id);
        // The channel is new and has room: this cannot fail.
        let _ = sender.try_send(Bytes::from(prelude));
    }
    let hung_up = CancellationToken::new();
    let link = HttpLink {
        inbound,
        out: PollSender::new(sender),
        gone: Box::pin(hung_up.clone().cancelled_owned()),
        format,
        pong_due: false,
        awaiting_pong: false,
        closed: false,
        _registration: registration,
        http_place,
    };
    (link, Feed { events, _hung_up: hung_up.drop_guard() })
}

fn gone() -> axum::Error {
    axum::Error::new(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the event stream is gone"))
}

impl Stream for HttpLink {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        self.http_place = None;
        if std::mem::take(&mut self.pong_due) {
            return Poll::Ready(Some(Ok(Message::Pong(Bytes::new()))));
        }
        if self.closed {
            return Poll::Ready(None);
        }
        // A one-way stream has no senders: its inbound side is never done by itself.
        if let Poll::Ready(Some(inbound)) = self.inbound.poll_recv(cx) {
            // The client is alive: it answered (any command will do).
            self.pong_due = std::mem::take(&mut self.awaiting_pong);
            return Poll::Ready(Some(inbound));
        }
        match self.gone.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Sink<Message> for HttpLink {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.out.poll_reserve(cx).map_err(|_| gone())
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        // Room for the frame and its framing at once (no regrowing on the hot path).
        let mut out = String::with_capacity(if let Message::Text(frame) = &message { frame.len() + 16 } else { 64 });
        match message {
            Message::Text(frame) => match &mut self.format {
                Format::Frames => write_event(&mut out, None, None, frame.as_str()),
                Format::Messages(one_way) => one_way.encode(frame.as_str(), &mut out),
            },
            // A fallback session's client answers a `ping` event with a command (a
            // `ping`), which proves it reads the stream; a one-way stream's cannot, and
            // gets a comment that keeps proxies from timing the stream out.
            Message::Ping(_) => match self.format {
                Format::Frames => {
                    write_event(&mut out, Some(PING_EVENT), None, "");
                    self.awaiting_pong = true;
                }
                Format::Messages(_) => {
                    write_comment(&mut out, "");
                    self.pong_due = true;
                }
            },
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code, f.reason.to_string()));
                write_event(&mut out, Some(CLOSE_EVENT), None, &CloseEvent { code, reason }.encode());
                self.closed = true;
            }
            Message::Binary(_) | Message::Pong(_) => return Ok(()),
        }
        self.out.send_item(Bytes::from(out)).map_err(|_| gone())?;
        if self.closed {
            self.out.close();
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.out.close();
        Poll::Ready(Ok(()))
    }
}

/// The node's fallback sessions, by id: where a POSTed command finds its session.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    /// `tidewire_http_sessions`.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Debug)]
struct Entry {
    user: String,
    inbound: mpsc::Sender<Inbound>,
    /// A POST for this session is being read (one at a time).
    busy: Arc<AtomicBool>,
}

/// A session's entry in the [`Registry`], removed when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    pub id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        crate::hub::lock(&self.registry.sessions).remove(&self.id);
        self.registry.gauge.dec();
    }
}

/// Why a POST found no session to take its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeliverable {
    /// No session by that id for this sender (or it ended).
    Unknown,
    /// The session has no room for them: it has [`INBOUND_COMMANDS`] commands it has not
    /// read yet, or another POST for it is being read.
    Full,
}

/// Where a POST delivers to a session: its owner and its queue.
#[derive(Debug, Clone)]
pub struct Door {
    /// The session's user (empty for one opened without a token).
    pub user: String,
    inbound: mpsc::Sender<Inbound>,
    busy: Arc<AtomicBool>,
}

/// The one POST a session reads at a time; given back when dropped.
#[derive(Debug)]
pub struct Claim(Arc<AtomicBool>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Door {
    /// Claims the session's POST, before its body is read: `None` while another is.
    pub fn claim(&self) -> Option<Claim> {
        let free = self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
        free.then(|| Claim(self.busy.clone()))
    }

    /// Hands the session every item, in order, or none of them.
    pub fn deliver(&self, items: Vec<Inbound>) -> Result<(), Undeliverable> {
        let permits = self.inbound.try_reserve_many(items.len()).map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => Undeliverable::Full,
            mpsc::error::TrySendError::Closed(()) => Undeliverable::Unknown,
        })?;
        for (permit, item) in permits.zip(items) {
            permit.send(item);
        }
        Ok(())
    }
}

impl Registry {
    /// A registry counting its sessions in `gauge`.
    pub fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Registry {
        Registry { sessions: Mutex::default(), gauge }
    }

    /// Registers a session of `user` under a fresh unguessable id (128 random bits
    /// from the operating system, as 32 hex digits), with the queue its POSTs feed.
    pub fn open(registry: &Arc<Registry>, user: &str) -> std::io::Result<(Registration, mpsc::Receiver<Inbound>)> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (inbound, receiver) = mpsc::channel(INBOUND_COMMANDS);
        let entry = Entry { user: user.to_owned(), inbound, busy: Arc::default() };
        crate::hub::lock(&registry.sessions).insert(id.clone(), entry);
        registry.gauge.inc();
        Ok((Registration { registry: registry.clone(), id }, receiver))
    }

    /// Session `id`'s door; `None` for an id that is not one (checked for its shape
    /// before any lookup).
    pub fn door(&self, id: &str) -> Option<Door> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let sessions = crate::hub::lock(&self.sessions);
        let entry = sessions.get(id)?;
        Some(Door { user: entry.user.clone(), inbound: entry.inbound.clone(), busy: entry.busy.clone() })
    }

    /// Open fallback sessions.
    pub fn len(&self) -> usize {
        crate::hub::lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> Inbound {
        Ok(Message::Text(r#"{"action":"ping"}"#.into()))
    }

    #[test]
    fn a_session_takes_at_most_its_queue_all_or_none_and_one_post_at_a_time() {
        let registry = Arc::new(Registry::default());
        let (registration, mut inbound) = Registry::open(&registry, "alice").unwrap();
        let door = registry.door(&registration.id).expect("the door of a live session");
        assert_eq!(door.deliver((0..INBOUND_COMMANDS).map(|_| ping()).collect()), Ok(()));
        assert_eq!(door.deliver(vec![ping()]), Err(Undeliverable::Full));
        assert!(inbound.try_recv().is_ok());
        // One place free: two commands do not fit, and neither is taken.
        assert_eq!(door.deliver(vec![ping(), ping()]), Err(Undeliverable::Full));
        assert_eq!(door.deliver(vec![ping()]), Ok(()));
        let claim = door.claim().expect("the first POST");
        assert!(door.claim().is_none(), "a second POST while the first is read");
        drop(claim);
        assert!(door.claim().is_some(), "free again once the first is done");
        let id = registration.id.clone();
        drop(registration);
        assert!(registry.door(&id).is_none(), "gone with its registration");
        drop(inbound);
        assert_eq!(door.deliver(vec![ping()]), Err(Undeliverable::Unknown), "the session's loop ended");
    }

    #[test]
    fn ids_of_another_shape_find_nothing() {
        let registry = Arc::new(Registry::default());
        let (registration, _inbound) = Registry::open(&registry, "").unwrap();
        assert_eq!(registration.id.len(), 32);
        for bad in ["", "x", &registration.id[..31], &format!("{}0", registration.id), &registration.id.to_uppercase()]
        {
            assert!(registry.door(bad).is_none(), "{bad:?}");
        }
        assert!(registry.door(&registration.id).is_some());
    }
}
