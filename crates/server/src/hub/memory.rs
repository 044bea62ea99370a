//! The in-memory engine: every channel lives in this process.
//!
//! Everything that must be atomic with respect to publications (assigning a seq,
//! recording history, fanning out, and starting a subscription at an exact position)
//! happens under the channel's lock, so a subscriber sees every seq after its
//! `subscribed` exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures_util::future::BoxFuture;
use tidewire_protocol::Op;
use tidewire_protocol::batch::Outbound;

use super::channel::{Channel, Start, Stored};
use super::delta::Floor;
use super::engine::{Engine, Reply, Shared, SubscribeRequest, snapshot_end, subscribed};
use super::{Accepted, ChannelInfo, HistoryPage, HistoryQuery, Prepared, PublishError, lock};

#[derive(Debug)]
pub struct MemoryEngine {
    shared: Arc<Shared>,
    channels: Mutex<HashMap<Arc<str>, Arc<Mutex<Channel>>>>,
    next_epoch: AtomicU64,
}

impl MemoryEngine {
    pub fn new(shared: Arc<Shared>) -> MemoryEngine {
        MemoryEngine { shared, channels: Mutex::new(HashMap::new()), next_epoch: AtomicU64::new(1) }
    }

    /// The channel `name`, created when new, unless the node is at `--max-node-channels`.
    fn channel(&self, name: &str) -> Result<Arc<Mutex<Channel>>, PublishError> {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(name) {
            return Ok(channel.clone());
        }
        if channels.len() >= self.shared.config.max_node_channels {
            return Err(self.shared.node_full());
        }
        let epoch = format!("{}-{}", self.shared.instance, self.next_epoch.fetch_add(1, Ordering::Relaxed));
        let name: Arc<str> = name.into();
        let channel = Arc::new(Mutex::new(Channel::new(name.clone(), epoch.into())));
        channels.insert(name, channel.clone());
        self.shared.metrics.channels.set(channels.len() as i64);
        Ok(channel)
    }

    /// Runs `f` on the live channel `name` (creating it), retrying when it was dropped as
    /// idle between the lookup and the lock.
    fn with_channel<T>(&self, name: &str, f: impl FnOnce(&mut Channel) -> T) -> Result<T, PublishError> {
        loop {
            let channel = self.channel(name)?;
            let mut channel = lock(&channel);
            if !channel.removed {
                return Ok(f(&mut channel));
            }
        }
    }

    /// Drops `channel` (locked by the caller as `locked`) from the map when it is idle
    /// (nothing to lose), so subscribing to random names cannot grow memory without
    /// bound. The channel's lock is taken before the map's, never the other way round,
    /// so a busy channel never holds up lookups of the others.
    fn forget_if_idle(&self, channel: &Arc<Mutex<Channel>>, locked: &mut Channel) {
        let now = self.shared.clock.now();
        locked.expire(now, self.shared.config.history_ttl);
        locked.expire_keys(now, self.shared.config.idempotency_window);
        if !locked.is_idle(now, self.shared.config.channel_ttl) {
            return;
        }
        locked.removed = true;
        let mut channels = lock(&self.channels);
        if channels.get(&*locked.name).is_some_and(|mapped| Arc::ptr_eq(mapped, channel)) {
            channels.remove(&*locked.name);
            self.shared.metrics.channels.set(channels.len() as i64);
        }
    }

    fn publish_now(&self, prepared: Prepared) -> Result<Accepted, PublishError> {
        let name = prepared.channel.clone();
        self.with_channel(&name, move |channel| self.publish_locked(channel, prepared))?
    }

