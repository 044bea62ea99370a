//! The batching and backpressure rule, as a pure state machine both ends use.
//!
//! A [`Batcher`] sits between "a message is due to this peer" and "a frame goes on the
//! wire". It yields frames of at most `max_batch` messages, no more often than once per
//! `interval`, and holds at most `max_batch × max_queued_batches` publications. It has
//! no clock: the caller passes `now` (time since any fixed origin) to
//! [`Batcher::poll_frame`] and asks [`Batcher::poll_timeout`] when to call again, so
//! tests drive it with virtual time.
//!
//! The first message after a quiet period goes out at once; after a frame, the next
//! waits for the interval, which is when batches form. Under overflow the batcher drops,
//! in this order:
//!
//! 1. a publication **superseded** by a newer queued one with the same channel and key
//!    (conflation: the client keeps only the latest value per key anyway);
//! 2. otherwise the **oldest** publication (overflow).
//!
//! It never drops control messages (replies, errors, snapshot items) and never reorders
//! anything. Every drop is recorded as a seq range per channel and reason, and the next
//! frame starts with one [`GapNotice`] per range, so a client
//! always knows exactly what it missed and why.
//!
//! **The byte budget.** What waits is also bounded in bytes (`max_bytes`): every queued
//! message counts its encoded length, control messages and pending gap notices included,
//! so a peer that asks for many replies and reads them slowly cannot grow its queue
//! without bound. Over the budget, publications are shed by the rules above; when what
//! is left (messages that are never dropped) still exceeds it, the batcher is
//! **over budget**: it refuses every further message and says so
//! ([`Batcher::is_over_budget`]), and its owner ends the session (the server closes the
//! connection with [`CloseCode::QUEUE_OVERFLOW`](crate::CloseCode::QUEUE_OVERFLOW)).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::Timestamp;
use crate::codec::{EncodedMessage, encode_frame};
use crate::message::{Control, GapNotice, GapReason, ServerMessage};

/// Batching limits. The defaults are 50 messages per frame, one frame per 16 ms (60 fps),
/// 10 frames' worth of publications queued, and 1 MiB queued in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    pub max_batch: usize,
    pub interval: Duration,
    pub max_queued_batches: usize,
    /// Bytes that may wait, every message and gap notice counted (see the module docs).
    pub max_bytes: usize,
}

/// The default byte budget of a queue.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 1 << 20;

/// What a pending gap notice counts against the byte budget: about its encoded size.
pub const GAP_NOTICE_BYTES: usize = 128;

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 50,
            interval: Duration::from_millis(16),
            max_queued_batches: 10,
            max_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

impl BatchConfig {
    /// How many publications may wait at once.
    pub fn capacity(&self) -> usize {
        self.max_batch.max(1).saturating_mul(self.max_queued_batches.max(1))
    }
}

/// Where a publication sits in its channel, for conflation and gap reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub channel: Arc<str>,
    pub seq: u64,
    pub key: Option<Arc<str>>,
}

/// A message waiting to be framed: a publication (with its position) or a control
/// message (without one).
///
/// Fan-out clones one per subscriber, so a clone is a single reference-count increment
/// on the publication's own allocation. Cloning the message and its channel name
/// separately cost two, and the channel name's count, shared by every publication in
/// flight, was incremented by the publishing thread while the connections' threads
/// decremented it: at a million deliveries a second that cache line bouncing between
/// cores was the fan-out loop's largest cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound(Arc<Queued>);

#[derive(Debug, PartialEq, Eq)]
struct Queued {
    message: EncodedMessage,
    position: Option<Position>,
    /// The first seq this covers: the position's own seq, except for a bundle.
    first: u64,
    /// For a field delta (see [`crate::delta`]), the whole value it stands for: what the
    /// queue sends instead when the value the delta applies to was dropped.
    fallback: Option<Outbound>,
}

impl Outbound {
    /// A control message (a reply, an error, a gap notice): never dropped or conflated,
    /// only counted against the byte budget.
    pub fn control(message: EncodedMessage) -> Outbound {
        Outbound(Arc::new(Queued { message, position: None, first: 0, fallback: None }))
    }

    /// A snapshot item of a subscription's start: queued like a control message (never
    /// dropped; the start as a whole is bounded in bytes where it is built), since a
    /// snapshot with a hole would show the app a table with a row missing.
    pub fn snapshot(message: EncodedMessage) -> Outbound {
        Outbound(Arc::new(Queued { message, position: None, first: 0, fallback: None }))
    }

