//! One channel's state on this node: its head seq and epoch, the history kept for
//! recovery, the latest value per key (the snapshot), and its local subscribers.
//!
//! Everything that must be atomic with respect to publications (assigning a seq,
//! recording history, fanning out, and starting a subscription at an exact position)
//! happens under the channel's lock, so a subscriber sees every seq after its
//! `subscribed` exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewire_protocol::batch::{Dropped, Outbound, Position};
use tidewire_protocol::filter::Filter;
use tidewire_protocol::rate::Rate;
use tidewire_protocol::{EncodedMessage, Op};

use super::delta::{self, Change, Deltas, Floor};
use super::outbox::Outbox;
use super::throttle::{self, Throttle};

/// A publication kept for recovery and snapshots.
#[derive(Debug, Clone)]
pub struct Stored {
    pub at: Instant,
    /// The publication as subscribers queue it: one shared allocation for all of them.
    pub outbound: Outbound,
}

impl Stored {
    pub fn new(channel: &Arc<str>, seq: u64, key: Option<Arc<str>>, message: EncodedMessage, at: Instant) -> Stored {
        Stored { at, outbound: Outbound::publication(message, Position { channel: channel.clone(), seq, key }) }
    }

    pub fn seq(&self) -> u64 {
        self.outbound.position().map_or(0, |p| p.seq)
    }

    pub fn key(&self) -> Option<&Arc<str>> {
        self.outbound.position().and_then(|p| p.key.as_ref())
    }

    pub fn message(&self) -> &EncodedMessage {
        self.outbound.message()
    }
}

/// A local subscriber: where its messages go, and what it lets through.
#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    filter: Option<Arc<Filter>>,
    /// Set when it was granted deltas: where they may start.
    deltas: Option<Floor>,
}

/// Whether `filter` (none: everything) lets `outbound` through.
pub fn admits(filter: Option<&Filter>, outbound: &Outbound) -> bool {
    filter.is_none_or(|f| {
        let key = outbound.position().and_then(|p| p.key.as_deref());
        f.admits_encoded(outbound.message().as_str(), key)
    })
}

/// How a subscription starts.
#[derive(Debug)]
pub enum Start {
    /// Every publication after the client's position follows.
    Recovered(Vec<Outbound>),
    /// Fresh (or not recoverable): the keyed snapshot, oldest first.
    Snapshot(Vec<EncodedMessage>),
}

#[derive(Debug)]
pub struct Channel {
    pub name: Arc<str>,
    pub epoch: Arc<str>,
    pub head: u64,
    history: VecDeque<Stored>,
    latest: HashMap<Arc<str>, Stored>,
    /// Encoded bytes of `latest`'s messages.
    latest_bytes: usize,
    /// When the last publication was accepted.
    last_published: Option<Instant>,
    subscribers: HashMap<u64, Subscriber>,
    /// Each key's last value, while some subscriber takes deltas (see [`super::delta`]).
    deltas: Deltas,
    /// Subscribers granted deltas.
    delta_subscribers: usize,
    /// Subscribers that asked for a rate, fed through their resampled streams.
    pub throttle: Throttle,
    /// Wakes the task that sends the throttled streams' outputs when they are due, while
    /// one runs (the in-memory engine's; see [`super::throttle`]).
    pub resampler: Option<Arc<tokio::sync::Notify>>,
    /// Idempotency keys of recent publications, oldest first, and their seqs.
    recent: VecDeque<(Arc<str>, u64, Instant)>,
    recent_seqs: HashMap<Arc<str>, u64>,
    /// Set, under the lock, when the channel was dropped from the engine's map for being
    /// idle: whoever still holds it looks it up again.
    pub removed: bool,
}

impl Channel {
    pub fn new(name: Arc<str>, epoch: Arc<str>) -> Channel {
        Channel {
            name,
            epoch,
            head: 0,
            history: VecDeque::new(),
            latest: HashMap::new(),
            latest_bytes: 0,
            last_published: None,
            recent: VecDeque::new(),
            recent_seqs: HashMap::new(),
            subscribers: HashMap::new(),
            deltas: Deltas::default(),
            delta_subscribers: 0,
            throttle: Throttle::default(),
            resampler: None,
            removed: false,
        }
    }

