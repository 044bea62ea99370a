//! Resampled delivery for subscribers that asked for `minInterval` (see
//! [`tidewire_protocol::rate`]): one channel's throttled subscribers, grouped by the
//! rate they were granted.
//!
//! Each group is one resampled stream shared by its members. A publication offered to
//! a group that sent nothing within its interval goes out at once; otherwise it waits
//! in the group's pending list, where a newer value of the same key replaces the older
//! one (the skipped value is not a gap) and unkeyed publications all stay. When the
//! interval since the group's last output ends, everything pending goes out together,
//! in seq order, as one bundle per member ([`Outbound::bundle`]): encoded once for the
//! group, one push per member, one frame. So a key's newest value reaches a member at
//! most once per interval and never later than one interval after it was published,
//! and each output covers every seq before it: the last seq a member received is an
//! exact recovery position.
//!
//! **Bounds.** Pending entries are shared with the channel's history (a pointer each).
//! The list holds at most one entry per key, and unkeyed ones only until the group's
//! pending bytes reach [`Limits::flush_bytes`] (half a subscriber's queue): then it
//! goes out early, so an output always fits the queue it goes to. A channel has at most
//! eight groups (staggered phases) per step of the rate ladder, however many rates
//! clients ask for.
//!
//! This is plain state with time passed in; the engine that owns the channel drives it
//! (the in-memory engine with a task per channel, the Redis engine in the channel's
//! actor) by calling [`Throttle::flush_due`] at [`Throttle::next_due`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tidewire_protocol::batch::{Dropped, Outbound};
use tidewire_protocol::filter::Filter;
use tidewire_protocol::rate::Rate;

use super::channel::admits;
use super::delta::{Change, Delta, Last};
use super::outbox::Outbox;

/// A rate's members are spread over this many streams (by connection id), whose outputs
/// are staggered evenly across the interval: one stream's output for a thousand members
/// is one burst of writes and reads; eight streams make eight bursts an eighth of the
/// size. (`tidewire-bench tables`, 1000 subscribers at 250 ms: with one stream the
/// tables were behind by up to 502 ms, p99 424; with four 299, p99 281; with eight 281,
/// p99 265.)
const PHASES: u64 = 8;

/// What a group may hold before it sends early.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Pending bytes at which a group sends what it holds at once.
    pub flush_bytes: usize,
}

/// What delivering cost, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivered {
    /// Publications handed to members (a bundle counts each it holds).
    pub publications: u64,
    pub dropped: Dropped,
}

impl Delivered {
    fn add(&mut self, other: Delivered) {
        self.publications += other.publications;
        self.dropped.add(other.dropped);
    }
}

/// A throttled subscriber.
#[derive(Debug)]
struct Member {
    outbox: Arc<Outbox>,
    /// Its start's seq: it receives only what comes after.
    after: u64,
    filter: Option<Arc<Filter>>,
    /// Whether it was granted field deltas: against the stream's own last output of
    /// each key, for values output after its start.
    deltas: bool,
}

/// A waiting publication, with what it did to the channel's table of values (kept
/// only while a member takes deltas).
#[derive(Debug, Clone)]
struct Pending {
    outbound: Outbound,
    change: Change,
}

/// One resampled stream: the members granted one rate.
#[derive(Debug)]
struct Group {
    rate: Rate,
    /// Which of the [`PHASES`] this stream's outputs keep to.
    phase: u64,
    members: HashMap<u64, Member>,
    /// Members that take deltas.
    delta_members: usize,
    /// The last value of each key this stream output, while a member takes deltas (what
    /// its deltas are against; pointers into the channel's values), with their encoded
    /// bytes: past [`Limits::flush_bytes`] (which bounds a channel's latest values too)
    /// the table is dropped and the next outputs go whole.
    sent: HashMap<Arc<str>, Last>,
    sent_bytes: usize,
    sent_limit: usize,
    /// Waiting publications in seq order; `None` where a newer value of the same key
    /// replaced one.
    pending: Vec<Option<Pending>>,
    /// Where each key's waiting value is in `pending`.
    by_key: HashMap<Arc<str>, usize>,
    /// Entries of `pending` that are `Some`, and their encoded bytes.
    live: usize,
    bytes: usize,
    /// When the group last sent, and when what waits is due.
    last_sent: Option<Instant>,
    due: Option<Instant>,
}

