//! A connection's outbox: where the fan-out leaves messages and the connection's IO loop
//! picks frames up.
//!
//! The fan-out must never wait for a client, so pushing is a short, synchronous lock
//! around the protocol crate's [`Batcher`] and, rarely, a wake-up; the batcher decides
//! what to drop when the client falls behind. The lock is never held across an await.
//!
//! Wake-ups are what fan-out costs most at high rates (a task switch per subscriber), so
//! the connection tells the outbox when it will look again ([`Outbox::plan_look`]) and a
//! push wakes it only when that is later than the new message's frame is due. A busy
//! connection looks again one batch interval after each frame, so pushes in between
//! never wake it: one wake-up per frame, not per message. A quiet one is woken by each
//! push instead: one wake-up per message, not two.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tidewire_protocol::batch::{BatchConfig, Batcher, Dropped, Outbound, ReadyFrame};

use super::Clock;
use super::operator::Order;

/// Operator orders that may wait for one connection (they are taken at its next look).
pub const MAX_PENDING_ORDERS: usize = 16;

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// The connection's waker, and whether a push asked for it since the last look.
    waker: AtomicWaker,
    woken: AtomicBool,
    /// Set once the batcher went over its byte budget (read without the lock).
    over_budget: AtomicBool,
    /// Operator orders for the connection (see [`super::operator`]), and whether any
    /// wait (read without the lock, so the loop pays nothing when none do).
    orders: Mutex<Vec<Order>>,
    has_orders: AtomicBool,
    /// The batcher's clock origin.
    origin: Instant,
    /// The node's clock (see [`super::clock`]).
    clock: Clock,
}

#[derive(Debug)]
struct State {
    batcher: Batcher,
    /// When the oldest message now waiting was queued (for the latency metric).
    waiting_since: Option<Instant>,
    /// When the connection will look at the outbox next, whether woken or not.
    looks_at: Option<Instant>,
    /// Whether the last push into the empty outbox came while the batch interval since
    /// the previous frame was still running (see [`Outbox::push_with_clock`]).
    dense: bool,
}

impl State {
    /// Whether the connection will look in time for the frame now waiting.
    fn will_look_in_time(&self, origin: Instant) -> bool {
        match (self.looks_at, self.batcher.poll_timeout()) {
            (Some(looks_at), Some(due)) => looks_at <= origin + due,
            _ => false,
        }
    }
}