    /// Nothing would be lost by forgetting the channel: no subscribers, no history, and
    /// no latest values, or none published within `ttl` (the channel's state expired).
    pub fn is_idle(&self, now: Instant, ttl: Duration) -> bool {
        let expired = self.last_published.is_none_or(|at| now.saturating_duration_since(at) > ttl);
        self.subscribers.is_empty()
            && self.throttle.is_empty()
            && self.history.is_empty()
            && self.recent.is_empty()
            && (self.latest.is_empty() || expired)
    }

    /// The seq of a publication with this idempotency key within the window, if any.
    pub fn published_with(&self, idempotency_key: &str) -> Option<u64> {
        self.recent_seqs.get(idempotency_key).copied()
    }

    /// Remembers a publication's idempotency key, forgetting the oldest beyond `max`.
    pub fn remember(&mut self, idempotency_key: &str, seq: u64, at: Instant, max: usize) {
        let key: Arc<str> = idempotency_key.into();
        self.recent_seqs.insert(key.clone(), seq);
        self.recent.push_back((key, seq, at));
        while self.recent.len() > max.max(1) {
            self.forget_oldest_key();
        }
    }

    fn forget_oldest_key(&mut self) {
        if let Some((key, seq, _)) = self.recent.pop_front() {
            if self.recent_seqs.get(&key) == Some(&seq) {
                self.recent_seqs.remove(&key);
            }
        }
    }

    /// Forgets idempotency keys older than `window`.
    pub fn expire_keys(&mut self, now: Instant, window: Duration) {
        while self.recent.front().is_some_and(|(_, _, at)| now.saturating_duration_since(*at) > window) {
            self.forget_oldest_key();
        }
    }

    /// Whether a publication with `key` and `size` bytes fits the channel's limits on
    /// latest values: `Err(true)` for too many keys, `Err(false)` for too many bytes.
    pub fn admits_latest(&self, key: &str, size: usize, max_keys: usize, max_bytes: usize) -> Result<(), bool> {
        let old = self.latest.get(key).map(|s| s.message().len());
        if old.is_none() && self.latest.len() >= max_keys {
            return Err(true);
        }
        if self.latest_bytes - old.unwrap_or(0) + size > max_bytes {
            return Err(false);
        }
        Ok(())
    }

    /// Keys with a latest value.
    pub fn key_count(&self) -> usize {
        self.latest.len()
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len() + self.throttle.member_count()
    }

    /// The local connections subscribed, throttled or not.
    pub fn subscriber_ids(&self) -> Vec<u64> {
        self.subscribers.keys().copied().chain(self.throttle.member_ids()).collect()
    }

    /// Records a publication at `head + 1` and fans it out (throttled subscribers get it
    /// through their resampled streams); returns how many deliveries it made and what
    /// the fan-out cost.
    pub fn publish(
        &mut self,
        stored: Stored,
        op: Op,
        history_size: usize,
        limits: throttle::Limits,
    ) -> (usize, Dropped) {
        debug_assert_eq!(stored.seq(), self.head + 1);
        self.head = stored.seq();
        let mut dropped = Dropped::default();
        let mut delivered = 0;
        let unthrottled_deltas = self.delta_subscribers > 0;
        let (change, delta) = if unthrottled_deltas || self.throttle.wants_deltas() {
            self.deltas.offer(&stored.outbound, unthrottled_deltas)
        } else {
            (Change::None, None)
        };
        for subscriber in self.subscribers.values() {
            if subscriber.filter.is_some() && !admits(subscriber.filter.as_deref(), &stored.outbound) {
                continue;
            }
            let outbound =
                delta::choose(&stored.outbound, delta.as_ref(), subscriber.deltas, subscriber.filter.as_deref());
            dropped.add(subscriber.outbox.push(outbound.clone()));
            delivered += 1;
        }
        if !self.throttle.is_empty() {
            let resampled = self.throttle.offer(&stored.outbound, change, stored.at, limits);
            delivered += resampled.publications as usize;
            dropped.add(resampled.dropped);
        }
        self.last_published = Some(stored.at);
        match (op, stored.key()) {
            (Op::Clear, _) => {
                self.latest.clear();
                self.latest_bytes = 0;
            }
            (Op::Delete, Some(key)) => {
                if let Some(old) = self.latest.remove(key) {
                    self.latest_bytes -= old.message().len();
                }
            }
            (Op::Upsert, Some(key)) => {
                self.latest_bytes += stored.message().len();
                if let Some(old) = self.latest.insert(key.clone(), stored.clone()) {
                    self.latest_bytes -= old.message().len();
                }
            }
            (_, None) => {}
        }
        if history_size > 0 {
            if self.history.len() >= history_size {
                self.history.pop_front();
            }
            self.history.push_back(stored);
        }
        (delivered, dropped)
    }