impl Group {
    fn new(rate: Rate, phase: u64) -> Group {
        Group {
            rate,
            phase,
            members: HashMap::new(),
            delta_members: 0,
            sent: HashMap::new(),
            sent_bytes: 0,
            sent_limit: usize::MAX,
            pending: Vec::new(),
            by_key: HashMap::new(),
            live: 0,
            bytes: 0,
            last_sent: None,
            due: None,
        }
    }

    /// Takes a publication: sends it now when the group is quiet, else holds it.
    /// The first moment at or after `earliest` on this stream's grid: every interval from
    /// `origin`, shifted by its phase's share of the interval.
    fn on_grid(&self, earliest: Instant, origin: Instant) -> Instant {
        let interval = self.rate.interval();
        let start = origin + interval.mul_f64(self.phase as f64 / PHASES as f64);
        let since = earliest.saturating_duration_since(start);
        let steps = since.as_nanos().div_ceil(interval.as_nanos().max(1));
        start + interval * u32::try_from(steps).unwrap_or(u32::MAX)
    }

    fn offer(&mut self, offered: &Pending, now: Instant, origin: Instant, limits: Limits) -> Delivered {
        self.sent_limit = limits.flush_bytes;
        let quiet = self.live == 0 && self.last_sent.is_none_or(|at| now >= at + self.rate.interval());
        if quiet {
            self.last_sent = Some(now);
            return self.send(std::slice::from_ref(offered));
        }
        let outbound = &offered.outbound;
        let key = outbound.position().and_then(|p| p.key.clone());
        if let Some(key) = key {
            if let Some(&index) = self.by_key.get(&key) {
                if let Some(old) = self.pending[index].take() {
                    self.live -= 1;
                    self.bytes -= old.outbound.message().len();
                }
            }
            self.by_key.insert(key, self.pending.len());
        }
        self.pending.push(Some(offered.clone()));
        self.live += 1;
        self.bytes += outbound.message().len();
        if self.due.is_none() {
            self.due = Some(self.last_sent.map_or(now, |at| self.on_grid(at + self.rate.interval(), origin)));
        }
        if self.bytes >= limits.flush_bytes {
            return self.flush(now);
        }
        if self.pending.len() > 2 * self.live + 64 {
            self.compact();
        }
        Delivered::default()
    }

    /// Drops the replaced entries' slots.
    fn compact(&mut self) {
        self.pending.retain(Option::is_some);
        self.by_key.clear();
        for (index, pending) in self.pending.iter().enumerate() {
            if let Some(key) = pending.as_ref().and_then(|o| o.outbound.position()).and_then(|p| p.key.clone()) {
                self.by_key.insert(key, index);
            }
        }
    }

    /// Sends everything pending now.
    fn flush(&mut self, now: Instant) -> Delivered {
        let pending: Vec<Pending> = std::mem::take(&mut self.pending).into_iter().flatten().collect();
        self.by_key.clear();
        self.live = 0;
        self.bytes = 0;
        self.due = None;
        self.last_sent = Some(now);
        self.send(&pending)
    }

    /// This output's delta forms (one per item, against the stream's last output of its
    /// key), keeping the stream's table of what it sent; empty when no member takes
    /// deltas.
    fn deltas_of(&mut self, items: &[Pending]) -> Vec<Option<Delta>> {
        if self.delta_members == 0 {
            return Vec::new();
        }
        let mut deltas = Vec::with_capacity(items.len());
        for item in items {
            let key = item.outbound.position().and_then(|p| p.key.clone());
            let delta = match (&item.change, key) {
                (Change::Upsert(after), Some(key)) => {
                    self.sent_bytes += after.bytes;
                    let before = self.sent.insert(key, after.clone());
                    self.sent_bytes -= before.as_ref().map_or(0, |b| b.bytes);
                    before.and_then(|before| Delta::between(&before, after, &item.outbound))
                }
                (Change::Clear, _) => {
                    self.forget_sent();
                    None
                }
                (_, Some(key)) => {
                    self.sent_bytes -= self.sent.remove(&key).map_or(0, |b| b.bytes);
                    None
                }
                (_, None) => None,
            };
            deltas.push(delta);
        }
        if self.sent_bytes > self.sent_limit {
            self.forget_sent();
        }
        deltas
    }

