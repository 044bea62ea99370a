//! One channel's local fan-out on this node.
//!
//! A channel with local subscribers has one actor task: the only place that fans the
//! channel out on this node. It handles, in order, what pub/sub delivers and the
//! subscribe and unsubscribe requests. A new subscription reads its start (head, epoch,
//! and either the replay after `since` or the snapshot) after the node's pub/sub
//! subscription is confirmed, so anything published later arrives through pub/sub and
//! the subscriber's start position separates the two exactly.
//!
//! **Epochs.** A channel nobody has published to has no state in Redis and the empty
//! epoch. When its first publication creates the epoch, the actor re-announces the
//! subscription with the new epoch and `recovered: true` (nothing was missed); any other
//! change of epoch means Redis lost the channel and is announced with `recovered: false`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidewire_protocol::batch::{Outbound, Position};
use tidewire_protocol::filter::{Filter, publication_key};
use tidewire_protocol::message::{GapNotice, GapReason};
use tidewire_protocol::{Control, EncodedMessage, PublicationTemplate};
use tokio::sync::{mpsc, oneshot};

use super::EngineInner;
use super::scripts::{Delivered, Range};
use crate::hub::delta::{self, Change, Deltas, Floor};
use crate::hub::engine::{Reply, SubscribeRequest, control, snapshot_end, subscribed};
use crate::hub::throttle::{self, Throttle};
use crate::hub::{Outbox, now_timestamp};

/// What an actor is asked to do.
pub enum Input {
    Delivered(Delivered),
    Subscribe(SubscribeRequest),
    Unsubscribe(u64, Option<Reply>),
    /// Pub/sub was re-established: catch up from Redis.
    Resync,
    Stop,
}

/// How often a channel actor's step asks Redis again while it does not answer.
const BROKER_RETRY: Duration = Duration::from_millis(250);

/// Runs a channel actor's step until Redis answers. Steps wait for the broker rather
/// than being skipped: the channel's subscribers stay connected meanwhile, and a skipped
/// step would leave the actor's view of the channel behind Redis's.
pub async fn until_redis_answers<T, Fut>(channel: &str, step: &str, mut attempt: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                tracing::debug!(channel, "{step} waits for the broker: {e}");
                tokio::time::sleep(BROKER_RETRY).await;
            }
        }
    }
}

pub struct Actor {
    engine: Arc<EngineInner>,
    channel: Arc<str>,
    /// Local subscribers, the seq after which each receives live publications, and its
    /// filter.
    subscribers: HashMap<u64, Local>,
    /// Each key's last value, while a local subscriber takes deltas (see
    /// [`crate::hub::delta`]), and how many do.
    deltas: Deltas,
    delta_subscribers: usize,
    /// Local subscribers that asked for a rate (see [`crate::hub::throttle`]).
    throttle: Throttle,
    /// `None` until the first start is read; `Some("")` while the channel has no state.
    epoch: Option<Arc<str>>,
    /// Last seq fanned out (or known to be before every local subscriber's start).
    head: u64,
    /// Local subscribers (throttled or not) that asked for `snapshot-end`: told again
    /// after a snapshot sent when the channel's history was lost.
    snapshot_ends: HashSet<u64>,
    /// Connections with a start queued here (shared with the engine's handle).
    starting: Arc<Mutex<HashSet<u64>>>,
}

