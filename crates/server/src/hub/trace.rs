//! One user's trace: their connections' connects, subscriptions, frames, gaps and
//! closes as they happen, for an operator watching (`GET /api/trace?user=`).
//!
//! Tracing costs nothing while nobody watches: a connection checks one atomic number
//! (the tracer's generation) per event and looks its user up only when it changed. A
//! watched user's events go to the watchers on this node (a bounded broadcast: a
//! watcher that reads too slowly misses events and is told how many) and, with the Redis
//! engine, to the other nodes' watchers through one pub/sub channel. A node watching a
//! user renews a lease on every other node (on the control channel, every
//! [`LEASE_RENEWAL`]); a node sends a user's events out only while some lease for them
//! lives, so a watcher that vanished stops the traffic within [`LEASE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidewire_protocol::Timestamp;
use tokio::sync::{broadcast, mpsc};

/// How long another node's watch keeps this node sending a user's events.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a watching node renews its lease on the others.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(10);
/// Events one watcher may fall behind before it misses some.
pub const WATCHER_BACKLOG: usize = 512;
/// Users watched at once on one node (every watcher of a user counts once).
pub const MAX_WATCHED_USERS: usize = 16;
/// The shortest time between two `frame` events of one connection: a watched user's
/// frames are summed in between, so tracing costs at most ten events a second per
/// connection whatever the user's traffic.
pub const FRAME_EVENT_INTERVAL: Duration = Duration::from_millis(100);

/// Frames written and not yet told, per connection (see [`FRAME_EVENT_INTERVAL`]).
#[derive(Debug, Default)]
pub struct FrameTally {
    frames: u64,
    messages: u64,
    bytes: u64,
    last: Option<Instant>,
}

impl FrameTally {
    /// Counts a frame; the event to send when one is due at `now` (or with `flush`,
    /// whatever was counted).
    pub fn add(&mut self, messages: u64, bytes: u64, now: Instant, flush: bool) -> Option<Event> {
        self.frames += u64::from(messages > 0 || bytes > 0);
        self.messages += messages;
        self.bytes += bytes;
        let due = flush || self.last.is_none_or(|last| now >= last + FRAME_EVENT_INTERVAL);
        if !due || self.frames == 0 {
            return None;
        }
        self.last = Some(now);
        let event = Event::Frame { frames: self.frames, messages: self.messages, bytes: self.bytes };
        (self.frames, self.messages, self.bytes) = (0, 0, 0);
        Some(event)
    }
}

/// Events waiting to go to the other nodes; past it they are dropped (and counted).
pub const OUTGOING_BACKLOG: usize = 1024;

/// What happened to one of the user's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Connected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    Subscribed {
        channel: String,
    },
    Unsubscribed {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<tidewire_protocol::ErrorCode>,
    },
    /// Frames written since the last such event (at most one every
    /// [`FRAME_EVENT_INTERVAL`] per connection): how many, with how many messages and
    /// bytes.
    Frame {
        frames: u64,
        messages: u64,
        bytes: u64,
    },
    /// Messages dropped for the client (its queue was full): the range of seqs lost.
    Gap {
        channel: String,
        from: u64,
        to: u64,
    },
    Closed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        reason: String,
    },
    /// This watcher fell behind and missed `missed` events.
    Lagged {
        missed: u64,
    },
}

/// One traced event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub at: Timestamp,
    /// The node the connection is on.
    pub node: String,
    pub user: String,
    pub connection: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Why a watch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this node watches its limit of {MAX_WATCHED_USERS} users already")]
pub struct TooManyWatches;

/// This node's traces. See the module docs.
#[derive(Debug, Default)]
pub struct Tracer {
    /// Bumped whenever the set of traced users changes.
    generation: AtomicU64,
    state: Mutex<State>,
    /// Where events for the other nodes' watchers go (set by the Redis engine).
    outgoing: OnceLock<mpsc::Sender<Trace>>,
    /// Events the other nodes could not be sent (their queue was full).
    pub dropped: AtomicU64,
}

