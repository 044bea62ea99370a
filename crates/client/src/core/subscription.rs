//! One channel as the client sees it: what the app wants, what the server has, and the
//! last position delivered.
//!
//! The app's wish (`wanted`) and the server's state (`server`) are kept apart, and at
//! most one subscribe or unsubscribe per channel is in flight. A React component that
//! mounts, unmounts and mounts again within one round trip therefore never leaves a
//! duplicate subscription on the server: the second subscribe waits for the
//! `unsubscribed` answer, then goes out with `since`.

use tidewire_protocol::StreamPosition;

use super::api::SubscriptionOptions;
use super::deltas::DeltaTable;

/// The server's side of a subscription, as far as this client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerSide {
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

/// One channel's subscription. Its fields change only through the transitions below,
/// each named for the event that causes it.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The app asked for this channel (and has not asked to leave it).
    wanted: bool,
    server: ServerSide,
    /// The last seq delivered, with its epoch: the `since` of the next subscribe.
    position: Option<StreamPosition>,
    /// A resubscribe with `since` is in flight to fill a gap on a live connection.
    recovering: bool,
    /// Seq ranges the server announced as superseded (few, sorted): a jump over them
    /// is no gap.
    skipped: Vec<(u64, u64)>,
    /// The server refused the channel (FORBIDDEN, INVALID_CHANNEL, TOO_MANY_CHANNELS):
    /// not retried until the app subscribes again.
    refused: bool,
    /// The server-side filter asked for (kept until the app leaves the channel).
    options: SubscriptionOptions,
    /// The id of the last subscribe sent for this channel: only an error answering it
    /// can refuse the subscription (a publish's error names the channel too).
    subscribe_id: Option<u64>,
    /// The interval the server granted (`subscribed.minInterval`, milliseconds), for a
    /// throttled subscription.
    granted_interval_ms: Option<u64>,
    /// The last value per key, when the server granted field deltas.
    deltas: Option<DeltaTable>,
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

/// The command that brings the server's side towards what the app wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `subscribe`, with `since` when a position is known (now in flight).
    Subscribe(Option<StreamPosition>),
    /// Send `unsubscribe` (now in flight).
    Unsubscribe,
    /// Nothing is wanted or held on either side: forget the channel.
    Forget,
    /// A command is in flight, or the server already has what the app wants.
    Wait,
}

/// What a `subscribed` answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Nothing was asked for (a late answer to a command since superseded).
    Ignored,
    /// Unasked, on a live subscription, with nothing missed: the channel's first
    /// publication gave it an epoch. Only the position's epoch changed.
    Renewed,
    /// The subscription is live (again).
    Live,
}

impl Subscription {
    /// A channel the core knows nothing of yet; [`Subscription::want`] makes it wanted.
    pub fn new() -> Subscription {
        Subscription {
            wanted: false,
            server: ServerSide::None,
            position: None,
            recovering: false,
            skipped: Vec::new(),
            refused: false,
            options: SubscriptionOptions::default(),
            subscribe_id: None,
            granted_interval_ms: None,
            deltas: None,
        }
    }

    /// The interval the server last granted this subscription, in milliseconds.
    pub fn granted_interval_ms(&self) -> Option<u64> {
        self.granted_interval_ms
    }

    /// A subscribe for this channel went out as command `id`.
    pub fn subscribe_sent_as(&mut self, id: u64) {
        self.subscribe_id = Some(id);
    }

    /// Whether the server granted field deltas.
    pub fn deltas_granted(&self) -> bool {
        self.deltas.is_some()
    }

    /// The values field deltas apply to, when the server granted them.
    pub fn deltas(&mut self) -> Option<&mut DeltaTable> {
        self.deltas.as_mut()
    }

    /// The server-side filter this subscription asks for.
    pub fn options(&self) -> &SubscriptionOptions {
        &self.options
    }

    /// Whether the app wants the channel (refused or not).
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// The last position delivered.
    pub fn position(&self) -> Option<&StreamPosition> {
        self.position.as_ref()
    }

    /// Whether the server should have this channel now (`paused`: the app is in
    /// background mode and receives nothing).
    pub fn should_be_subscribed(&self, paused: bool) -> bool {
        self.wanted && !paused && !self.refused
    }

    /// Whether nothing is wanted or held on either side, so the channel can be forgotten.
    pub fn is_forgettable(&self) -> bool {
        !self.wanted && self.server == ServerSide::None
    }