    pub fn publication(message: EncodedMessage, position: Position) -> Outbound {
        let first = position.seq;
        Outbound(Arc::new(Queued { message, position: Some(position), first, fallback: None }))
    }

    /// `full`'s publication as a field delta (`message` carries `base`): queued at the
    /// same position, and replaced by `full` when the queue drops the value before it.
    pub fn delta(message: EncodedMessage, full: &Outbound) -> Outbound {
        let queued = &full.0;
        let fallback = Some(full.clone());
        Outbound(Arc::new(Queued { message, position: queued.position.clone(), first: queued.first, fallback }))
    }

    /// The whole value a field delta stands for; `None` for anything else.
    pub fn fallback(&self) -> Option<&Outbound> {
        self.0.fallback.as_ref()
    }

    /// Several publications of `channel`, seqs `first..=last` with those a resampled
    /// stream skipped left out (see [`crate::rate`]), in seq order, as one unit: their
    /// encoded texts joined by commas, which a frame carries as they are. A bundle goes
    /// into one frame whatever `max_batch` says (a resampled interval's output is
    /// delivered together), is never superseded, and is dropped whole under overflow,
    /// announced as one gap `first..=last`. `None` without messages.
    pub fn bundle<'a>(
        channel: &Arc<str>,
        first: u64,
        last: u64,
        messages: impl IntoIterator<Item = &'a EncodedMessage> + Clone,
    ) -> Option<Outbound> {
        let frame = encode_frame(messages);
        let joined = frame.get(1..frame.len() - 1).filter(|text| !text.is_empty())?;
        let message = EncodedMessage::from_json_object_text(joined.to_owned());
        let position = Position { channel: channel.clone(), seq: last.max(first), key: None };
        let first = first.min(last);
        Some(Outbound(Arc::new(Queued { message, position: Some(position), first, fallback: None })))
    }

    /// The first seq this covers (a bundle covers several).
    pub fn first_seq(&self) -> Option<u64> {
        self.0.position.as_ref().map(|_| self.0.first)
    }

    pub fn message(&self) -> &EncodedMessage {
        &self.0.message
    }

    /// The channel position; `None` for control messages.
    pub fn position(&self) -> Option<&Position> {
        self.0.position.as_ref()
    }
}

/// A contiguous run of seqs dropped on one channel for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub channel: Arc<str>,
    pub from: u64,
    pub to: u64,
    pub reason: GapReason,
}

impl Gap {
    pub fn len(&self) -> u64 {
        self.to - self.from + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The gap notice a client receives for this gap.
    pub fn notice(&self, timestamp: Timestamp) -> GapNotice {
        GapNotice { timestamp, channel: self.channel.to_string(), from: self.from, to: self.to, reason: self.reason }
    }
}

/// What a push cost, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub superseded: u32,
    pub overflow: u32,
    /// Messages not queued at all because the batcher is over its byte budget.
    pub refused: u32,
}

impl Dropped {
    /// Publications dropped (superseded or overflow), each announced by a gap notice.
    pub fn total(&self) -> u32 {
        self.superseded + self.overflow
    }

    /// Adds another push's cost to this one.
    pub fn add(&mut self, other: Dropped) {
        self.superseded += other.superseded;
        self.overflow += other.overflow;
        self.refused += other.refused;
    }
}

/// A frame ready to send: gap notices first, then the queued messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyFrame {
    pub gaps: Vec<Gap>,
    pub messages: Vec<Outbound>,
}