/// How long a watch lasts at most, even when its stream is no longer read (a reader
/// that stopped reading stops the stream's own timers): the sweep ends it then.
pub const MAX_WATCH: Duration = Duration::from_secs(660);

#[derive(Debug, Default)]
struct State {
    /// Each watched user's sender, and when the watch ends whatever happens.
    watchers: HashMap<String, (broadcast::Sender<Arc<Trace>>, Instant, u64)>,
    /// Numbers each watched user's entry, so a watch ends only its own.
    next_entry: u64,
    /// Users watched on other nodes, until when.
    leases: HashMap<String, Instant>,
}

/// Keeps a user watched while it lives.
#[derive(Debug)]
pub struct Watch {
    tracer: Arc<Tracer>,
    user: String,
    entry: u64,
    pub events: broadcast::Receiver<Arc<Trace>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.tracer.lock();
        // The receiver is dropped after this body: one left means only ours.
        let ours = |(sender, _, entry): &(broadcast::Sender<Arc<Trace>>, Instant, u64)| {
            *entry == self.entry && sender.receiver_count() <= 1
        };
        if state.watchers.get(&self.user).is_some_and(ours) {
            state.watchers.remove(&self.user);
            self.tracer.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Tracer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes whenever who is traced changes: a connection that saw this number
    /// before knows its answer from [`Tracer::is_traced`] still holds.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn is_traced(&self, user: &str) -> bool {
        let state = self.lock();
        state.watchers.contains_key(user) || state.leases.contains_key(user)
    }

    /// Watches `user` on this node.
    pub fn watch(self: &Arc<Self>, user: &str) -> Result<Watch, TooManyWatches> {
        let mut state = self.lock();
        let full = state.watchers.len() >= MAX_WATCHED_USERS;
        let (events, entry) = match state.watchers.get_mut(user) {
            Some((sender, until, entry)) => {
                *until = Instant::now() + MAX_WATCH;
                (sender.subscribe(), *entry)
            }
            None if full => return Err(TooManyWatches),
            None => {
                let (sender, events) = broadcast::channel(WATCHER_BACKLOG);
                state.next_entry += 1;
                let entry = state.next_entry;
                state.watchers.insert(user.to_owned(), (sender, Instant::now() + MAX_WATCH, entry));
                self.generation.fetch_add(1, Ordering::SeqCst);
                (events, entry)
            }
        };
        Ok(Watch { tracer: self.clone(), user: user.to_owned(), entry, events })
    }