impl Actor {
    pub fn new(engine: Arc<EngineInner>, channel: &str, starting: Arc<Mutex<HashSet<u64>>>) -> Actor {
        Actor {
            engine,
            channel: channel.into(),
            subscribers: HashMap::new(),
            deltas: Deltas::default(),
            delta_subscribers: 0,
            snapshot_ends: HashSet::new(),
            throttle: Throttle::default(),
            epoch: None,
            head: 0,
            starting,
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Input>, ready: oneshot::Receiver<()>) {
        // Listen before reading state, so nothing published after the read is missed.
        let _ = ready.await;
        // The throttled streams' timer, reset only when what is due changes.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let input = match self.throttle.next_due() {
                Some(at) => {
                    let deadline = tokio::time::Instant::now() + at.saturating_duration_since(self.now());
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    tokio::select! {
                        input = inbox.recv() => input,
                        () = &mut timer => {
                            let delivered = self.throttle.flush_due(self.now());
                            self.count(delivered);
                            continue;
                        }
                    }
                }
                None => inbox.recv().await,
            };
            let Some(input) = input else { return };
            match input {
                Input::Subscribe(request) => {
                    let connection = request.connection;
                    self.subscribe(request).await;
                    crate::hub::lock(&self.starting).remove(&connection);
                }
                Input::Unsubscribe(connection, reply) => {
                    self.remove_local(connection);
                    self.throttle.leave(connection);
                    self.snapshot_ends.remove(&connection);
                    self.forget_values_unless_used();
                    Reply::deliver(reply);
                }
                Input::Delivered(delivered) => self.deliver(delivered).await,
                Input::Resync => self.resync().await,
                Input::Stop => return,
            }
        }
    }

    fn now(&self) -> std::time::Instant {
        self.engine.shared.clock.now()
    }

    fn count(&self, delivered: throttle::Delivered) {
        self.engine.shared.metrics.delivered.inc_by(delivered.publications);
        self.engine.shared.count_drops(delivered.dropped);
    }

    /// Whether the actor has seen the channel without state, so that `epoch` appearing
    /// is its creation rather than a loss.
    fn awaits_creation(&self) -> bool {
        self.epoch.as_deref() == Some("") && self.head == 0
    }

    async fn subscribe(&mut self, request: SubscribeRequest) {
        let mut start = until_redis_answers(&self.channel, "subscribe", || {
            self.engine.start(&self.channel, request.since.as_ref())
        })
        .await;
        let rolled_back =
            !start.epoch.is_empty() && self.epoch.as_deref() == Some(start.epoch.as_str()) && start.head < self.head;
        if rolled_back {
            // Redis went back in time: the stream starts again under a new epoch, from
            // what Redis holds now (its snapshot).
            let epoch = self.engine.rotate_epoch(&self.channel).await;
            start = until_redis_answers(&self.channel, "subscribe", || self.engine.start(&self.channel, None)).await;
            start.epoch = epoch;
            start.recovered = false;
        }
        let epoch: Arc<str> = start.epoch.as_str().into();
        if self.epoch.as_deref() != Some(&*epoch) {
            if self.awaits_creation() {
                // Created since the last start: what the others missed arrives through
                // pub/sub, which delivers every seq after their start of 0.
                self.epoch_created(epoch.clone());
            } else {
                if self.epoch.is_some() {
                    self.epoch_changed(epoch.clone(), start.head).await;
                }
                self.epoch = Some(epoch.clone());
                self.head = start.head;
            }
        }
        let recovered = request.since.as_ref().map(|_| start.recovered);
        let rate = request.rate;
        let deltas = request.deltas.then(|| Floor::at_start(start.head, !start.recovered));
        let subscribed = subscribed(request.id, &self.channel, start.head, &epoch, recovered, rate, deltas.is_some());
        let mut outbounds = vec![Outbound::control(subscribed)];
        if start.recovered {
            let first = start.head + 1 - start.texts.len() as u64;
            let mut replay: Vec<(u64, String)> = start
                .texts
                .into_iter()
                .enumerate()
                .map(|(i, text)| (first + i as u64, text))
                .filter(|(_, text)| admits_text(request.filter.as_deref(), text, None))
                .collect();
            if rate.is_some() {
                replay = throttle::conflated(replay, |(_, text)| publication_key(text).map(Into::into));
            }
            for (seq, text) in replay {
                let message = PublicationTemplate::message_from_text(text);
                let position = Position { channel: self.channel.clone(), seq, key: None };
                outbounds.push(Outbound::publication(message, position));
            }
        } else {
            let mut latest: Vec<(u64, String)> = start
                .texts
                .into_iter()
                .filter_map(|t| t.split_once('\n').and_then(|(seq, msg)| Some((seq.parse().ok()?, msg.to_owned()))))
                .collect();
            latest.sort_by_key(|(seq, _)| *seq);
            if deltas.is_some() && self.delta_subscribers == 0 && !self.throttle.wants_deltas() {
                // The table starts being kept: with the values this snapshot holds.
                self.deltas.seed(latest.iter().map(|(_, text)| text.as_str()));
            }
            for (_, text) in latest {
                if !admits_text(request.filter.as_deref(), &text, None) {
                    continue;
                }
                let message = PublicationTemplate::message_from_text(text).marked_as_snapshot();
                outbounds.push(Outbound::snapshot(message));
            }
            if request.snapshot_end {
                outbounds.push(snapshot_end(&self.channel, start.head));
            }
        }
        let dropped = request.outbox.push_all(outbounds);
        self.engine.shared.count_drops(dropped);
        if request.snapshot_end {
            self.snapshot_ends.insert(request.connection);
        } else {
            self.snapshot_ends.remove(&request.connection);
        }
        match rate {
            Some(rate) => {
                self.remove_local(request.connection);
                let (outbox, filter) = (request.outbox, request.filter);
                self.throttle.join(request.connection, outbox, filter, rate, start.head, deltas.is_some());
            }
            None => {
                self.throttle.leave(request.connection);
                self.remove_local(request.connection);
                self.delta_subscribers += usize::from(deltas.is_some());
                let local = Local { outbox: request.outbox, start: start.head, filter: request.filter, deltas };
                self.subscribers.insert(request.connection, local);
            }
        }
        self.forget_values_unless_used();
    }

    /// Forgets an unthrottled subscriber.
    fn remove_local(&mut self, connection: u64) {
        let removed = self.subscribers.remove(&connection);
        if removed.is_some_and(|l| l.deltas.is_some()) {
            self.delta_subscribers -= 1;
        }
    }

    /// Forgets the values kept for deltas once no subscriber takes them.
    fn forget_values_unless_used(&mut self) {
        if self.delta_subscribers == 0 && !self.throttle.wants_deltas() {
            self.deltas.reset();
        }
    }

    async fn deliver(&mut self, delivered: Delivered) {
        if self.epoch.as_deref() != Some(&*delivered.epoch) {
            if self.epoch.is_none() && self.subscribers.is_empty() {
                return; // nobody to tell yet; the first subscribe sets the epoch
            }
            if self.awaits_creation() {
                self.epoch_created(delivered.epoch.clone());
            } else {
                self.epoch_changed(delivered.epoch.clone(), delivered.seq.saturating_sub(1)).await;
            }
        }
        if delivered.seq <= self.head {
            return;
        }
        if delivered.seq > self.head + 1 {
            self.fill(self.head + 1, delivered.seq - 1).await;
        }
        self.fan_out(delivered.seq, Some(delivered.key), delivered.message);
    }

    /// Fans out one publication to the subscribers whose start is before it.
    /// `key`: `Some` with the publication's key (`Some(None)`: unkeyed) when pub/sub
    /// said it; `None` for a text from the stream, whose key a key filter must read.
    fn fan_out(&mut self, seq: u64, key: Option<Option<Arc<str>>>, message: EncodedMessage) {
        // Read once for every subscriber, and only if a key filter needs it.
        let key = match key {
            Some(key) => key,
            None if self.subscribers.values().any(|l| l.filter.as_ref().is_some_and(|f| f.has_keys())) => {
                publication_key(message.as_str()).map(Into::into)
            }
            None => None,
        };
        let outbound = Outbound::publication(message, Position { channel: self.channel.clone(), seq, key });
        let unthrottled_deltas = self.delta_subscribers > 0;
        let (change, delta) = if unthrottled_deltas || self.throttle.wants_deltas() {
            self.deltas.offer(&outbound, unthrottled_deltas)
        } else {
            (Change::None, None)
        };
        let mut delivered = 0;
        for Local { outbox, start, filter, deltas } in self.subscribers.values() {
            let key = outbound.position().and_then(|p| p.key.as_deref());
            let admitted = filter.as_ref().is_none_or(|f| f.admits_encoded(outbound.message().as_str(), key));
            if seq > *start && admitted {
                let sent = delta::choose(&outbound, delta.as_ref(), *deltas, filter.as_deref());
                let dropped = outbox.push(sent.clone());
                self.engine.shared.count_drops(dropped);
                delivered += 1;
            }
        }
        self.engine.shared.metrics.delivered.inc_by(delivered);
        if !self.throttle.is_empty() {
            let limits = self.engine.shared.throttle_limits();
            let resampled = self.throttle.offer(&outbound, change, self.now(), limits);
            self.count(resampled);
        }
        self.head = seq;
    }

    /// Delivers `from..=to` from the stream, or announces it as lost.
    async fn fill(&mut self, from: u64, to: u64) {
        match self.engine.range(&self.channel, from, to).await {
            Ok(Range { texts: Some(texts), .. }) => {
                for (i, text) in texts.into_iter().enumerate() {
                    self.fan_out(from + i as u64, None, PublicationTemplate::message_from_text(text));
                }
            }
            _ => {
                tracing::warn!(
                    channel = %self.channel,
                    from,
                    to,
                    "publications missed while disconnected are gone; announcing a gap"
                );
                // Values after the gap cannot be deltas of values before it.
                self.deltas.reset();
                // What throttled streams hold came before the gap, so it goes first.
                let delivered = self.throttle.flush_all(self.now());
                self.count(delivered);
                let notify = |outbox: &Arc<Outbox>, start: u64| {
                    let first = from.max(start + 1);
                    if first > to {
                        return;
                    }
                    let notice = Control::Gap(GapNotice {
                        timestamp: now_timestamp(),
                        channel: self.channel.to_string(),
                        from: first,
                        to,
                        reason: GapReason::Overflow,
                    });
                    outbox.push(Outbound::control(control(notice)));
                };
                for local in self.subscribers.values() {
                    notify(&local.outbox, local.start);
                }
                self.throttle.each_member(notify);
                self.head = to;
            }
        }
    }

    /// After pub/sub came back: deliver what was published meanwhile.
    async fn resync(&mut self) {
        if self.epoch.is_none() {
            return; // no start read yet: the first subscribe reads the current state
        }
        let range =
            until_redis_answers(&self.channel, "resync", || self.engine.range(&self.channel, self.head + 1, u64::MAX))
                .await;
        let epoch: Arc<str> = range.epoch.as_str().into();
        if self.epoch.as_deref() != Some(&*epoch) {
            if range.epoch.is_empty() {
                // Lost, or expired, while pub/sub was down: nothing to deliver, and the
                // next publication creates a new epoch.
                self.epoch_changed(epoch, 0).await;
                return;
            }
            if self.awaits_creation() {
                self.epoch_created(epoch);
            } else {
                self.epoch_changed(epoch, range.head).await;
                return;
            }
        }
        if range.head < self.head {
            let epoch = self.engine.rotate_epoch(&self.channel).await;
            self.epoch_changed(epoch.as_str().into(), range.head).await;
            return;
        }
        if range.head > self.head {
            let (from, to) = (self.head + 1, range.head);
            match range.texts {
                Some(texts) => {
                    for (i, text) in texts.into_iter().enumerate() {
                        self.fan_out(from + i as u64, None, PublicationTemplate::message_from_text(text));
                    }
                }
                None => self.fill(from, to).await,
            }
        }
    }

    /// Re-announces every local subscription with a new epoch.
    fn announce(&mut self, epoch: &Arc<str>, head: u64, recovered: bool) {
        // The stream starts again at `head`: deltas start after it.
        self.deltas.reset();
        for local in self.subscribers.values_mut() {
            let deltas = local.deltas.is_some();
            let message = subscribed(None, &self.channel, head, epoch, Some(recovered), None, deltas);
            local.outbox.push(Outbound::control(message));
            local.start = head;
            local.deltas = local.deltas.map(|_| Floor(head));
        }
        let channel = &self.channel;
        self.throttle.restart(head, |member| {
            let rate = Some(member.rate);
            let message = subscribed(None, channel, head, epoch, Some(recovered), rate, member.deltas);
            member.outbox.push(Outbound::control(message));
        });
    }

    /// After an unasked `recovered: false`: every local subscriber's snapshot of what
    /// Redis holds up to `head` (what follows arrives live), then `snapshot-end` where
    /// it was asked for, so each client's table is whole again without asking.
    async fn resend_snapshots(&mut self, head: u64) {
        let start = until_redis_answers(&self.channel, "snapshot", || self.engine.start(&self.channel, None)).await;
        let mut latest: Vec<(u64, String)> = start
            .texts
            .into_iter()
            .filter_map(|t| t.split_once('\n').and_then(|(seq, msg)| Some((seq.parse().ok()?, msg.to_owned()))))
            .filter(|(seq, _)| *seq <= head)
            .collect();
        latest.sort_by_key(|(seq, _)| *seq);
        let messages: Vec<EncodedMessage> = latest
            .iter()
            .map(|(_, text)| PublicationTemplate::message_from_text(text.clone()).marked_as_snapshot())
            .collect();
        let (channel, ends) = (&self.channel, &self.snapshot_ends);
        let send = |connection: u64, outbox: &Arc<Outbox>, filter: Option<&Filter>| {
            let mut outbounds: Vec<Outbound> = (latest.iter().zip(&messages))
                .filter(|((_, text), _)| admits_text(filter, text, None))
                .map(|(_, message)| Outbound::snapshot(message.clone()))
                .collect();
            if ends.contains(&connection) {
                outbounds.push(snapshot_end(channel, head));
            }
            outbox.push_all(outbounds)
        };
        let mut dropped = tidewire_protocol::batch::Dropped::default();
        for (connection, local) in &self.subscribers {
            dropped.add(send(*connection, &local.outbox, local.filter.as_deref()));
        }
        self.throttle.members(|member| dropped.add(send(member.connection, member.outbox, member.filter)));
        self.engine.shared.count_drops(dropped);
    }

    /// The channel's first publication created its epoch: subscribers learn it, at their
    /// position 0, as a continuation (nothing was missed).
    fn epoch_created(&mut self, epoch: Arc<str>) {
        tracing::debug!(channel = %self.channel, %epoch, "channel created");
        self.announce(&epoch, 0, true);
        self.epoch = Some(epoch);
        self.head = 0;
    }

    /// Redis lost the channel (or was flushed, or its state expired): tell every local
    /// subscriber that its position is void, with a fresh `subscribed` that says
    /// `recovered: false`.
    async fn epoch_changed(&mut self, epoch: Arc<str>, head: u64) {
        tracing::warn!(channel = %self.channel, %epoch, "channel epoch changed: history was lost");
        self.announce(&epoch, head, false);
        self.epoch = Some(epoch);
        self.head = head;
        self.resend_snapshots(head).await;
    }
}

/// An unthrottled local subscriber.
struct Local {
    outbox: Arc<Outbox>,
    /// The seq after which it receives live publications.
    start: u64,
    filter: Option<Arc<Filter>>,
    /// Set when it was granted deltas: where they may start.
    deltas: Option<Floor>,
}

/// Whether `filter` lets the publication `text` through; its key, when the caller does
/// not have it (a start's texts carry none), is read from the text only for a filter
/// that looks at keys, and only once its type passed.
fn admits_text(filter: Option<&Filter>, text: &str, key: Option<&str>) -> bool {
    let Some(filter) = filter else { return true };
    if !filter.admits_type_of(text) {
        return false;
    }
    match key {
        None if filter.has_keys() => filter.admits_encoded(text, publication_key(text).as_deref()),
        key => filter.admits_encoded(text, key),
    }
}
