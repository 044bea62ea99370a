//! Reconnect delays: exponential with full jitter, and the small random source behind it.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) spreads a crowd
//! of clients that lost the same server across the whole window, which is what stops a
//! reconnect storm after a deploy. The random source is seeded by the driver, so core
//! tests are deterministic.

use std::time::Duration;

/// A xorshift64* generator: plenty for jitter, no dependency, deterministic per seed.
#[derive(Debug, Clone)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter { state: seed.max(1) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform duration in [min, max).
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        min + (max - min).mul_f64(self.next_f64())
    }
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 500 ms doubling up to 20 s.
    fn default() -> Self {
        Backoff { min: Duration::from_millis(500), max: Duration::from_secs(20) }
    }
}

impl Backoff {
    /// The cap for the `attempt`-th retry (0-based): `min × 2^attempt`, at most `max`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay before the `attempt`-th retry: uniform in [0, cap).
    pub fn delay(&self, attempt: u32, jitter: &mut Jitter) -> Duration {
        jitter.between(Duration::ZERO, self.cap(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_up_to_the_max() {
        let b = Backoff::default();
        let caps: Vec<u128> = (0..8).map(|a| b.cap(a).as_millis()).collect();
        assert_eq!(caps, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
        assert_eq!(b.cap(1000), Duration::from_secs(20));
    }

    #[test]
    fn delays_stay_within_the_cap_and_spread() {
        let b = Backoff::default();
        let mut jitter = Jitter::new(42);
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3, &mut jitter)).collect();
        assert!(delays.iter().all(|d| *d < Duration::from_secs(4)));
        let mean = delays.iter().sum::<Duration>() / 1000;
        assert!(mean > Duration::from_millis(1700) && mean < Duration::from_millis(2300), "{mean:?}");
    }
}