    /// Whether publications on the channel are for the app now.
    pub fn takes_publications(&self, paused: bool) -> bool {
        self.should_be_subscribed(paused) && self.server != ServerSide::UnsubscribeSent
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

    // ---- the app ----------------------------------------------------------------

    /// The app subscribes (again): a refusal is forgotten. Returns whether it was not
    /// wanted before (so the app is told it is subscribing). A channel not wanted until
    /// now takes `options`; a wanted one keeps its own.
    pub fn want(&mut self, options: SubscriptionOptions) -> bool {
        if !self.wanted {
            self.options = options;
        }
        let was_wanted = self.wanted && !self.refused;
        self.wanted = true;
        self.refused = false;
        !was_wanted
    }

    /// The app unsubscribes. Returns whether it was wanted.
    pub fn unwant(&mut self) -> bool {
        std::mem::replace(&mut self.wanted, false)
    }

    // ---- commands ---------------------------------------------------------------

    /// The next command for this channel, marking it in flight: at most one is.
    pub fn step(&mut self, paused: bool) -> Step {
        match (self.should_be_subscribed(paused), self.server) {
            (true, ServerSide::None) => {
                self.server = ServerSide::SubscribeSent;
                Step::Subscribe(self.position.clone())
            }
            (false, ServerSide::Subscribed) => {
                self.server = ServerSide::UnsubscribeSent;
                Step::Unsubscribe
            }
            (false, ServerSide::None) if !self.wanted => Step::Forget,
            _ => Step::Wait,
        }
    }

    /// A seq jumped or a gap was announced on a live subscription: resubscribe with
    /// `since`. Returns the position to send, or `None` when a recovery (or another
    /// command) is in flight already.
    pub fn begin_recovery(&mut self) -> Option<Option<StreamPosition>> {
        if self.recovering || self.server != ServerSide::Subscribed {
            return None;
        }
        self.recovering = true;
        Some(self.position.clone())
    }

    /// The server's rate limit may have dropped the command in flight unanswered: count
    /// it as not sent. Returns whether a recovery was in flight (and must go again).
    pub fn forget_unanswered(&mut self) -> bool {
        match self.server {
            ServerSide::SubscribeSent => self.server = ServerSide::None,
            // The server answers `unsubscribed` even when it had nothing to remove.
            ServerSide::UnsubscribeSent => self.server = ServerSide::Subscribed,
            ServerSide::None | ServerSide::Subscribed => {}
        }
        std::mem::replace(&mut self.recovering, false)
    }

    // ---- answers ----------------------------------------------------------------

    /// `subscribed` arrived with the channel's position (`recovered: true`: everything
    /// since ours was replayed; otherwise the app reloads from `seq`).
    pub fn confirmed(
        &mut self,
        seq: Option<u64>,
        epoch: Option<String>,
        recovered: Option<bool>,
        granted_interval_ms: Option<u64>,
        deltas: bool,
    ) -> Confirmation {
        if !matches!(self.server, ServerSide::SubscribeSent | ServerSide::Subscribed) {
            return Confirmation::Ignored;
        }
        if self.server == ServerSide::Subscribed && !self.recovering && recovered == Some(true) {
            if let Some(position) = &mut self.position {
                position.epoch = epoch;
            }
            return Confirmation::Renewed;
        }
        self.server = ServerSide::Subscribed;
        self.recovering = false;
        self.granted_interval_ms = granted_interval_ms;
        // The server sends whole values again from every start.
        self.deltas = deltas.then(DeltaTable::default);
        if recovered != Some(true) {
            self.position = Some(StreamPosition { seq: seq.unwrap_or(0), epoch });
            self.skipped.clear();
        } else if let Some(position) = &mut self.position {
            position.epoch = epoch;
        }
        Confirmation::Live
    }

    /// `unsubscribed` arrived: the server no longer has the channel.
    pub fn server_unsubscribed(&mut self) {
        self.server = ServerSide::None;
        self.recovering = false;
    }

    /// The server ended or refused the subscription for good (FORBIDDEN and the like):
    /// not retried until the app subscribes again.
    pub fn refuse(&mut self) {
        self.server = ServerSide::None;
        self.recovering = false;
        self.refused = true;
    }

    /// Whether an error answering command `id` refuses this channel's subscribe (or
    /// recovery) in flight.
    pub fn awaits_subscribe(&self, id: Option<u64>) -> bool {
        (self.server == ServerSide::SubscribeSent || self.recovering) && id.is_some() && id == self.subscribe_id
    }

    /// Forgets the server side (the transport is gone); the position stays for `since`.
    pub fn transport_lost(&mut self) {
        self.server = ServerSide::None;
        self.recovering = false;
        self.skipped.clear();
    }

    // ---- publications -----------------------------------------------------------

    /// Classifies a publication's seq against the last delivered one.
    pub fn arrival(&self, seq: u64) -> Arrival {
        let Some(position) = &self.position else { return Arrival::Unpositioned };
        let last = position.seq;
        if seq <= last {
            return Arrival::Duplicate;
        }
        // A filtered or throttled subscription skips what its filter excludes or its rate
        // resamples: a jump is no loss (the server announces real ones with gap notices).
        // While it recovers from one, live publications wait for the replay, which
        // brings them in order.
        if self.options.skips_seqs() && self.recovering {
            return Arrival::Gap;
        }
        if seq == last + 1 || self.options.skips_seqs() || self.covered(last + 1, seq - 1) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Subscription {
        let mut sub = Subscription::new();
        sub.want(SubscriptionOptions::default());
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