impl ReadyFrame {
    /// Number of messages in the frame, gap notices included.
    pub fn len(&self) -> usize {
        self.gaps.len() + self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's JSON text; `timestamp` stamps the gap notices.
    pub fn encode(&self, timestamp: Timestamp) -> String {
        if self.gaps.is_empty() {
            return encode_frame(self.messages.iter().map(Outbound::message));
        }
        let notices: Vec<EncodedMessage> = self
            .gaps
            .iter()
            .filter_map(|gap| EncodedMessage::encode(&ServerMessage::Control(Control::Gap(gap.notice(timestamp)))).ok())
            .collect();
        encode_frame(notices.iter().chain(self.messages.iter().map(Outbound::message)))
    }
}

/// The per-peer batching and backpressure state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct Batcher {
    config: BatchConfig,
    queue: VecDeque<Outbound>,
    /// Publications in `queue` (control messages are not counted or dropped).
    publications: usize,
    /// Publications in `queue` with a key. Below two, none can supersede another, and
    /// an overflowing push skips the search for one: a client that stopped reading
    /// overflows on every push, so that search ran per message per slow subscriber.
    keyed: usize,
    gaps: Vec<Gap>,
    /// Encoded bytes of `queue`, plus [`GAP_NOTICE_BYTES`] per pending gap.
    bytes: usize,
    /// Set once what may not be dropped exceeded the byte budget; from then on every
    /// push is refused.
    over_budget: bool,
    last_frame_at: Option<Duration>,
    /// Publications that may wait, when set apart from the frame size (see
    /// [`Batcher::for_own_queue`]).
    capacity: Option<usize>,
    /// Whether drops are recorded for gap notices (see [`Batcher::for_own_queue`]).
    notices: bool,
}

impl Batcher {
    pub fn new(config: BatchConfig) -> Batcher {
        Batcher {
            config,
            queue: VecDeque::new(),
            publications: 0,
            keyed: 0,
            gaps: Vec::new(),
            bytes: 0,
            over_budget: false,
            last_frame_at: None,
            capacity: None,
            notices: true,
        }
    }

    /// A batcher for a sender's own queue (the client's publishes): bounded at
    /// `capacity` publications whatever the frame size, and recording no gap notices,
    /// since its owner reports drops itself (the counts [`Batcher::push`] returns) and
    /// notices would take frame slots without ever being sent.
    pub fn for_own_queue(config: BatchConfig, capacity: usize) -> Batcher {
        Batcher { capacity: Some(capacity.max(1)), notices: false, ..Batcher::new(config) }
    }

    /// How many publications may wait.
    pub fn capacity(&self) -> usize {
        self.capacity.unwrap_or_else(|| self.config.capacity())
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Messages waiting, control messages included.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when neither messages nor gap notices wait.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.gaps.is_empty()
    }

    /// Bytes waiting, as the byte budget counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether messages that are never dropped exceeded the byte budget: the batcher
    /// refuses everything from then on, and its owner should end the session.
    pub fn is_over_budget(&self) -> bool {
        self.over_budget
    }

    /// Queues a message; when that overflows the queue, drops per the module rules and
    /// says what it dropped. Over the byte budget, the message is refused.
    pub fn push(&mut self, outbound: Outbound) -> Dropped {
        if self.over_budget {
            return Dropped { refused: 1, ..Dropped::default() };
        }
        self.count(&outbound, 1);
        self.queue.push_back(outbound);
        self.shed()
    }

    /// Empties the queue (its gaps stay), handing back what waited, oldest first: an
    /// owner that must put something in front of it pushes that, then these back.
    pub fn take_queue(&mut self) -> Vec<Outbound> {
        let queued: Vec<Outbound> = self.queue.drain(..).collect();
        self.publications = 0;
        self.keyed = 0;
        self.bytes = self.gaps.len() * GAP_NOTICE_BYTES;
        queued
    }

    /// What waits, oldest first.
    pub fn queued(&self) -> impl Iterator<Item = &Outbound> {
        self.queue.iter()
    }

    /// Takes new limits (a peer announced its own). What waits stays queued, down to
    /// the new capacity: the excess is dropped and reported as on a push.
    pub fn reconfigure(&mut self, config: BatchConfig) -> Dropped {
        self.config = config;
        self.shed()
    }

    /// Drops publications until the queue fits its capacity and its byte budget:
    /// superseded ones first, then the oldest. When only messages that are never dropped
    /// are left and they still exceed the budget, the batcher goes over budget.
    fn shed(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        while self.publications > self.capacity() || self.bytes > self.config.max_bytes {
            if self.publications == 0 {
                self.over_budget = true;
                break;
            }
            let superseded = if self.keyed >= 2 { self.oldest_superseded() } else { None };
            let (index, reason) = match superseded {
                Some(index) => (index, GapReason::Superseded),
                None => match self.queue.iter().position(|o| o.position().is_some()) {
                    Some(index) => (index, GapReason::Overflow),
                    None => {
                        self.over_budget = true;
                        break;
                    }
                },
            };
            let Some(removed) = self.queue.remove(index) else {
                break;
            };
            self.count(&removed, -1);
            let (Some(position), Some(first)) = (removed.position().cloned(), removed.first_seq()) else {
                break;
            };
            if reason == GapReason::Superseded {
                self.send_whole_after(index, &position);
            }
            self.record_gap(position.channel, first, position.seq, reason);
            match reason {
                GapReason::Superseded => dropped.superseded += 1,
                GapReason::Overflow => dropped.overflow += 1,
            }
        }
        dropped
    }