    /// Numbers, stores and fans out under the channel's lock: the message was
    /// serialized before, only its seq is written in here.
    fn publish_locked(&self, channel: &mut Channel, prepared: Prepared) -> Result<Accepted, PublishError> {
        let config = &self.shared.config;
        let now = self.shared.clock.now();
        let Prepared { key, idempotency_key, op, template, .. } = prepared;
        if let Some(idempotency_key) = &idempotency_key {
            channel.expire_keys(now, config.idempotency_window);
            if let Some(seq) = channel.published_with(idempotency_key) {
                return Ok(Accepted { channel: channel.name.to_string(), seq, duplicate: true });
            }
        }
        let seq = channel.head + 1;
        let key: Option<Arc<str>> = key.as_deref().map(Into::into);
        let message = template.into_message(seq);
        if let Some(key) = key.as_ref().filter(|_| op == Op::Upsert) {
            match channel.admits_latest(key, message.len(), config.max_keys_per_channel, self.shared.max_start_bytes())
            {
                Ok(()) => {}
                Err(true) => return Err(self.shared.too_many_keys(&channel.name)),
                Err(false) => return Err(self.shared.too_many_latest_bytes(&channel.name)),
            }
        }
        channel.expire(now, config.history_ttl);
        let stored = Stored::new(&channel.name, seq, key, message, now);
        let due = channel.throttle.next_due();
        let (delivered, dropped) = channel.publish(stored, op, config.history_size, self.shared.throttle_limits());
        if let Some(wake) = &channel.resampler {
            if channel.throttle.next_due().is_some_and(|at| due.is_none_or(|due| at < due)) {
                wake.notify_one();
            }
        }
        if let Some(idempotency_key) = &idempotency_key {
            channel.remember(idempotency_key, seq, now, config.idempotency_keys_per_channel);
        }
        self.shared.metrics.delivered.inc_by(delivered as u64);
        self.shared.count_drops(dropped);
        Ok(Accepted { channel: channel.name.to_string(), seq, duplicate: false })
    }

    /// Queues `subscribed`, then the recovered publications or the keyed snapshot, then
    /// registers the subscriber, all under the channel's lock.
    fn subscribe_locked(&self, channel: &mut Channel, request: SubscribeRequest) {
        let SubscribeRequest { connection, outbox, since, id, snapshot_end: mark_end, filter, rate, deltas, .. } =
            request;
        channel.expire(self.shared.clock.now(), self.shared.config.history_ttl);
        let start = match &since {
            Some(position) if position.epoch.as_deref().is_none_or(|e| e == &*channel.epoch) => {
                let (max, max_bytes) = (self.shared.max_recovery(), self.shared.max_start_bytes());
                match channel.recover(position.seq, max, max_bytes, filter.as_deref(), rate.is_some()) {
                    Some(replay) => Start::Recovered(replay),
                    None => Start::Snapshot(channel.snapshot(filter.as_deref())),
                }
            }
            _ => Start::Snapshot(channel.snapshot(filter.as_deref())),
        };
        let recovered = since.map(|_| matches!(start, Start::Recovered(_)));
        let deltas = deltas.then(|| Floor::at_start(channel.head, recovered != Some(true)));
        let subscribed = subscribed(id, &channel.name, channel.head, &channel.epoch, recovered, rate, deltas.is_some());
        let mut outbounds = vec![Outbound::control(subscribed)];
        match start {
            Start::Recovered(replay) => outbounds.extend(replay),
            Start::Snapshot(latest) => {
                outbounds.extend(latest.into_iter().map(Outbound::snapshot));
                if mark_end {
                    outbounds.push(snapshot_end(&channel.name, channel.head));
                }
            }
        }
        let dropped = outbox.push_all(outbounds);
        self.shared.count_drops(dropped);
        if channel.add(connection, outbox, filter, rate, deltas) {
            self.shared.metrics.subscriptions.inc();
        }
    }

    /// Starts the task that sends `channel`'s throttled outputs, unless one runs (or the
    /// node runs on a manual clock, which nothing may sleep on: see
    /// [`crate::Hub::flush_throttled`]).
    fn start_resampler(&self, channel: &Arc<Mutex<Channel>>, locked: &mut Channel) {
        if locked.resampler.is_some() || locked.throttle.is_empty() || self.shared.clock.is_manual() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let wake = Arc::new(tokio::sync::Notify::new());
        locked.resampler = Some(wake.clone());
        runtime.spawn(resample(self.shared.clone(), Arc::downgrade(channel), wake));
    }
}

