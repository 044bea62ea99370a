//! One IO loop per connection.
//!
//! The loop is the only code that awaits on a client's socket. It waits for whichever
//! comes first: an inbound message, a wake-up from the outbox, the next deadline (a
//! frame's interval, a ping, a heartbeat, the token's expiry), or the node's shutdown.
//! Then it writes the frames that are due. A write that blocks past the write timeout
//! means the client stopped reading: it is closed as a slow consumer (4000), while the
//! fan-out, which only ever touched the outbox, never noticed.

mod commands;
pub mod http_link;
pub mod session;

use std::future::Future;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message};
use tidewire_protocol::message::Heartbeat;
use tidewire_protocol::{CloseCode, Control};
use tokio::time::{Sleep, timeout};

use crate::auth::{AuthError, Grant};
use crate::hub::{Hub, now_timestamp};
use crate::metrics::CodeLabel;
pub use session::Greeting;
use session::{Next, Session};

/// Tells an operator watching the user how the connection ended (kept out of line:
/// the connection's future is memory per connection).
#[inline(never)]
fn traced_close(session: &Session, code: Option<CloseCode>, reason: &str) {
    session.flush_frame_trace();
    session.trace(|| crate::hub::trace::Event::Closed { code: code.map(|c| c.0), reason: reason.to_owned() });
}

/// How long a close frame may take to go out before the socket is just dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection's transport as the loop sees it: WebSocket messages in and out. An
/// upgraded WebSocket is one; the HTTP fallback's [`http_link::HttpLink`] (an event
/// stream out, POSTed commands in) is the other, so both are served by this one loop.
/// `next` must be cancel-safe: a message is never lost when another branch wins.
pub trait Link:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> Link for T where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

/// Serves one connection (an upgraded WebSocket or a fallback session) until it closes.
///
/// This future lives as long as the connection, in every idle connection's task, so
/// its size is memory per connection: the rare paths (refusal, the closing handshake)
/// are boxed rather than laid out inside it.
pub fn serve<L: Link>(
    socket: L,
    hub: Hub,
    auth: Result<Grant, AuthError>,
    greeting: Greeting,
    address: Option<std::net::IpAddr>,
) -> impl Future<Output = ()> + Send {
    // Decided before the future exists, and everything the future needs is used where
    // it was captured (never moved into a second local), so each is stored once.
    let mut admitted = Session::open(&hub, auth, address);
    let mut socket = socket;
    async move {
        let session = match &mut admitted {
            Ok(session) => session,
            Err((code, reason)) => {
                Box::pin(close(&hub, &mut socket, *code, reason)).await;
                return;
            }
        };
        tracing::info!(
            connection = session.id(),
            user = %session.grant.user,
            total = hub.connection_count(),
            "client connected"
        );
        session.greet(greeting);
        let (code, reason) = run(session, &mut socket).await;
        traced_close(session, code, &reason);
        session.leave_all();
        if let Some(code) = code {
            Box::pin(close(&hub, &mut socket, code, &reason)).await;
        }
        tracing::info!(
            connection = session.id(),
            user = %session.grant.user,
            code = code.map(|c| c.0),
            reason,
            total = hub.connection_count().saturating_sub(1),
            "client disconnected"
        );
    }
}

