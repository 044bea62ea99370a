//! A connection's outbox: where the fan-out leaves messages and the connection's IO loop
//! picks frames up.
//!
//! The fan-out must never wait for a client, so pushing is a short, synchronous lock
//! around the protocol crate's [`Batcher`] and a wake-up; the batcher decides what to
//! drop when the client falls behind. The lock is never held across an await.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidewire_protocol::batch::{BatchConfig, Batcher, Dropped, Outbound, ReadyFrame};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    /// The batcher's clock origin.
    origin: Instant,
}

#[derive(Debug)]
struct State {
    batcher: Batcher,
    /// When the oldest message now waiting was queued (for the latency metric).
    waiting_since: Option<Instant>,
}

impl Outbox {
    pub fn new(config: BatchConfig) -> Outbox {
        Outbox {
            state: Mutex::new(State { batcher: Batcher::new(config), waiting_since: None }),
            wake: Notify::new(),
            origin: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the batcher half-updated in a way
        // that matters more than losing the connection, so recover the guard.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a message and, when the outbox was empty, wakes the connection. Never
    /// blocks on the client.
    ///
    /// A connection whose outbox already holds messages is asleep until its next frame
    /// is due (it armed that timer), so waking it again would only cost a task switch
    /// per message per subscriber, which at fan-out rates is most of the work.
    pub fn push(&self, outbound: Outbound) -> Dropped {
        let (dropped, was_empty) = {
            let mut state = self.lock();
            let was_empty = state.waiting_since.is_none();
            state.waiting_since.get_or_insert_with(Instant::now);
            (state.batcher.push(outbound), was_empty)
        };
        if was_empty {
            self.wake.notify_one();
        }
        dropped
    }

    /// Queues several messages under one lock (a subscription's replay or snapshot).
    pub fn push_all(&self, outbounds: impl IntoIterator<Item = Outbound>) -> Dropped {
        let mut total = Dropped::default();
        let was_empty = {
            let mut state = self.lock();
            let was_empty = state.waiting_since.is_none();
            state.waiting_since.get_or_insert_with(Instant::now);
            for outbound in outbounds {
                let dropped = state.batcher.push(outbound);
                total.superseded += dropped.superseded;
                total.overflow += dropped.overflow;
            }
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
        total
    }

    /// The next frame due now, with how long its oldest message waited.
    pub fn poll_frame(&self, now: Instant) -> Option<(ReadyFrame, Duration)> {
        let mut state = self.lock();
        let frame = state.batcher.poll_frame(now.saturating_duration_since(self.origin))?;
        let waited = state.waiting_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        state.waiting_since = if state.batcher.is_empty() { None } else { Some(now) };
        Some((frame, waited))
    }

    /// When the next frame may go, if anything waits.
    pub fn next_frame_at(&self) -> Option<Instant> {
        self.lock().batcher.poll_timeout().map(|at| self.origin + at)
    }

    /// Resolves when something was pushed since the last call.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}