    /// Keeps the counts as `outbound` joins (+1) or leaves (-1) the queue.
    fn count(&mut self, outbound: &Outbound, delta: isize) {
        let size = outbound.message().len();
        self.bytes = if delta > 0 { self.bytes.saturating_add(size) } else { self.bytes.saturating_sub(size) };
        if let Some(position) = outbound.position() {
            self.publications = self.publications.saturating_add_signed(delta);
            if position.key.is_some() {
                self.keyed = self.keyed.saturating_add_signed(delta);
            }
        }
    }

    /// The value of `dropped`'s key queued next, from `index` on, goes whole if it was a
    /// field delta: the value it applied to is gone.
    fn send_whole_after(&mut self, index: usize, dropped: &Position) {
        let next = self
            .queue
            .iter()
            .skip(index)
            .position(|o| o.position().is_some_and(|p| p.channel == dropped.channel && p.key == dropped.key));
        let Some(at) = next.map(|n| n + index) else { return };
        let Some(whole) = self.queue[at].fallback().cloned() else { return };
        let delta = std::mem::replace(&mut self.queue[at], whole);
        self.count(&delta, -1);
        self.count(&self.queue[at].clone(), 1);
    }

    /// The oldest keyed publication that a newer queued one with the same channel and
    /// key makes redundant.
    fn oldest_superseded(&self) -> Option<usize> {
        let mut newer: HashSet<(&str, &str)> = HashSet::new();
        let mut oldest = None;
        for (index, outbound) in self.queue.iter().enumerate().rev() {
            let Some(Position { channel, key: Some(key), .. }) = outbound.position() else {
                continue;
            };
            if !newer.insert((channel, key)) {
                oldest = Some(index);
            }
        }
        oldest
    }

    fn record_gap(&mut self, channel: Arc<str>, from: u64, to: u64, reason: GapReason) {
        if !self.notices {
            return;
        }
        let extends =
            self.gaps.iter_mut().rev().find(|gap| gap.channel == channel && gap.reason == reason && gap.to + 1 == from);
        match extends {
            Some(gap) => gap.to = to,
            None => {
                self.gaps.push(Gap { channel, from, to, reason });
                self.bytes = self.bytes.saturating_add(GAP_NOTICE_BYTES);
            }
        }
    }