    /// Forgets history older than `ttl`.
    pub fn expire(&mut self, now: Instant, ttl: Duration) {
        while self.history.front().is_some_and(|s| now.saturating_duration_since(s.at) > ttl) {
            self.history.pop_front();
        }
    }

    /// Whether `since` (a seq in this channel's current epoch) can be recovered with at
    /// most `max` messages of at most `max_bytes` in all, and if so the messages (for a
    /// throttled subscription, only each key's latest: see [`throttle::conflated`]).
    pub fn recover(
        &self,
        since: u64,
        max: usize,
        max_bytes: usize,
        filter: Option<&Filter>,
        throttled: bool,
    ) -> Option<Vec<Outbound>> {
        if since > self.head {
            return None;
        }
        let missing = self.head - since;
        if missing == 0 {
            return Some(Vec::new());
        }
        if missing > max as u64 {
            return None;
        }
        let first = self.history.front()?.seq();
        if first > since + 1 {
            return None;
        }
        let skip = usize::try_from(since + 1 - first).ok()?;
        let bytes: usize = self.history.iter().skip(skip).map(|s| s.message().len()).sum();
        if bytes > max_bytes {
            return None;
        }
        let replay = self.history.iter().skip(skip).map(|s| &s.outbound);
        let replay: Vec<Outbound> = replay.filter(|o| admits(filter, o)).cloned().collect();
        if throttled {
            return Some(throttle::conflated(replay, |o| o.position().and_then(|p| p.key.clone())));
        }
        Some(replay)
    }

    /// The latest value per key that `filter` lets through, oldest first, marked as
    /// snapshot messages.
    pub fn snapshot(&self, filter: Option<&Filter>) -> Vec<EncodedMessage> {
        // A key filter looks its keys up (at most 256) instead of scanning the table.
        let mut latest: Vec<&Stored> = match filter.and_then(Filter::keys) {
            Some(keys) => keys.iter().filter_map(|key| self.latest.get(&**key)).collect(),
            None => self.latest.values().collect(),
        };
        latest.retain(|s| admits(filter, &s.outbound));
        latest.sort_by_key(|s| s.seq());
        latest.into_iter().map(|s| s.message().marked_as_snapshot()).collect()
    }

    /// Adds (or, with new options, replaces) a subscriber, throttled at `rate` when it
    /// has one (receiving what follows the head), taking deltas from `deltas` when it
    /// was granted them; true when it is new.
    pub fn add(
        &mut self,
        connection: u64,
        outbox: Arc<Outbox>,
        filter: Option<Arc<Filter>>,
        rate: Option<Rate>,
        deltas: Option<Floor>,
    ) -> bool {
        let was = self.remove(connection);
        if deltas.is_some() && self.delta_subscribers == 0 && !self.throttle.wants_deltas() {
            // The table starts being kept: with the values a snapshot holds.
            self.deltas.seed(self.latest.values().map(|s| s.message().as_str()));
        }
        match rate {
            Some(rate) => self.throttle.join(connection, outbox, filter, rate, self.head, deltas.is_some()),
            None => {
                self.delta_subscribers += usize::from(deltas.is_some());
                self.subscribers.insert(connection, Subscriber { outbox, filter, deltas });
            }
        }
        !was
    }

    pub fn remove(&mut self, connection: u64) -> bool {
        let unthrottled = self.subscribers.remove(&connection);
        if unthrottled.as_ref().is_some_and(|s| s.deltas.is_some()) {
            self.delta_subscribers -= 1;
        }
        let throttled = self.throttle.leave(connection);
        if self.delta_subscribers == 0 && !self.throttle.wants_deltas() {
            self.deltas.reset();
        }
        throttled || unthrottled.is_some()
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The publications kept for recovery, oldest first, each with its seq.
    pub fn stored(&self) -> impl DoubleEndedIterator<Item = (u64, &str)> {
        self.history.iter().map(|s| (s.seq(), s.message().as_str()))
    }
}
