//! One channel as the client sees it: what the app wants, what the server has, and the
//! last position delivered.
//!
//! The app's wish (`wanted`) and the server's state (`server`) are kept apart, and at
//! most one subscribe or unsubscribe per channel is in flight. A React component that
//! mounts, unmounts and mounts again within one round trip therefore never leaves a
//! duplicate subscription on the server: the second subscribe waits for the
//! `unsubscribed` answer, then goes out with `since`.

use tidewire_protocol::StreamPosition;

/// The server's side of a subscription, as far as this client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSide {
    /// Not subscribed (nothing in flight).
    None,
    /// A `subscribe` is in flight.
    SubscribeSent,
    Subscribed,
    /// An `unsubscribe` is in flight.
    UnsubscribeSent,
}

/// A subscription's state as the app sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    Unsubscribed,
    Subscribing,
    Subscribed,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    /// The app asked for this channel (and has not asked to leave it).
    pub wanted: bool,
    pub server: ServerSide,
    /// The last seq delivered, with its epoch: the `since` of the next subscribe.
    pub position: Option<StreamPosition>,
    /// A resubscribe with `since` is in flight to fill a gap on a live connection.
    pub recovering: bool,
    /// Seq ranges the server announced as superseded (few, sorted): a jump over them
    /// is no gap.
    pub skipped: Vec<(u64, u64)>,
    /// The server refused the channel (FORBIDDEN, INVALID_CHANNEL, TOO_MANY_CHANNELS):
    /// not retried until the app subscribes again.
    pub refused: bool,
}

/// What to do with a publication's seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Deliver it; it is the next one.
    Next,
    /// Already delivered (a replay overlapping live messages): drop it.
    Duplicate,
    /// Publications are missing before it: recover, and drop it (the replay brings it).
    Gap,
    /// No position yet (a publication before `subscribed`): drop it.
    Unpositioned,
}

impl Subscription {
    pub fn new() -> Subscription {
        Subscription {
            wanted: true,
            server: ServerSide::None,
            position: None,
            recovering: false,
            skipped: Vec::new(),
            refused: false,
        }
    }

    /// Whether the server should have this channel now (`paused`: the app is in
    /// background mode and receives nothing).
    pub fn should_be_subscribed(&self, paused: bool) -> bool {
        self.wanted && !paused && !self.refused
    }

    /// The app-facing state.
    pub fn state(&self) -> SubscriptionState {
        match (self.wanted, self.server) {
            (false, _) => SubscriptionState::Unsubscribed,
            (true, ServerSide::Subscribed) if !self.recovering => SubscriptionState::Subscribed,
            (true, _) if self.refused => SubscriptionState::Unsubscribed,
            (true, _) => SubscriptionState::Subscribing,
        }
    }

    /// Classifies a publication's seq against the last delivered one.
    pub fn arrival(&self, seq: u64) -> Arrival {
        let Some(position) = &self.position else { return Arrival::Unpositioned };
        let last = position.seq;
        if seq <= last {
            return Arrival::Duplicate;
        }
        if seq == last + 1 || self.covered(last + 1, seq - 1) {
            return Arrival::Next;
        }
        Arrival::Gap
    }

    /// Whether every seq in `from..=to` was announced as superseded.
    fn covered(&self, from: u64, to: u64) -> bool {
        let mut next = from;
        for &(start, end) in self.skipped.iter().take_while(|&&(start, _)| start <= to) {
            if start <= next && end >= next {
                next = end + 1;
                if next > to {
                    return true;
                }
            }
        }
        next > to
    }

    /// Records a range the server announced as superseded.
    pub fn skip(&mut self, from: u64, to: u64) {
        let at = self.skipped.partition_point(|&range| range < (from, to));
        self.skipped.insert(at, (from, to));
    }

    /// Records a delivered seq and forgets skip ranges now behind it.
    pub fn advance(&mut self, seq: u64) {
        if let Some(position) = &mut self.position {
            position.seq = seq;
        }
        self.skipped.retain(|&(_, end)| end > seq);
    }

    /// Forgets the server side (the transport is gone); the position stays for `since`.
    pub fn transport_lost(&mut self) {
        self.server = ServerSide::None;
        self.recovering = false;
        self.skipped.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Subscription {
        let mut sub = Subscription::new();
        sub.position = Some(StreamPosition { seq, epoch: Some("e".into()) });
        sub
    }

    #[test]
    fn arrivals() {
        let sub = at(10);
        assert_eq!(sub.arrival(11), Arrival::Next);
        assert_eq!(sub.arrival(10), Arrival::Duplicate);
        assert_eq!(sub.arrival(3), Arrival::Duplicate);
        assert_eq!(sub.arrival(13), Arrival::Gap);
        assert_eq!(Subscription::new().arrival(1), Arrival::Unpositioned);
    }

    #[test]
    fn superseded_ranges_bridge_jumps() {
        let mut sub = at(10);
        sub.skip(13, 15);
        sub.skip(11, 12);
        assert_eq!(sub.arrival(16), Arrival::Next);
        assert_eq!(sub.arrival(17), Arrival::Gap);
        sub.advance(16);
        assert!(sub.skipped.is_empty());
        let mut sub = at(10);
        sub.skip(12, 12);
        assert_eq!(sub.arrival(13), Arrival::Gap, "11 is missing");
    }
}