impl Outbox {
    pub fn new(config: BatchConfig, clock: Clock) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                batcher: Batcher::new(config),
                waiting_since: None,
                looks_at: None,
                dense: false,
            }),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            over_budget: AtomicBool::new(false),
            orders: Mutex::new(Vec::new()),
            has_orders: AtomicBool::new(false),
            origin: clock.now(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the batcher half-updated in a way
        // that matters more than losing the connection, so recover the guard.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a message and wakes the connection if it would not look in time. Never
    /// blocks on the client.
    pub fn push(&self, outbound: Outbound) -> Dropped {
        self.push_with_clock([outbound], || self.clock.now())
    }

    /// Queues several messages under one lock (a subscription's replay or snapshot).
    pub fn push_all(&self, outbounds: impl IntoIterator<Item = Outbound>) -> Dropped {
        self.push_with_clock(outbounds, || self.clock.now())
    }

    /// [`Outbox::push_all`], reading the clock only when the outbox was empty (the hot
    /// path pushes into outboxes that already wait for a frame).
    ///
    /// A connection whose outbox already held messages has planned to look when their
    /// frame is due, so only a push into an empty outbox may need a wake-up. That push
    /// also tells whether traffic is dense: when the frame it starts cannot go yet (a
    /// frame went out less than an interval ago), more is likely to follow within an
    /// interval of each frame, and the connection plans a look one interval after each
    /// frame instead of being woken for each message.
    fn push_with_clock(
        &self,
        outbounds: impl IntoIterator<Item = Outbound>,
        clock: impl FnOnce() -> Instant,
    ) -> Dropped {
        let mut total = Dropped::default();
        let wake = {
            let mut state = self.lock();
            let was_empty = state.waiting_since.is_none();
            let now = was_empty.then(clock);
            let was_over_budget = state.batcher.is_over_budget();
            for outbound in outbounds {
                total.add(state.batcher.push(outbound));
            }
            if !was_over_budget && state.batcher.is_over_budget() {
                // The connection must close now: wake it whatever it planned.
                drop(state);
                self.over_budget.store(true, Ordering::Release);
                self.wake();
                return total;
            }
            match now {
                Some(now) if !state.batcher.is_empty() => {
                    state.waiting_since = Some(now);
                    let due = state.batcher.poll_timeout().map(|d| self.origin + d);
                    state.dense = due.is_some_and(|due| due > now);
                    !state.will_look_in_time(self.origin)
                }
                _ => false,
            }
        };
        if wake {
            self.wake();
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

    /// Hands the connection an operator's order and wakes it. At most
    /// [`MAX_PENDING_ORDERS`] wait; beyond, an unsubscribe is refused (false), while a
    /// disconnect replaces what waits (it ends the connection, which makes the rest
    /// moot), so no disconnect or revocation is ever lost to a full queue.
    pub fn order(&self, order: Order) -> bool {
        {
            let mut orders = self.orders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if orders.len() >= MAX_PENDING_ORDERS {
                if !matches!(order, Order::Disconnect { .. }) {
                    return false;
                }
                orders.clear();
            }
            orders.push(order);
        }
        self.has_orders.store(true, Ordering::Release);
        self.wake();
        true
    }

    /// The operator orders waiting, oldest first.
    pub fn take_orders(&self) -> Vec<Order> {
        if !self.has_orders.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.orders.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Whether what is queued exceeded the byte budget with nothing left to drop: the
    /// connection must be closed (4002).
    pub fn is_over_budget(&self) -> bool {
        self.over_budget.load(Ordering::Acquire)
    }

    /// Bytes queued for the client.
    pub fn bytes(&self) -> usize {
        self.lock().batcher.bytes()
    }

    /// When the next frame may go, if anything waits.
    pub fn next_frame_at(&self) -> Option<Instant> {
        self.lock().batcher.poll_timeout().map(|at| self.origin + at)
    }

    /// When the connection, which would otherwise sleep until `deadline`, must look at
    /// the outbox next: when the waiting frame is due, or, with nothing waiting and dense
    /// traffic, when the batch interval since the last frame ends (whatever arrives by
    /// then goes in one frame without a wake-up; with sparse traffic that look would
    /// mostly find nothing, so a push wakes the connection instead). The connection must
    /// look no later than the returned moment; until then, pushes that it will see in
    /// time don't wake it.
    pub fn plan_look(&self, now: Instant, deadline: Instant) -> Instant {
        let mut state = self.lock();
        let frame_at = match state.batcher.poll_timeout() {
            Some(due) => Some(self.origin + due),
            None if state.dense => Some(self.origin + state.batcher.pacing_until()).filter(|&at| at > now),
            None => None,
        };
        let look = frame_at.map_or(deadline, |at| at.min(deadline));
        state.looks_at = Some(look);
        look
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready when a push needed the connection to look before it planned to. Polling
    /// registers the connection's waker; it holds no lock and no registration to undo.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use tidewire_protocol::EncodedMessage;
    use tidewire_protocol::batch::Position;

    use super::*;

    /// Counts wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn publication(seq: u64) -> Outbound {
        let message = EncodedMessage::encode(&serde_json::json!({"type": "t", "seq": seq})).unwrap();
        Outbound::publication(message, Position { channel: "c".into(), seq, key: None })
    }

    /// Polls `woken` with the counting waker: true when it was ready.
    fn woken(outbox: &Outbox, counter: &Arc<Counter>) -> bool {
        let waker = std::task::Waker::from(counter.clone());
        outbox.poll_woken(&mut Context::from_waker(&waker)).is_ready()
    }

    /// An outbox with the default 16 ms interval, a waker that counts, and the outbox's
    /// clock origin.
    fn counted_outbox() -> (Outbox, Arc<Counter>, Instant) {
        let outbox = Outbox::new(BatchConfig::default(), Clock::system());
        let start = outbox.origin;
        (outbox, Arc::new(Counter(AtomicUsize::new(0))), start)
    }

    /// Pushes one publication as if at `at`.
    fn push_at(outbox: &Outbox, seq: u64, at: Instant) {
        outbox.push_with_clock([publication(seq)], || at);
    }

    #[test]
    fn dense_traffic_wakes_the_connection_once_per_frame() {
        let (outbox, counter, start) = counted_outbox();
        let wakes = || counter.0.load(Ordering::SeqCst);
        let ms = |n: u64| start + Duration::from_millis(n);
        let far = ms(25_000);

        // Idle: the connection sleeps until its own deadline, so a push must wake it.
        assert_eq!(outbox.plan_look(start, far), far);
        assert!(!woken(&outbox, &counter));
        push_at(&outbox, 1, start);
        assert_eq!(wakes(), 1);
        assert!(woken(&outbox, &counter));
        assert_eq!(outbox.poll_frame(start).map(|(frame, _)| frame.len()), Some(1));
        assert_eq!(outbox.plan_look(start, far), far, "one message alone says nothing of what follows");
        assert!(!woken(&outbox, &counter));

        // A message within the interval cannot go at once: traffic is dense. It wakes
        // the connection (which planned to sleep), which plans to look when it is due.
        push_at(&outbox, 2, ms(5));
        assert_eq!(wakes(), 2);
        assert!(woken(&outbox, &counter));
        assert_eq!(outbox.plan_look(ms(5), far), ms(16));
        push_at(&outbox, 3, ms(9));
        assert_eq!(wakes(), 2, "the connection looks at 16 anyway");
        assert_eq!(outbox.poll_frame(ms(16)).map(|(frame, _)| frame.len()), Some(2));

        // From now on it looks one interval after each frame, and pushes in between never
        // wake it.
        assert_eq!(outbox.plan_look(ms(16), far), ms(32));
        push_at(&outbox, 4, ms(20));
        push_at(&outbox, 5, ms(30));
        assert_eq!(wakes(), 2);
        assert!(!woken(&outbox, &counter));
        assert_eq!(outbox.plan_look(ms(30), far), ms(32));
        assert_eq!(outbox.poll_frame(ms(32)).map(|(frame, _)| frame.len()), Some(2));

        // When the traffic stops, one look finds nothing and the connection sleeps again;
        // the next push wakes it.
        assert_eq!(outbox.plan_look(ms(32), far), ms(48));
        assert_eq!(outbox.poll_frame(ms(48)).map(|(frame, _)| frame.len()), None);
        assert_eq!(outbox.plan_look(ms(48), far), far);
        push_at(&outbox, 6, ms(500));
        assert_eq!(wakes(), 3);
    }

    #[test]
    fn sparse_traffic_wakes_the_connection_once_per_message() {
        let (outbox, counter, start) = counted_outbox();
        let far = start + Duration::from_secs(25);
        for (seq, at_ms) in [(1, 0), (2, 100), (3, 250), (4, 400)] {
            let at = start + Duration::from_millis(at_ms);
            assert_eq!(outbox.plan_look(at, far), far, "no look planned between messages");
            assert!(!woken(&outbox, &counter));
            push_at(&outbox, seq, at);
            assert_eq!(counter.0.load(Ordering::SeqCst), seq as usize);
            assert!(woken(&outbox, &counter));
            assert!(outbox.plan_look(at, far) <= at, "due at once");
            assert!(outbox.poll_frame(at).is_some());
        }
    }

    #[test]
    fn a_connection_that_planned_an_earlier_look_is_not_woken() {
        let (outbox, counter, start) = counted_outbox();
        let soon = start + Duration::from_millis(1);
        // A ping is due in 1 ms: the connection will look then anyway.
        outbox.plan_look(start, soon);
        assert!(!woken(&outbox, &counter));
        push_at(&outbox, 1, start);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the frame is due at once, before the planned look");
        assert!(woken(&outbox, &counter));
        // With the next frame not due before the planned look, no wake-up.
        outbox.poll_frame(start);
        outbox.plan_look(start, soon);
        assert!(!woken(&outbox, &counter));
        push_at(&outbox, 2, start);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }
}