/// The loop; returns the close code to send (`None` when the client closed or vanished)
/// and the reason.
async fn run<L: Link>(session: &mut Session, socket: &mut L) -> (Option<CloseCode>, String) {
    let hub = session.hub.clone();
    let config = hub.config();
    let outbox = session.outbox.clone();
    let shutdown = hub.shutdown_token();
    let mut last_write = Instant::now();
    let mut next_ping = last_write + config.heartbeat_interval;
    let mut awaiting_pong: Option<Instant> = None;
    let mut drain_at: Option<Instant> = None;
    // One timer, reset each round, and one registration with the shutdown signal,
    // rather than new ones per wake-up: at fan-out rates a connection wakes about 60
    // times a second, and registering with the shutdown signal takes a lock that every
    // connection shares.
    let sleep = tokio::time::sleep_until(last_write.into());
    let cancelled = shutdown.cancelled();
    tokio::pin!(sleep, cancelled);

    loop {
        let now = Instant::now();
        let token_deadline = now + session.grant.time_left(SystemTime::now());
        let mut deadline = next_ping.min(last_write + config.heartbeat_interval).min(token_deadline);
        if let Some(sent) = awaiting_pong {
            deadline = deadline.min(sent + config.pong_timeout);
        }
        if let Some(at) = drain_at {
            deadline = deadline.min(at);
        }
        let deadline = outbox.plan_look(now, deadline);

        if sleep.deadline() != deadline.into() {
            sleep.as_mut().reset(deadline.into());
        }
        tokio::select! {
            // `recv` is cancel-safe: a frame is never lost when another branch wins.
            inbound = socket.next() => match inbound {
                None => {
                    hub.metrics().disconnects.get_or_create(&CodeLabel::of(CloseCode::ABNORMAL.0)).inc();
                    return (None, "client went away".to_owned());
                }
                Some(Err(error)) => {
                    let (code, reason) = read_error(error);
                    if code.is_none() {
                        hub.metrics().disconnects.get_or_create(&CodeLabel::of(CloseCode::ABNORMAL.0)).inc();
                    }
                    return (code, reason);
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1005, |f| f.code);
                    hub.metrics().disconnects.get_or_create(&CodeLabel::of(code)).inc();
                    return (None, format!("client closed ({code})"));
                }
                Some(Ok(message)) => {
                    // Every frame counts against the rate limit, whatever its kind.
                    let next = match message {
                        Message::Text(text) => session.on_text(text.as_str()),
                        Message::Binary(_) => session.on_binary(),
                        Message::Pong(_) => {
                            awaiting_pong = None;
                            session.on_frame()
                        }
                        // Answered by the WebSocket layer (one pending pong at most).
                        Message::Ping(_) | Message::Close(_) => session.on_frame(),
                    };
                    if let Next::Close(code, reason) = next {
                        // Let the client read the errors that explain the close.
                        let _ = flush(session, socket, sleep.as_mut(), Instant::now(), true).await;
                        return (Some(code), reason);
                    }
                }
            },
            () = std::future::poll_fn(|cx| outbox.poll_woken(cx)) => {}
            () = &mut sleep => {}
            () = &mut cancelled, if drain_at.is_none() => {
                // Spread closes over the drain window so clients don't reconnect at once.
                let offset = config.drain_window.mul_f64(fastrand::f64());
                drain_at = Some(Instant::now() + offset);
            }
        }

        if let Some((code, reason)) = session.take_orders() {
            // The client reads what was queued for it, then the close.
            let _ = flush(session, socket, sleep.as_mut(), Instant::now(), true).await;
            return (Some(code), reason);
        }
        if outbox.is_over_budget() {
            return (
                Some(CloseCode::QUEUE_OVERFLOW),
                format!("more than {} bytes queued for this client", config.max_queued_bytes),
            );
        }
        let now = Instant::now();
        if drain_at.is_some_and(|at| now >= at) {
            if flush(session, socket, sleep.as_mut(), now, true).await.is_err() {
                return slow_consumer(config);
            }
            return (Some(CloseCode::SERVICE_RESTART), "node is shutting down".to_owned());
        }
        if session.grant.time_left(SystemTime::now()).is_zero() {
            let _ = flush(session, socket, sleep.as_mut(), now, true).await;
            return (Some(CloseCode::TOKEN_EXPIRED), "token expired; reconnect with a new token".to_owned());
        }
        if awaiting_pong.is_some_and(|sent| now >= sent + config.pong_timeout) {
            return (Some(CloseCode::HEARTBEAT_TIMEOUT), "no pong in time".to_owned());
        }
        if now >= last_write + config.heartbeat_interval && outbox.next_frame_at().is_none() {
            session.send(Control::Heartbeat(Heartbeat { timestamp: now_timestamp() }));
        }
        match flush(session, socket, sleep.as_mut(), now, false).await {
            Ok(0) => {}
            Ok(_) => last_write = Instant::now(),
            Err(()) => return slow_consumer(config),
        }
        if now >= next_ping {
            if !write(socket, Message::Ping(Default::default()), sleep.as_mut(), config.write_timeout).await {
                return slow_consumer(config);
            }
            awaiting_pong.get_or_insert(now);
            next_ping = now + config.heartbeat_interval;
        }
    }
}

