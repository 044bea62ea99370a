//! The update rate a subscriber asks for, and the rate the server grants.
//!
//! A subscription may carry `options.maxRate`: at most that many updates per second
//! per key. The server then resamples the channel's keyed publications for it: each
//! key's newest value goes out at most once per interval, never an older one, and
//! values in between are skipped. Unkeyed publications are never skipped: they go out
//! in full, in the same larger frames.
//!
//! **Grants come from a ladder.** The server grants the largest rate of [`RATE_LADDER`]
//! that is at most both the rate asked for and the node's own ceiling, and says which in
//! `subscribed.maxRate`. Subscribers of a channel granted the same rate share one
//! resampled stream (the work and the encoding happen once per rate, not once per
//! subscriber), so the ladder also bounds what a channel costs: at most
//! [`RATE_LADDER`]`.len()` streams however many rates clients invent.
//!
//! **Skipped values are not gaps.** A throttled subscription's seqs jump over the
//! values it skipped (like a filtered one's), in order, and every interval's output
//! covers everything published before it, so the last seq received is an exact
//! recovery position. Real losses are still announced (`gap` notices, `recovered:
//! false`), and a client recovers only on those.

use std::time::Duration;

/// The rates a server grants, in updates per second per key, lowest first.
pub const RATE_LADDER: [f64; 12] = [0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0];

/// The lowest rate a subscription may ask for (one update per key per 10 s): anything
/// slower would hold unkeyed publications back for longer than a view can wait.
pub const MIN_RATE: f64 = RATE_LADDER[0];

/// Why a requested rate is refused (the server answers `BAD_REQUEST` with it).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RateError {
    #[error("options.maxRate must be a positive number of updates per second, not {0}")]
    NotPositive(f64),
    #[error("options.maxRate {0} is below the lowest rate, {MIN_RATE} per second")]
    TooLow(f64),
}

/// A granted rate: a step of [`RATE_LADDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate {
    /// Index into [`RATE_LADDER`].
    step: u8,
}

impl Rate {
    /// The rate granted for `requested` on a node whose ceiling is `ceiling` (itself at
    /// least [`MIN_RATE`]): the largest ladder step at most both.
    pub fn grant(requested: f64, ceiling: f64) -> Result<Rate, RateError> {
        if !requested.is_finite() || requested <= 0.0 {
            return Err(RateError::NotPositive(requested));
        }
        if requested < MIN_RATE {
            return Err(RateError::TooLow(requested));
        }
        let limit = requested.min(ceiling.max(MIN_RATE));
        let step = RATE_LADDER.iter().rposition(|&rate| rate <= limit).unwrap_or(0);
        Ok(Rate { step: step as u8 })
    }

    /// Updates per second per key.
    pub fn per_second(self) -> f64 {
        RATE_LADDER[usize::from(self.step)]
    }

    /// The least time between two updates of one key.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_ladder_steps_never_above_what_was_asked() {
        let granted = |asked: f64| Rate::grant(asked, 60.0).map(Rate::per_second);
        assert_eq!(granted(4.0), Ok(4.0));
        assert_eq!(granted(3.9), Ok(2.0), "lowered to the step below");
        assert_eq!(granted(1e9), Ok(60.0), "capped at the node's ceiling");
        assert_eq!(granted(0.1), Ok(0.1));
        assert_eq!(Rate::grant(100.0, 10.0).map(Rate::per_second), Ok(10.0));
        assert_eq!(Rate::grant(4.0, 4.0).unwrap().interval(), Duration::from_millis(250));
    }

    #[test]
    fn rates_that_mean_nothing_are_refused() {
        assert_eq!(Rate::grant(0.0, 60.0), Err(RateError::NotPositive(0.0)));
        assert_eq!(Rate::grant(-1.0, 60.0), Err(RateError::NotPositive(-1.0)));
        assert!(matches!(Rate::grant(f64::NAN, 60.0), Err(RateError::NotPositive(_))));
        assert!(matches!(Rate::grant(f64::INFINITY, 60.0), Err(RateError::NotPositive(_))));
        assert_eq!(Rate::grant(0.01, 60.0), Err(RateError::TooLow(0.01)));
    }
}
