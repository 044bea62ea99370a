//! The node's monotonic clock, injectable.
//!
//! Everything in the node that decides by time without awaiting it (the outboxes'
//! frame pacing and wake-ups, a session's flood window, history and idle expiry in the
//! in-memory engine) reads this clock, not `Instant::now()`. In production it is the
//! system's; a test makes a [`Clock::manual`] one and moves it by hand, so a client core
//! and a server session can be run against each other on virtual time, with no
//! sockets and no sleeping (`tests/virtual_time.rs`). What awaits real time (the
//! connection's IO loop and its timers, tokio intervals) keeps the system's.
//!
//! Wall-clock timestamps on the wire (`now_timestamp`) are data, not decisions, and
//! stay real.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: the system's, or a manual one. Cheap to clone (one pointer).
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

#[derive(Debug)]
struct Manual {
    start: Instant,
    /// Microseconds since `start`.
    elapsed: AtomicU64,
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock(Some(Arc::new(Manual { start: Instant::now(), elapsed: AtomicU64::new(0) })))
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(manual) => manual.start + Duration::from_micros(manual.elapsed.load(Ordering::Acquire)),
        }
    }

    /// Whether this is a manual clock (nothing may sleep on it).
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    /// Moves a manual clock forward; false (and nothing happens) for the system's.
    pub fn advance(&self, by: Duration) -> bool {
        let Some(manual) = &self.0 else { return false };
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        manual.elapsed.fetch_add(micros, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        assert!(clock.advance(Duration::from_millis(16)));
        assert_eq!(clock.now() - start, Duration::from_millis(16));
        assert!(!Clock::system().advance(Duration::from_secs(1)), "the system's clock is not ours to move");
    }
}