    /// Another node watches `user`: send their events out for a while.
    pub fn lease(&self, user: &str) {
        let mut state = self.lock();
        if state.leases.len() >= MAX_WATCHED_USERS * 64 && !state.leases.contains_key(user) {
            return;
        }
        if state.leases.insert(user.to_owned(), Instant::now() + LEASE).is_none() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Forgets leases that ran out, and ends watches past [`MAX_WATCH`] (their
    /// streams then end as soon as they are read).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let before = state.leases.len() + state.watchers.len();
        state.leases.retain(|_, until| *until > now);
        state.watchers.retain(|_, (_, until, _)| *until > now);
        if state.leases.len() + state.watchers.len() != before {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Where events for the other nodes go; set once by the engine that carries them.
    pub fn send_elsewhere_with(&self, outgoing: mpsc::Sender<Trace>) {
        let _ = self.outgoing.set(outgoing);
    }

    /// An event of a connection of this node.
    pub fn emit(&self, trace: Trace) {
        let leased = {
            let state = self.lock();
            if let Some((sender, ..)) = state.watchers.get(&trace.user) {
                let _ = sender.send(Arc::new(trace.clone()));
            }
            state.leases.contains_key(&trace.user)
        };
        if let (true, Some(outgoing)) = (leased, self.outgoing.get())
            && outgoing.try_send(trace).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An event another node sent: to this node's watchers.
    pub fn deliver(&self, trace: Trace) {
        if let Some((sender, ..)) = self.lock().watchers.get(&trace.user) {
            let _ = sender.send(Arc::new(trace));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(user: &str) -> Trace {
        Trace {
            at: Timestamp::from_unix_micros(0),
            node: "n".into(),
            user: user.into(),
            connection: "n-1".into(),
            event: Event::Frame { frames: 1, messages: 1, bytes: 10 },
        }
    }

    #[test]
    fn only_watched_users_are_traced_and_a_watch_ends_with_its_last_watcher() {
        let tracer = Arc::new(Tracer::default());
        let start = tracer.generation();
        assert!(!tracer.is_traced("alice"));
        let mut first = tracer.watch("alice").unwrap();
        let second = tracer.watch("alice").unwrap();
        assert!(tracer.is_traced("alice") && tracer.generation() != start);
        tracer.emit(trace("alice"));
        tracer.emit(trace("bob"));
        assert_eq!(first.events.try_recv().unwrap().user, "alice");
        assert!(first.events.try_recv().is_err(), "bob is not watched");
        drop(second);
        assert!(tracer.is_traced("alice"));
        drop(first);
        assert!(!tracer.is_traced("alice"));
    }

    #[test]
    fn frames_are_summed_into_at_most_one_event_per_interval() {
        let mut tally = FrameTally::default();
        let start = Instant::now();
        assert_eq!(tally.add(2, 20, start, false), Some(Event::Frame { frames: 1, messages: 2, bytes: 20 }));
        assert_eq!(tally.add(3, 30, start + Duration::from_millis(10), false), None);
        assert_eq!(tally.add(1, 10, start + Duration::from_millis(20), false), None);
        let later = start + FRAME_EVENT_INTERVAL;
        assert_eq!(tally.add(1, 5, later, false), Some(Event::Frame { frames: 3, messages: 5, bytes: 45 }));
        assert_eq!(tally.add(4, 8, later, false), None);
        assert_eq!(tally.add(0, 0, later, true), Some(Event::Frame { frames: 1, messages: 4, bytes: 8 }), "flushed");
        assert_eq!(tally.add(0, 0, later, true), None, "nothing left");
    }

    #[test]
    fn watches_are_bounded() {
        let tracer = Arc::new(Tracer::default());
        let watches: Vec<Watch> = (0..MAX_WATCHED_USERS).map(|i| tracer.watch(&format!("u{i}")).unwrap()).collect();
        assert_eq!(tracer.watch("one-more").unwrap_err(), TooManyWatches);
        assert!(tracer.watch("u0").is_ok(), "another watcher of a watched user is free");
        drop(watches);
        assert!(tracer.watch("one-more").is_ok());
    }

    #[test]
    fn a_slow_watcher_misses_events_instead_of_growing_the_node() {
        let tracer = Arc::new(Tracer::default());
        let mut watch = tracer.watch("alice").unwrap();
        for _ in 0..WATCHER_BACKLOG + 10 {
            tracer.emit(trace("alice"));
        }
        assert!(matches!(watch.events.try_recv(), Err(broadcast::error::TryRecvError::Lagged(10))));
    }

    #[test]
    fn leased_users_go_to_the_other_nodes_and_the_queue_is_bounded() {
        let tracer = Tracer::default();
        let (outgoing, mut carried) = mpsc::channel(2);
        tracer.send_elsewhere_with(outgoing);
        tracer.emit(trace("alice"));
        assert!(carried.try_recv().is_err(), "nobody watches alice anywhere");
        tracer.lease("alice");
        assert!(tracer.is_traced("alice"));
        for _ in 0..3 {
            tracer.emit(trace("alice"));
        }
        assert_eq!(tracer.dropped.load(Ordering::Relaxed), 1);
        assert!(carried.try_recv().is_ok());
    }
}