/// Writes the frames due at `now` (every waiting frame when `all`) and counts them; an
/// error when a write timed out or failed.
async fn flush<L: Link>(
    session: &Session,
    socket: &mut L,
    mut timer: Pin<&mut Sleep>,
    now: Instant,
    all: bool,
) -> Result<usize, ()> {
    let mut written = 0;
    while let Some(text) = session.next_frame(now, all) {
        if !write(socket, Message::Text(text.into()), timer.as_mut(), session.hub.config().write_timeout).await {
            return Err(());
        }
        written += 1;
        if !all {
            break;
        }
    }
    Ok(written)
}

/// Sends one message; false when it failed or did not go out within `write_timeout`.
///
/// The connection's own timer measures the timeout, armed only when the socket pushes
/// back: almost every write completes at once, and a timer per write (plus its space in
/// every connection's future) would be paid for nothing. The loop re-arms the timer for
/// its own deadline afterwards. The sink is driven by hand, rather than through a send
/// future, for the same reason: this state is part of every connection's memory.
fn write<'a, L: Link>(
    socket: &'a mut L,
    message: Message,
    mut timer: Pin<&'a mut Sleep>,
    write_timeout: Duration,
) -> impl Future<Output = bool> + 'a {
    let mut message = Some(message);
    let mut armed = false;
    std::future::poll_fn(move |cx| {
        let sent = loop {
            let Some(pending) = message.take() else {
                break Pin::new(&mut *socket).poll_flush(cx);
            };
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Err(error) = Pin::new(&mut *socket).start_send(pending) {
                        break Poll::Ready(Err(error));
                    }
                }
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => {
                    message = Some(pending);
                    break Poll::Pending;
                }
            }
        };
        if let Poll::Ready(result) = sent {
            return Poll::Ready(result.is_ok());
        }
        if !armed {
            timer.as_mut().reset(tokio::time::Instant::now() + write_timeout);
            armed = true;
        }
        timer.as_mut().poll(cx).map(|()| false)
    })
}

fn slow_consumer(config: &crate::config::Config) -> (Option<CloseCode>, String) {
    (Some(CloseCode::SLOW_CONSUMER), format!("a write blocked for more than {:?}", config.write_timeout))
}

/// Maps a read error to a close: oversized messages get 1009, the rest mean the
/// transport is gone.
fn read_error(error: axum::Error) -> (Option<CloseCode>, String) {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match error.into_inner().downcast::<Error>() {
        Ok(inner) => match *inner {
            Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                (Some(CloseCode::MESSAGE_TOO_BIG), format!("message of {size} bytes; at most {max_size} allowed"))
            }
            Error::Capacity(e) => (Some(CloseCode::MESSAGE_TOO_BIG), e.to_string()),
            Error::Utf8(_) => (Some(CloseCode(1007)), "text frame is not valid UTF-8".to_owned()),
            Error::Protocol(e) => (Some(CloseCode(1002)), e.to_string()),
            other => (None, other.to_string()),
        },
        Err(other) => (None, other.to_string()),
    }
}

/// Sends a close frame (best effort), counts the disconnect, and waits briefly for the
/// client's close reply while discarding what it still sends: dropping a socket with
/// unread input makes the kernel reset it, and the client would then lose the close
/// frame (and its code) we just sent.
async fn close<L: Link>(hub: &Hub, socket: &mut L, code: CloseCode, detail: &str) {
    hub.metrics().disconnects.get_or_create(&CodeLabel::of(code.0)).inc();
    let frame = CloseFrame { code: code.0, reason: code.reason(detail).into() };
    if timeout(CLOSE_WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_WRITE_TIMEOUT, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn returns, from the fn item alone.
    fn future_size<F: FnOnce(A, B, C, D, E) -> Fut, A, B, C, D, E, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every connection's task holds this future for its whole life, so its size is most
    /// of the memory an idle connection costs (docs/performance.md). It was 2.3 KiB
    /// before the rare paths were boxed and the write path stopped nesting futures.
    #[test]
    fn the_connection_future_stays_small() {
        let size = future_size(super::serve::<axum::extract::ws::WebSocket>);
        assert!(size <= 1600, "the connection future grew to {size} bytes; keep rare paths boxed");
    }
}