/// Sends a channel's throttled outputs when they are due, while it has throttled
/// subscribers: woken when a publication makes something due sooner than it planned,
/// and when a subscriber leaves (so it can end).
async fn resample(shared: Arc<Shared>, channel: Weak<Mutex<Channel>>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(channel) = channel.upgrade() else { return };
            let mut locked = lock(&channel);
            if locked.removed || locked.throttle.is_empty() {
                locked.resampler = None;
                return;
            }
            let delivered = locked.throttle.flush_due(shared.clock.now());
            shared.metrics.delivered.inc_by(delivered.publications);
            shared.count_drops(delivered.dropped);
            locked.throttle.next_due()
        };
        match next {
            Some(at) => {
                let wait = at.saturating_duration_since(shared.clock.now());
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

impl Engine for MemoryEngine {
    fn publish(&self, prepared: Prepared) -> BoxFuture<'_, Result<Accepted, PublishError>> {
        let result = self.publish_now(prepared);
        Box::pin(std::future::ready(result))
    }

    /// Queues `subscribed`, then the recovered publications or the keyed snapshot, then
    /// registers the subscriber, all under the channel's lock.
    fn subscribe(&self, request: SubscribeRequest) -> Result<(), PublishError> {
        loop {
            let channel = self.channel(&request.channel)?;
            let mut locked = lock(&channel);
            if !locked.removed {
                self.subscribe_locked(&mut locked, request);
                self.start_resampler(&channel, &mut locked);
                return Ok(());
            }
        }
    }

    fn flush_throttled(&self) {
        let channels: Vec<_> = lock(&self.channels).values().cloned().collect();
        for channel in channels {
            let mut locked = lock(&channel);
            if locked.throttle.is_empty() {
                continue;
            }
            let delivered = locked.throttle.flush_due(self.shared.clock.now());
            self.shared.metrics.delivered.inc_by(delivered.publications);
            self.shared.count_drops(delivered.dropped);
        }
    }

    /// Expires history, and forgets idle channels, across the node: a channel nobody
    /// touches any more must not keep its memory until someone does.
    fn sweep(&self) {
        let channels: Vec<_> = lock(&self.channels).values().cloned().collect();
        let mut keys = 0;
        for channel in &channels {
            let mut locked = lock(channel);
            self.forget_if_idle(channel, &mut locked);
            if !locked.removed {
                keys += locked.key_count();
            }
        }
        self.shared.metrics.keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    fn unsubscribe(&self, connection: u64, channel_name: &str, reply: Option<Reply>) -> bool {
        let found = lock(&self.channels).get(channel_name).cloned();
        let removed = found.is_some_and(|channel| {
            let mut locked = lock(&channel);
            let removed = locked.remove(connection);
            if let Some(wake) = &locked.resampler {
                wake.notify_one();
            }
            if removed {
                self.forget_if_idle(&channel, &mut locked);
            }
            removed
        });
        if removed {
            self.shared.metrics.subscriptions.dec();
        }
        Reply::deliver(reply);
        removed
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, PublishError>> {
        let found = lock(&self.channels).get(channel).cloned();
        let page = match found {
            Some(channel) => {
                let mut locked = lock(&channel);
                locked.expire(self.shared.clock.now(), self.shared.config.history_ttl);
                HistoryPage::of(locked.epoch.to_string(), locked.head, locked.stored(), query)
            }
            // A channel this node never held (or forgot as idle) has nothing stored.
            None => HistoryPage { epoch: String::new(), head: 0, messages: Vec::new(), more: false },
        };
        Box::pin(std::future::ready(Ok(page)))
    }

    fn members(&self, channel: &str) -> Vec<u64> {
        let found = lock(&self.channels).get(channel).cloned();
        found.map(|c| lock(&c).subscriber_ids()).unwrap_or_default()
    }

    fn channels(&self) -> BoxFuture<'_, Vec<ChannelInfo>> {
        let channels: Vec<_> = lock(&self.channels).values().cloned().collect();
        let mut infos: Vec<ChannelInfo> = channels
            .iter()
            .map(|c| {
                let c = lock(c);
                ChannelInfo {
                    channel: c.name.to_string(),
                    subscribers: c.subscriber_count(),
                    seq: c.head,
                    epoch: c.epoch.to_string(),
                    history: c.history_len(),
                }
            })
            .collect();
        infos.sort_by(|a, b| a.channel.cmp(&b.channel));
        Box::pin(std::future::ready(infos))
    }
}