    fn forget_sent(&mut self) {
        self.sent = HashMap::new();
        self.sent_bytes = 0;
    }

    /// Hands `items` (in seq order) to every member, as one unit each: the shared
    /// bundle for members that take all of it (whole, or with its deltas), a bundle of
    /// their own for members that started within it or filter it.
    fn send(&mut self, items: &[Pending]) -> Delivered {
        let mut delivered = Delivered::default();
        let (Some(first), Some(last)) = (items.first(), items.last()) else { return delivered };
        let (Some(first), Some(last)) = (first.outbound.position(), last.outbound.position()) else {
            return delivered;
        };
        let (channel, first_seq, last_seq) = (first.channel.clone(), first.seq, last.seq);
        let deltas = self.deltas_of(items);
        // Every delta's base is newer than this: a member that started before takes them all.
        let oldest_base = deltas.iter().flatten().map(|d| d.base).min().unwrap_or(u64::MAX);
        let whole = |i: usize| &items[i].outbound;
        let with_deltas = |i: usize, member: &Member| match deltas.get(i).and_then(Option::as_ref) {
            Some(delta)
                if member.deltas && crate::hub::delta::Floor(member.after).takes(delta, member.filter.as_deref()) =>
            {
                &delta.outbound
            }
            _ => &items[i].outbound,
        };
        let (mut shared, mut shared_deltas): (Option<Option<Outbound>>, Option<Option<Outbound>>) = (None, None);
        for member in self.members.values() {
            if member.after >= last_seq {
                continue;
            }
            let everything = member.filter.is_none() && member.after < first_seq;
            let unit = if everything && (!member.deltas || deltas.is_empty()) {
                let unit = shared.get_or_insert_with(|| unit_of(&channel, (0..items.len()).map(whole)));
                delivered.publications += items.len() as u64;
                unit.clone()
            } else if everything && member.after < oldest_base {
                let unit = shared_deltas
                    .get_or_insert_with(|| unit_of(&channel, (0..items.len()).map(|i| with_deltas(i, member))));
                delivered.publications += items.len() as u64;
                unit.clone()
            } else {
                let own: Vec<&Outbound> = (0..items.len())
                    .filter(|&i| whole(i).position().is_some_and(|p| p.seq > member.after))
                    .filter(|&i| admits(member.filter.as_deref(), whole(i)))
                    .map(|i| if member.deltas { with_deltas(i, member) } else { whole(i) })
                    .collect();
                delivered.publications += own.len() as u64;
                unit_of(&channel, own.into_iter())
            };
            if let Some(unit) = unit {
                delivered.dropped.add(member.outbox.push(unit));
            }
        }
        delivered
    }
}

/// What one member receives for `outbounds`: the publication itself when there is one,
/// else a bundle of them.
fn unit_of<'a>(channel: &Arc<str>, outbounds: impl Iterator<Item = &'a Outbound> + Clone) -> Option<Outbound> {
    let mut probe = outbounds.clone();
    let first = probe.next()?;
    let Some(last) = probe.last() else { return Some(first.clone()) };
    let seq = |o: &Outbound| o.position().map_or(0, |p| p.seq);
    Outbound::bundle(channel, seq(first), seq(last), outbounds.map(Outbound::message))
}

/// A member, as [`Throttle::members`] and [`Throttle::restart`] show it.
pub struct Restarted<'a> {
    pub connection: u64,
    pub outbox: &'a Arc<Outbox>,
    pub filter: Option<&'a Filter>,
    pub rate: Rate,
    pub deltas: bool,
}

/// One channel's throttled subscribers. See the module docs.
#[derive(Debug, Default)]
pub struct Throttle {
    groups: Vec<Group>,
    /// Where the streams' grids start (the first publication offered).
    origin: Option<Instant>,
}

