//! The core's deadlines, in one place.
//!
//! The core has no clock: each timer is the instant (on the driver's clock) it is due,
//! and the driver calls back at [`Timers::next`]. Which timers belong to one link is
//! said once ([`Timers::link_ended`]), so every path that ends a link clears the same
//! ones.

use std::time::Duration;

/// The core's timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    /// The next connection attempt, while waiting to reconnect.
    pub reconnect: Option<Duration>,
    /// The link counts as dead when no frame arrives by then.
    pub dead: Option<Duration>,
    /// Fetch a fresh token (before the current one expires).
    pub refresh: Option<Duration>,
    /// Commands were refused by the server's rate limit: re-send what is pending then.
    pub retry: Option<Duration>,
    /// Leave a fallback transport and try the first again.
    pub upgrade: Option<Duration>,
}

/// One of the [`Timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Reconnect,
    Dead,
    Refresh,
    Retry,
    Upgrade,
}

impl Timers {
    /// The order timers fire in when several are due at once.
    pub const ORDER: [Timer; 5] = [Timer::Reconnect, Timer::Dead, Timer::Refresh, Timer::Retry, Timer::Upgrade];

    fn slot(&mut self, timer: Timer) -> &mut Option<Duration> {
        match timer {
            Timer::Reconnect => &mut self.reconnect,
            Timer::Dead => &mut self.dead,
            Timer::Refresh => &mut self.refresh,
            Timer::Retry => &mut self.retry,
            Timer::Upgrade => &mut self.upgrade,
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Duration> {
        [self.reconnect, self.dead, self.refresh, self.retry, self.upgrade].into_iter().flatten().min()
    }

    /// Whether `timer` is due at `now`; a due timer is cleared (it fires once).
    pub fn fire(&mut self, timer: Timer, now: Duration) -> bool {
        let slot = self.slot(timer);
        if slot.is_some_and(|at| at <= now) {
            *slot = None;
            return true;
        }
        false
    }

    /// The link is gone: its liveness, refresh and retry deadlines go with it (a
    /// reconnect, if any, is the caller's to set).
    pub fn link_ended(&mut self) {
        self.dead = None;
        self.refresh = None;
        self.retry = None;
        self.upgrade = None;
    }

    /// Stopped: nothing is due.
    pub fn clear(&mut self) {
        *self = Timers::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_once_and_links_clear_theirs() {
        let mut timers = Timers { reconnect: Some(Duration::from_secs(3)), ..Timers::default() };
        timers.retry = Some(Duration::from_secs(1));
        timers.dead = Some(Duration::from_secs(2));
        assert_eq!(timers.next(), Some(Duration::from_secs(1)));
        assert!(!timers.fire(Timer::Dead, Duration::from_secs(1)));
        assert!(timers.fire(Timer::Retry, Duration::from_secs(1)));
        assert!(!timers.fire(Timer::Retry, Duration::from_secs(1)), "fired once");
        timers.refresh = Some(Duration::from_secs(9));
        timers.link_ended();
        assert_eq!(timers, Timers { reconnect: Some(Duration::from_secs(3)), ..Timers::default() });
        timers.clear();
        assert_eq!(timers.next(), None);
    }
}
