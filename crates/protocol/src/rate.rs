//! The update rate a subscriber asks for, and the rate the server grants.
//!
//! A subscription may carry `options.minInterval`: at least that many milliseconds
//! between two updates of one key (the JavaScript API takes it as `maxRate`, updates per
//! second, and sends `ceil(1000 / maxRate)`). The server then resamples the channel's
//! keyed publications for it: each key's newest value goes out at most once per
//! interval, never an older one, and values in between are skipped. Unkeyed
//! publications are never skipped: they go out in full, in the same larger frames. The
//! wire carries whole milliseconds so that no peer needs floating-point text.
//!
//! **Grants come from a ladder.** The server grants the shortest interval of
//! [`INTERVAL_LADDER_MS`] that is at least both the interval asked for and the node's
//! own floor, and says which in `subscribed.minInterval`. Subscribers of a channel
//! granted the same interval share one resampled stream (the work and the encoding
//! happen once per interval, not once per subscriber), so the ladder also bounds what a
//! channel costs: at most [`INTERVAL_LADDER_MS`]`.len()` streams however many intervals
//! clients invent.
//!
//! **Skipped values are not gaps.** A throttled subscription's seqs jump over the
//! values it skipped (like a filtered one's), in order, and every interval's output
//! covers everything published before it, so the last seq received is an exact
//! recovery position. Real losses are still announced (`gap` notices, `recovered:
//! false`), and a client recovers only on those.

use std::time::Duration;

/// The intervals a server grants, in milliseconds, shortest first: 50, 25, 20, 10, 5, 4,
/// 2, 1, 0.5, 0.2 and 0.1 updates per second per key.
pub const INTERVAL_LADDER_MS: [u64; 11] = [20, 40, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000];

/// The longest interval a subscription may ask for (one update per key per 10 s):
/// anything slower would hold unkeyed publications back for longer than a view can wait.
pub const MAX_INTERVAL_MS: u64 = INTERVAL_LADDER_MS[INTERVAL_LADDER_MS.len() - 1];

/// Why a requested interval is refused (the server answers `BAD_REQUEST` with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("options.minInterval must be at least 1 millisecond (a maxRate must be a positive number)")]
    Zero,
    #[error("options.minInterval {0} ms is longer than the longest interval, {MAX_INTERVAL_MS} ms (0.1 per second)")]
    TooLong(u64),
}

/// A granted rate: a step of [`INTERVAL_LADDER_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate {
    /// Index into [`INTERVAL_LADDER_MS`].
    step: u8,
}

impl Rate {
    /// The rate granted for `min_interval_ms` on a node whose floor is `floor_ms`: the
    /// shortest ladder step at least both (the longest step when the floor is longer).
    pub fn grant(min_interval_ms: u64, floor_ms: u64) -> Result<Rate, RateError> {
        if min_interval_ms == 0 {
            return Err(RateError::Zero);
        }
        if min_interval_ms > MAX_INTERVAL_MS {
            return Err(RateError::TooLong(min_interval_ms));
        }
        let least = min_interval_ms.max(floor_ms);
        let step = INTERVAL_LADDER_MS.iter().position(|&ms| ms >= least).unwrap_or(INTERVAL_LADDER_MS.len() - 1);
        Ok(Rate { step: step as u8 })
    }

    /// The least time between two updates of one key, in milliseconds.
    pub fn interval_ms(self) -> u64 {
        INTERVAL_LADDER_MS[usize::from(self.step)]
    }

    pub fn interval(self) -> Duration {
        Duration::from_millis(self.interval_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_ladder_steps_never_shorter_than_what_was_asked() {
        let granted = |asked: u64| Rate::grant(asked, 20).map(Rate::interval_ms);
        assert_eq!(granted(250), Ok(250));
        assert_eq!(granted(251), Ok(500), "lengthened to the step above");
        assert_eq!(granted(1), Ok(20), "held at the node's floor");
        assert_eq!(granted(MAX_INTERVAL_MS), Ok(MAX_INTERVAL_MS));
        assert_eq!(Rate::grant(30, 100).map(Rate::interval_ms), Ok(100));
        assert_eq!(Rate::grant(30, 60_000).map(Rate::interval_ms), Ok(MAX_INTERVAL_MS));
        assert_eq!(Rate::grant(250, 20).unwrap().interval(), Duration::from_millis(250));
    }

    #[test]
    fn intervals_that_mean_nothing_are_refused() {
        assert_eq!(Rate::grant(0, 20), Err(RateError::Zero));
        assert_eq!(Rate::grant(10_001, 20), Err(RateError::TooLong(10_001)));
        assert_eq!(Rate::grant(u64::MAX, 20), Err(RateError::TooLong(u64::MAX)));
    }
}