impl Throttle {
    /// Adds a member at `rate` that receives what comes after seq `after` (its start),
    /// with field deltas when `deltas`, moving it from another group if it was in one.
    pub fn join(
        &mut self,
        connection: u64,
        outbox: Arc<Outbox>,
        filter: Option<Arc<Filter>>,
        rate: Rate,
        after: u64,
        deltas: bool,
    ) {
        self.leave(connection);
        let phase = connection % PHASES;
        let index = match self.groups.iter().position(|g| g.rate == rate && g.phase == phase) {
            Some(index) => index,
            None => {
                self.groups.push(Group::new(rate, phase));
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[index];
        group.delta_members += usize::from(deltas);
        group.members.insert(connection, Member { outbox, after, filter, deltas });
    }

    /// Removes a member; false when it was not one. A group left empty goes.
    pub fn leave(&mut self, connection: u64) -> bool {
        let mut found = false;
        for group in &mut self.groups {
            let Some(member) = group.members.remove(&connection) else { continue };
            found = true;
            if member.deltas {
                group.delta_members -= 1;
                if group.delta_members == 0 {
                    group.forget_sent();
                }
            }
        }
        self.groups.retain(|g| !g.members.is_empty());
        found
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.groups.iter().map(|g| g.members.len()).sum()
    }

    /// The connections of every stream.
    pub fn member_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.groups.iter().flat_map(|g| g.members.keys().copied())
    }

    /// Whether a member takes deltas (so the channel keeps its table of values for the
    /// streams).
    pub fn wants_deltas(&self) -> bool {
        self.groups.iter().any(|g| g.delta_members > 0)
    }

    /// Takes a publication (in seq order) for every group, with what it changed in the
    /// channel's table of values (see [`super::delta`]).
    pub fn offer(&mut self, outbound: &Outbound, change: Change, now: Instant, limits: Limits) -> Delivered {
        let mut delivered = Delivered::default();
        let origin = *self.origin.get_or_insert(now);
        let offered = Pending { outbound: outbound.clone(), change };
        for group in &mut self.groups {
            delivered.add(group.offer(&offered, now, origin, limits));
        }
        delivered
    }

    /// Sends what is due at `now`.
    ///
    /// An output counts as sent when it was due, not when its driver got to it: a driver
    /// that wakes late (a busy node) does not push every later output back by its delay.
    pub fn flush_due(&mut self, now: Instant) -> Delivered {
        let mut delivered = Delivered::default();
        for group in &mut self.groups {
            if let Some(due) = group.due.filter(|due| *due <= now) {
                delivered.add(group.flush(due));
            }
        }
        delivered
    }

    /// Sends everything pending now, due or not (before a gap notice, which must follow
    /// what came before it).
    pub fn flush_all(&mut self, now: Instant) -> Delivered {
        let mut delivered = Delivered::default();
        for group in &mut self.groups {
            if group.live > 0 {
                delivered.add(group.flush(now));
            }
        }
        delivered
    }

    /// The channel's stream starts again at `head` (its epoch changed): what waits
    /// belongs to the old stream and is forgotten, and every member receives what
    /// follows `head`. `each` is called with every member (to tell it).
    pub fn restart(&mut self, head: u64, mut each: impl FnMut(Restarted<'_>)) {
        for group in &mut self.groups {
            group.pending.clear();
            group.forget_sent();
            group.by_key.clear();
            group.live = 0;
            group.bytes = 0;
            group.due = None;
            for member in group.members.values_mut() {
                member.after = head;
            }
        }
        self.members(&mut each);
    }

    /// Calls `each` with every member.
    pub fn members(&self, mut each: impl FnMut(Restarted<'_>)) {
        for group in &self.groups {
            for (connection, member) in &group.members {
                let (outbox, filter) = (&member.outbox, member.filter.as_deref());
                each(Restarted { connection: *connection, outbox, filter, rate: group.rate, deltas: member.deltas });
            }
        }
    }

    /// Calls `each` with every member's outbox and the seq after which it receives.
    pub fn each_member(&self, mut each: impl FnMut(&Arc<Outbox>, u64)) {
        for member in self.groups.iter().flat_map(|g| g.members.values()) {
            each(&member.outbox, member.after);
        }
    }

    /// When something pending is due next.
    pub fn next_due(&self) -> Option<Instant> {
        self.groups.iter().filter_map(|g| g.due).min()
    }
}

/// Only the latest value of each key, in seq order, with every unkeyed publication: a
/// throttled subscription's replay, which skips what its live stream would have
/// skipped. `key_of` reads an entry's key.
pub fn conflated<T>(entries: Vec<T>, key_of: impl Fn(&T) -> Option<Arc<str>>) -> Vec<T> {
    let keys: Vec<Option<Arc<str>>> = entries.iter().map(&key_of).collect();
    let mut last: HashMap<&Arc<str>, usize> = HashMap::new();
    for (index, key) in keys.iter().enumerate() {
        if let Some(key) = key {
            last.insert(key, index);
        }
    }
    let keep: Vec<bool> =
        keys.iter().enumerate().map(|(index, key)| key.as_ref().is_none_or(|k| last.get(k) == Some(&index))).collect();
    entries.into_iter().zip(keep).filter_map(|(entry, keep)| keep.then_some(entry)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tidewire_protocol::EncodedMessage;
    use tidewire_protocol::batch::{BatchConfig, Position};

    use super::*;
    use crate::hub::Clock;

    const LIMITS: Limits = Limits { flush_bytes: 1 << 19 };

    fn publication(seq: u64, key: Option<&str>) -> Outbound {
        let message = EncodedMessage::encode(&serde_json::json!({"type": "t", "seq": seq, "key": key})).unwrap();
        Outbound::publication(message, Position { channel: "c".into(), seq, key: key.map(Into::into) })
    }

    /// The seqs a member's outbox holds, frame by frame.
    fn received(outbox: &Outbox, at: Instant) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some((frame, _)) = outbox.poll_frame(at + Duration::from_secs(seqs.len() as u64 + 1)) {
            let text = frame.encode(crate::hub::now_timestamp());
            let messages: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            seqs.extend(messages.iter().map(|m| m["seq"].as_u64().unwrap()));
        }
        seqs
    }

    impl Throttle {
        fn offer_whole(&mut self, outbound: &Outbound, now: Instant, limits: Limits) -> Delivered {
            self.offer(outbound, Change::None, now, limits)
        }
    }

    fn member() -> Arc<Outbox> {
        Arc::new(Outbox::new(BatchConfig::default(), Clock::system()))
    }

    #[test]
    fn a_key_goes_out_at_most_once_per_interval_as_its_newest_value() {
        let mut throttle = Throttle::default();
        let outbox = member();
        let rate = Rate::grant(250, 20).unwrap();
        throttle.join(8, outbox.clone(), None, rate, 0, false);
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);

        throttle.offer_whole(&publication(1, Some("A")), ms(0), LIMITS);
        assert_eq!(throttle.next_due(), None, "a quiet group sends at once");
        for (seq, at) in [(2, 10), (3, 50), (4, 100)] {
            throttle.offer_whole(&publication(seq, Some(if seq == 3 { "B" } else { "A" })), ms(at), LIMITS);
        }
        throttle.offer_whole(&publication(5, None), ms(120), LIMITS);
        assert_eq!(throttle.next_due(), Some(ms(250)));
        assert_eq!(throttle.flush_due(ms(249)).publications, 0);
        let delivered = throttle.flush_due(ms(250));
        assert_eq!(delivered.publications, 3, "B's value, A's newest and the unkeyed one");
        assert_eq!(received(&outbox, ms(250)), vec![1, 3, 4, 5], "in seq order; A's seq 2 skipped");
    }

    #[test]
    fn members_that_start_within_the_output_get_only_what_follows_their_start() {
        let mut throttle = Throttle::default();
        let (early, late) = (member(), member());
        let rate = Rate::grant(1000, 20).unwrap();
        let start = Instant::now();
        throttle.join(0, early.clone(), None, rate, 0, false);
        throttle.offer_whole(&publication(1, Some("A")), start, LIMITS);
        throttle.offer_whole(&publication(2, Some("B")), start, LIMITS);
        throttle.offer_whole(&publication(3, Some("C")), start, LIMITS);
        throttle.join(8, late.clone(), None, rate, 2, false);
        throttle.flush_due(start + Duration::from_secs(1));
        assert_eq!(received(&early, start), vec![1, 2, 3]);
        assert_eq!(received(&late, start), vec![3]);
    }

    #[test]
    fn a_group_that_holds_too_much_sends_early() {
        let mut throttle = Throttle::default();
        let outbox = member();
        throttle.join(0, outbox.clone(), None, Rate::grant(10_000, 20).unwrap(), 0, false);
        let start = Instant::now();
        let small = Limits { flush_bytes: 200 };
        throttle.offer_whole(&publication(1, None), start, small);
        let mut sent = 0;
        for seq in 2..=20 {
            sent += throttle.offer_whole(&publication(seq, None), start, small).publications;
        }
        assert!(sent > 0, "unkeyed publications went out before the 10 s interval ended");
        throttle.flush_due(start + Duration::from_secs(10));
        assert_eq!(received(&outbox, start), (1..=20).collect::<Vec<_>>(), "none thinned");
    }

    #[test]
    fn however_many_rates_are_asked_a_channel_has_a_few_streams_per_ladder_step() {
        let mut throttle = Throttle::default();
        for connection in 0..1000u64 {
            let asked = 1 + connection * 10;
            throttle.join(connection, member(), None, Rate::grant(asked, 20).unwrap(), 0, false);
        }
        let most = tidewire_protocol::rate::INTERVAL_LADDER_MS.len() * PHASES as usize;
        assert!(throttle.groups.len() <= most, "{}", throttle.groups.len());
        assert_eq!(throttle.member_count(), 1000);
        for connection in 0..1000u64 {
            assert!(throttle.leave(connection));
        }
        assert!(throttle.is_empty(), "empty streams go");
    }

    #[test]
    fn the_streams_of_one_rate_send_at_staggered_moments() {
        let mut throttle = Throttle::default();
        let rate = Rate::grant(1000, 20).unwrap();
        let outboxes: Vec<Arc<Outbox>> = (0..PHASES).map(|_| member()).collect();
        for (connection, outbox) in outboxes.iter().enumerate() {
            throttle.join(connection as u64, outbox.clone(), None, rate, 0, false);
        }
        let start = Instant::now();
        throttle.offer_whole(&publication(1, Some("A")), start, LIMITS); // sent at once to all
        throttle.offer_whole(&publication(2, Some("A")), start, LIMITS);
        let mut dues: Vec<Instant> = throttle.groups.iter().filter_map(|g| g.due).collect();
        dues.sort();
        let offsets: Vec<u128> = dues.iter().map(|d| d.duration_since(start).as_millis()).collect();
        let expected: Vec<u128> =
            (0..PHASES).map(|phase| 1000 + u128::from(phase) * 1000 / u128::from(PHASES)).collect();
        assert_eq!(offsets, expected, "evenly apart, none before its interval");
    }

    #[test]
    fn a_streams_deltas_are_against_its_last_output_and_its_table_is_bounded_in_bytes() {
        use crate::hub::delta::Deltas;
        let row = |seq: u64, key: &str, n: u64| {
            let text = serde_json::json!({
                "type": "t", "timestamp": "2026-01-19T10:30:45.123456Z", "channel": "c", "seq": seq, "key": key,
                "data": {"key": key, "venue": "London", "book": "EMEA", "n": n}
            });
            let message = EncodedMessage::encode(&text).unwrap();
            Outbound::publication(message, Position { channel: "c".into(), seq, key: Some(key.into()) })
        };
        for (limit, deltas_expected) in [(10_000, true), (200, false)] {
            let mut throttle = Throttle::default();
            let outbox = member();
            throttle.join(0, outbox.clone(), None, Rate::grant(100, 20).unwrap(), 0, true);
            let mut table = Deltas::default();
            let start = Instant::now();
            let limits = Limits { flush_bytes: limit };
            for (i, (key, n)) in [("A", 1), ("B", 1), ("A", 2)].into_iter().enumerate() {
                let full = row(i as u64 + 1, key, n);
                let (change, _) = table.offer(&full, false);
                // A second apart: the stream is quiet each time and sends at once.
                throttle.offer(&full, change, start + Duration::from_secs(i as u64), limits);
            }
            let mut sent: Vec<serde_json::Value> = Vec::new();
            while let Some((frame, _)) = outbox.poll_frame(start + Duration::from_secs(10 + sent.len() as u64)) {
                sent.extend(
                    serde_json::from_str::<Vec<serde_json::Value>>(&frame.encode(crate::hub::now_timestamp())).unwrap(),
                );
            }
            let base = sent[2]["base"].as_u64();
            assert_eq!(base.is_some(), deltas_expected, "limit {limit}: {sent:?}");
            if deltas_expected {
                assert_eq!((base, &sent[2]["data"]), (Some(1), &serde_json::json!({"n": 2})));
            }
        }
    }

    #[test]
    fn a_replay_keeps_each_keys_last_value_and_every_unkeyed_one() {
        let entries = vec![(1, Some("A")), (2, None), (3, Some("A")), (4, Some("B")), (5, None)];
        let kept = conflated(entries, |(_, key)| key.map(Arc::from));
        assert_eq!(kept.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    }
}