    /// When a frame may go next: `None` when nothing waits.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.is_empty() {
            return None;
        }
        Some(match self.last_frame_at {
            Some(last) => last + self.config.interval,
            None => Duration::ZERO,
        })
    }

    /// The earliest moment the next frame may go, whether or not anything waits yet:
    /// one interval after the last frame (zero before the first). A driver that looks
    /// again at this moment sees anything queued in between without being woken for it.
    pub fn pacing_until(&self) -> Duration {
        self.last_frame_at.map_or(Duration::ZERO, |last| last + self.config.interval)
    }

    /// The next frame, if one is due at `now`.
    pub fn poll_frame(&mut self, now: Duration) -> Option<ReadyFrame> {
        if self.poll_timeout()? > now {
            return None;
        }
        let max = self.config.max_batch.max(1);
        let gap_count = self.gaps.len().min(max);
        let gaps: Vec<Gap> = self.gaps.drain(..gap_count).collect();
        self.bytes = self.bytes.saturating_sub(gaps.len() * GAP_NOTICE_BYTES);
        let take = (max - gaps.len()).min(self.queue.len());
        let mut messages = Vec::with_capacity(take);
        messages.extend(self.queue.drain(..take));
        for outbound in &messages {
            self.count(outbound, -1);
        }
        self.last_frame_at = Some(now);
        Some(ReadyFrame { gaps, messages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn publication(channel: &str, seq: u64, key: Option<&str>) -> Outbound {
        let message = EncodedMessage::encode(&serde_json::json!({"channel": channel, "seq": seq})).unwrap();
        Outbound::publication(message, Position { channel: channel.into(), seq, key: key.map(Into::into) })
    }

    fn control(n: u64) -> Outbound {
        Outbound::control(EncodedMessage::encode(&serde_json::json!({"type": "pong", "n": n})).unwrap())
    }

    fn seqs(frame: &ReadyFrame) -> Vec<u64> {
        frame
            .messages
            .iter()
            .filter_map(|m| serde_json::from_str::<serde_json::Value>(m.message().as_str()).ok()?["seq"].as_u64())
            .collect()
    }

    fn small(max_batch: usize, max_queued_batches: usize) -> Batcher {
        Batcher::new(BatchConfig { max_batch, interval: ms(16), max_queued_batches, ..BatchConfig::default() })
    }

    #[test]
    fn a_bundle_goes_in_one_frame_and_is_dropped_whole_as_one_gap() {
        let channel: Arc<str> = "a".into();
        let items: Vec<Outbound> = [3, 5, 9].iter().map(|&seq| publication("a", seq, Some("k"))).collect();
        let bundle = Outbound::bundle(&channel, 3, 9, items.iter().map(Outbound::message)).unwrap();
        assert_eq!(bundle.first_seq(), Some(3));
        assert!(Outbound::bundle(&channel, 1, 1, std::iter::empty()).is_none(), "no bundle of nothing");
        let mut b = small(1, 1);
        b.push(bundle.clone());
        let frame = b.poll_frame(ms(0)).unwrap();
        let text = frame.encode(Timestamp::from_unix_micros(0));
        let sent: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let sent: Vec<u64> = sent.iter().filter_map(|m| m["seq"].as_u64()).collect();
        assert_eq!(sent, [3, 5, 9], "three publications in a frame of max_batch 1");
        // A queue of one: a second bundle pushes the first out, announced as 3..=9.
        b.push(bundle.clone());
        b.push(Outbound::bundle(&channel, 10, 12, items.iter().map(Outbound::message)).unwrap());
        let frame = b.poll_frame(ms(100)).unwrap();
        assert_eq!(frame.gaps, vec![Gap { channel, from: 3, to: 9, reason: GapReason::Overflow }]);
    }

    #[test]
    fn reconfigure_keeps_what_fits_and_reports_the_rest() {
        let mut b = small(4, 4);
        for seq in 1..=10 {
            b.push(publication("a", seq, None));
        }
        let dropped = b.reconfigure(BatchConfig {
            max_batch: 2,
            interval: ms(20),
            max_queued_batches: 3,
            ..BatchConfig::default()
        });
        assert_eq!(dropped.overflow, 4, "capacity 16 → 6: the oldest four go");
        let frame = b.poll_frame(ms(0)).unwrap();
        assert_eq!(frame.gaps, vec![Gap { channel: "a".into(), from: 1, to: 4, reason: GapReason::Overflow }]);
        assert_eq!(seqs(&frame), vec![5], "two per frame now, the gap notice included");
        assert_eq!(b.poll_timeout(), Some(ms(20)), "and the new interval");
        assert_eq!(b.reconfigure(BatchConfig::default()).total(), 0, "a larger capacity drops nothing");
    }

    #[test]
    fn first_message_goes_at_once_then_frames_wait_for_the_interval() {
        let mut b = Batcher::new(BatchConfig::default());
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.pacing_until(), Duration::ZERO);
        b.push(publication("a", 1, None));
        assert_eq!(b.poll_timeout(), Some(Duration::ZERO));
        let frame = b.poll_frame(ms(100)).unwrap();
        assert_eq!(seqs(&frame), vec![1]);
        assert_eq!(b.poll_timeout(), None, "nothing waits");
        assert_eq!(b.pacing_until(), ms(116), "but the next frame may not go before 116");
        b.push(publication("a", 2, None));
        b.push(publication("a", 3, None));
        assert_eq!(b.poll_timeout(), Some(ms(116)));
        assert_eq!(b.poll_frame(ms(115)), None);
        assert_eq!(seqs(&b.poll_frame(ms(116)).unwrap()), vec![2, 3]);
        assert_eq!(b.poll_frame(ms(200)), None);
    }

    #[test]
    fn frames_hold_at_most_max_batch() {
        let mut b = Batcher::new(BatchConfig::default());
        for seq in 1..=120 {
            b.push(publication("a", seq, None));
        }
        let mut now = ms(0);
        let mut sizes = vec![];
        while let Some(at) = b.poll_timeout() {
            now = now.max(at);
            sizes.push(b.poll_frame(now).unwrap().len());
        }
        assert_eq!(sizes, vec![50, 50, 20]);
        assert_eq!(now, ms(32));
    }

    #[test]
    fn overflow_drops_the_oldest_and_reports_the_exact_range() {
        let mut b = small(2, 2);
        let mut dropped = Dropped::default();
        for seq in 1..=7 {
            let d = b.push(publication("a", seq, None));
            dropped.overflow += d.overflow;
        }
        assert_eq!(dropped.overflow, 3);
        let frame = b.poll_frame(ms(0)).unwrap();
        assert_eq!(frame.gaps, vec![Gap { channel: "a".into(), from: 1, to: 3, reason: GapReason::Overflow }]);
        assert_eq!(seqs(&frame), vec![4]);
        assert_eq!(seqs(&b.poll_frame(ms(16)).unwrap()), vec![5, 6]);
        assert_eq!(seqs(&b.poll_frame(ms(32)).unwrap()), vec![7]);
    }

    #[test]
    fn conflation_drops_superseded_before_the_oldest() {
        let mut b = small(2, 2);
        b.push(publication("lp", 1, Some("OANDA")));
        b.push(publication("lp", 2, Some("LMAX")));
        b.push(publication("lp", 3, Some("OANDA")));
        b.push(publication("other", 1, None));
        let d = b.push(publication("lp", 4, Some("LMAX")));
        assert_eq!(d, Dropped { superseded: 1, overflow: 0, refused: 0 });
        let d = b.push(publication("lp", 5, Some("CITI")));
        assert_eq!(d, Dropped { superseded: 1, overflow: 0, refused: 0 });
        let d = b.push(publication("lp", 6, Some("HSBC")));
        assert_eq!(d, Dropped { superseded: 0, overflow: 1, refused: 0 });
        let frame = b.poll_frame(ms(0)).unwrap();
        assert_eq!(
            frame.gaps,
            vec![
                Gap { channel: "lp".into(), from: 1, to: 2, reason: GapReason::Superseded },
                Gap { channel: "lp".into(), from: 3, to: 3, reason: GapReason::Overflow },
            ]
        );
    }

    #[test]
    fn a_delta_whose_base_was_superseded_goes_whole() {
        let mut b = small(1, 3);
        let delta = |seq: u64, key: &str| {
            let full = publication("lp", seq, Some(key));
            let text = serde_json::json!({"channel": "lp", "seq": seq, "base": seq - 1});
            Outbound::delta(EncodedMessage::encode(&text).unwrap(), &full)
        };
        b.push(publication("lp", 1, Some("OANDA")));
        b.push(delta(2, "LMAX")); // its base (an earlier LMAX) was sent before
        b.push(delta(3, "OANDA")); // applies to seq 1
        let before = b.bytes();
        let d = b.push(publication("other", 1, None));
        assert_eq!(d, Dropped { superseded: 1, overflow: 0, refused: 0 }, "seq 1 is superseded by 3");
        let texts: Vec<&str> = b.queued().map(|o| o.message().as_str()).collect();
        assert!(texts[0].contains("\"base\""), "LMAX's delta stays a delta: {texts:?}");
        assert!(!texts[1].contains("base") && texts[1].contains("\"seq\":3"), "OANDA's goes whole: {texts:?}");
        assert!(b.queued().nth(1).unwrap().fallback().is_none());
        let whole = publication("lp", 3, Some("OANDA")).message().len();
        let sent_as_delta = delta(3, "OANDA").message().len();
        let one = publication("lp", 1, Some("OANDA")).message().len();
        let other = publication("other", 1, None).message().len();
        assert_eq!(b.bytes(), before - one - sent_as_delta + whole + other + GAP_NOTICE_BYTES, "bytes follow");
    }

    #[test]
    fn a_superseded_upsert_never_outlives_the_delete_that_follows_it() {
        // A delete is keyed like the upserts of its key, so under backpressure it is what
        // survives: the client applies the delete and the row stays gone.
        let mut b = small(1, 2);
        b.push(publication("lp", 1, Some("OANDA")));
        b.push(publication("lp", 2, Some("OANDA"))); // the delete
        let d = b.push(publication("lp", 3, Some("LMAX")));
        assert_eq!(d, Dropped { superseded: 1, overflow: 0, refused: 0 });
        let mut delivered = Vec::new();
        let mut gaps = Vec::new();
        let mut now = ms(0);
        while let Some(frame) = b.poll_frame(now) {
            delivered.extend(seqs(&frame));
            gaps.extend(frame.gaps);
            now += ms(16);
        }
        assert_eq!(delivered, [2, 3], "the upsert went, the delete stayed");
        assert_eq!(gaps, [Gap { channel: "lp".into(), from: 1, to: 1, reason: GapReason::Superseded }]);
    }

    #[test]
    fn conflation_still_applies_after_frames_and_drops_take_keyed_messages_out() {
        let mut b = small(2, 2);
        // Keyed messages leave the queue in a frame and through overflow; the count of
        // keyed messages that decides whether to look for superseded ones must follow.
        b.push(publication("lp", 1, Some("OANDA")));
        b.push(publication("lp", 2, None));
        assert_eq!(seqs(&b.poll_frame(ms(0)).unwrap()), vec![1, 2]);
        for seq in 3..=6 {
            b.push(publication("lp", seq, None));
        }
        assert_eq!(b.push(publication("lp", 7, Some("OANDA"))), Dropped { superseded: 0, overflow: 1, refused: 0 });
        assert_eq!(
            b.push(publication("lp", 8, Some("OANDA"))),
            Dropped { superseded: 1, overflow: 0, refused: 0 },
            "7 is superseded by 8"
        );
        assert_eq!(b.push(publication("lp", 9, None)), Dropped { superseded: 0, overflow: 1, refused: 0 });
        let frame = b.poll_frame(ms(16)).unwrap();
        assert_eq!(
            frame.gaps,
            vec![
                Gap { channel: "lp".into(), from: 3, to: 4, reason: GapReason::Overflow },
                Gap { channel: "lp".into(), from: 7, to: 7, reason: GapReason::Superseded },
            ]
        );
    }

    #[test]
    fn control_messages_are_never_dropped_or_reordered() {
        let mut b = small(2, 1);
        b.push(control(1));
        b.push(publication("a", 1, None));
        b.push(control(2));
        b.push(publication("a", 2, None));
        b.push(publication("a", 3, None));
        let frame = b.poll_frame(ms(0)).unwrap();
        assert_eq!(frame.gaps.len(), 1);
        assert_eq!(frame.messages.len(), 1);
        assert!(frame.messages[0].message().as_str().contains("\"n\":1"));
        let frame = b.poll_frame(ms(16)).unwrap();
        assert!(frame.messages[0].message().as_str().contains("\"n\":2"));
        assert_eq!(seqs(&frame), vec![2]);
    }

    #[test]
    fn the_byte_budget_sheds_publications_before_it_refuses_anything() {
        let message = |n: usize| EncodedMessage::encode(&serde_json::json!({"p": "x".repeat(n)})).unwrap();
        let size = message(90).len();
        let mut b = Batcher::new(BatchConfig { max_bytes: 4 * size, ..BatchConfig::default() });
        for seq in 1..=4 {
            b.push(Outbound::publication(message(90), Position { channel: "a".into(), seq, key: None }));
        }
        assert_eq!(b.bytes(), 4 * size);
        // A control message sheds the oldest publications: one to make room, and two more
        // for the gap notice that now reports them (GAP_NOTICE_BYTES).
        let d = b.push(Outbound::control(message(90)));
        assert_eq!((d.overflow, d.refused), (3, 0));
        assert!(!b.is_over_budget());
        assert!(b.bytes() <= 4 * size);
        // Control messages alone over the budget: over budget, and everything is refused.
        for _ in 0..3 {
            b.push(Outbound::control(message(90)));
        }
        assert!(b.is_over_budget());
        assert_eq!(
            b.push(Outbound::publication(message(1), Position { channel: "a".into(), seq: 5, key: None })).refused,
            1
        );
        assert_eq!(b.push(Outbound::control(message(1))).refused, 1);
    }

    #[test]
    fn gap_notices_lead_the_frame_on_the_wire() {
        let mut b = small(1, 1);
        b.push(publication("a", 1, None));
        b.push(publication("a", 2, None));
        let text = b.poll_frame(ms(0)).unwrap().encode(Timestamp::UNIX_EPOCH);
        assert_eq!(
            text,
            concat!(
                r#"[{"type":"gap","timestamp":"1970-01-01T00:00:00.000000Z","#,
                r#""channel":"a","from":1,"to":1,"reason":"overflow"}]"#,
            )
        );
        let text = b.poll_frame(ms(16)).unwrap().encode(Timestamp::UNIX_EPOCH);
        assert_eq!(text, r#"[{"channel":"a","seq":2}]"#);
    }
}
