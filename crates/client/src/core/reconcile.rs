//! Subscriptions: bringing the server's side of each channel towards what the app wants.
//!
//! The app's wish and the server's state are kept apart in each
//! [`Subscription`](super::subscription::Subscription), with at most one command in
//! flight per channel; [`ClientCore::reconcile`] sends the next one when an answer (or
//! a wish) changes something. After `connected`, every wanted channel is restored with
//! `since` in as few commands as the server's limits allow.

use std::collections::BTreeMap;

use tidewire_protocol::command::{Subscribe, SubscribeOptions, Unsubscribe};
use tidewire_protocol::{Command, ErrorCode, StreamPosition};

use super::link::Link;
use super::subscription::{Step, Subscription};
use super::{Action, ClientCore, SubscriptionEvent, SubscriptionOptions, TransportId};

/// Room in a resubscribe command for its id, its options and the JSON around the lists.
const FRAME_ROOM: usize = 128;

/// A subscription's options on the wire: the end of its snapshot always marked (so the
/// app can tell a complete table from one still filling), and its filter.
fn command_options(options: &SubscriptionOptions) -> SubscribeOptions {
    SubscribeOptions {
        snapshot_end: true,
        types: options.types.clone(),
        keys: options.keys.clone(),
        min_interval: options.min_interval_ms,
        deltas: options.deltas,
    }
}

/// Channels to subscribe, each with the position to recover from.
type Positions = Vec<(String, Option<StreamPosition>)>;

/// What a command's `options` take on the wire.
fn options_size(options: &SubscriptionOptions) -> usize {
    serde_json::to_string(&command_options(options)).map_or(usize::MAX / 4, |t| t.len())
}

impl ClientCore {
    pub(super) fn on_subscribe(&mut self, channel: String, options: SubscriptionOptions) {
        let subscription = self.subscriptions.entry(channel.clone()).or_insert_with(Subscription::new);
        if subscription.want(options) {
            self.push(Action::Subscription { channel: channel.clone(), event: SubscriptionEvent::Subscribing });
        }
        self.reconcile(&channel);
    }

    pub(super) fn on_unsubscribe(&mut self, channel: &str) {
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        if !subscription.unwant() {
            return;
        }
        self.push(Action::Subscription { channel: channel.to_owned(), event: SubscriptionEvent::Unsubscribed });
        self.reconcile(channel);
    }

    pub(super) fn reconcile_all(&mut self) {
        let mut channels: Vec<String> = self.subscriptions.keys().cloned().collect();
        channels.sort();
        for channel in channels {
            self.reconcile(&channel);
        }
    }

    /// Brings the server's side of one channel towards what the app wants, with at most
    /// one command in flight.
    pub(super) fn reconcile(&mut self, channel: &str) {
        let Link::Connected(transport) = self.link else {
            if self.subscriptions.get(channel).is_some_and(Subscription::is_forgettable) {
                self.subscriptions.remove(channel);
            }
            return;
        };
        let paused = self.paused;
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        let options = Some(command_options(subscription.options()));
        let command = match subscription.step(paused) {
            Step::Subscribe(position) => {
                let since = position.map(|p| BTreeMap::from([(channel.to_owned(), p)]));
                Command::Subscribe(Subscribe {
                    id: Some(self.id()),
                    channels: vec![channel.to_owned()],
                    since,
                    options,
                })
            }
            Step::Unsubscribe => {
                Command::Unsubscribe(Unsubscribe { id: Some(self.id()), channels: vec![channel.to_owned()] })
            }
            Step::Forget => {
                self.subscriptions.remove(channel);
                return;
            }
            Step::Wait => return,
        };
        self.send_for(transport, channel, &command);
    }

    /// Sends a command about one channel, unless it exceeds the server's message limit
    /// (a filter can make it that large; the server would close the connection for it):
    /// then the channel is refused here, with the reason.
    fn send_for(&mut self, transport: TransportId, channel: &str, command: &Command) {
        let Ok(text) = serde_json::to_string(command) else { return };
        let max = self.limits.max_message_bytes;
        if text.len() <= max {
            self.note_subscribe(command);
            return self.push(Action::Send { transport, text });
        }
        if let Some(subscription) = self.subscriptions.get_mut(channel) {
            subscription.refuse();
        }
        let message = "the subscribe command with its filter exceeds the server's maxMessageBytes".to_owned();
        let event = SubscriptionEvent::Refused { code: ErrorCode::BadRequest, message };
        self.push(Action::Subscription { channel: channel.to_owned(), event });
    }

    /// Resubscribes with `since` on the live connection to fill a gap.
    pub(super) fn recover(&mut self, transport: TransportId, channel: &str) {
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        let options = Some(command_options(subscription.options()));
        let Some(position) = subscription.begin_recovery() else { return };
        let since = position.map(|p| BTreeMap::from([(channel.to_owned(), p)]));
        let (id, channels) = (Some(self.id()), vec![channel.to_owned()]);
        self.send_for(transport, channel, &Command::Subscribe(Subscribe { id, channels, since, options }));
    }

    /// Re-sends the subscribes, unsubscribes (and recoveries) the server may have
    /// dropped unanswered, and the unanswered publishes.
    pub(super) fn retry_pending(&mut self) {
        let Link::Connected(transport) = self.link else { return };
        let mut recover: Vec<String> = (self.subscriptions.iter_mut())
            .filter_map(|(channel, subscription)| subscription.forget_unanswered().then(|| channel.clone()))
            .collect();
        recover.sort();
        for channel in recover {
            self.recover(transport, &channel);
        }
        self.reconcile_all();
        self.requeue_unacked();
    }

    /// After `connected`: subscribes for every wanted channel, with `since` where a
    /// position is known, in as few commands as the server's limits allow. Options are
    /// a command's, so channels go in one command only with channels that ask the same.
    pub(super) fn resubscribe_all(&mut self, transport: TransportId) {
        let paused = self.paused;
        let mut wanted: Positions = Vec::new();
        let mut forget = Vec::new();
        for (channel, subscription) in &mut self.subscriptions {
            match subscription.step(paused) {
                Step::Subscribe(position) => wanted.push((channel.clone(), position)),
                Step::Forget => forget.push(channel.clone()),
                // Nothing is in flight on a new link.
                Step::Unsubscribe | Step::Wait => {}
            }
        }
        for channel in forget {
            self.subscriptions.remove(&channel);
        }
        // Plain channels first, then each set of options in the order of its first
        // channel by name.
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<(SubscriptionOptions, Positions)> = vec![(SubscriptionOptions::default(), Vec::new())];
        for (channel, position) in wanted {
            let Some(options) = self.subscriptions.get(&channel).map(|s| s.options()) else { continue };
            match groups.iter_mut().find(|(o, _)| o == options) {
                Some((_, channels)) => channels.push((channel, position)),
                None => groups.push((options.clone(), vec![(channel, position)])),
            }
        }
        for (options, channels) in groups {
            self.send_in_batches(transport, &options, channels);
        }
    }

    /// Subscribes `channels` with `options` in commands within the server's message size
    /// and channel limit, so that restoring many subscriptions never gets the connection
    /// closed for a message too big.
    fn send_in_batches(&mut self, transport: TransportId, options: &SubscriptionOptions, channels: Positions) {
        let budget = self.limits.max_message_bytes.saturating_sub(FRAME_ROOM + options_size(options));
        let json_len = |text: &str| serde_json::to_string(text).map_or(usize::MAX / 4, |t| t.len());
        let mut batch: Positions = Vec::new();
        let mut size = 0;
        for (channel, position) in channels {
            let name = json_len(&channel) + 1;
            let since = position
                .as_ref()
                .map_or(0, |p| name + 1 + p.seq.to_string().len() + p.epoch.as_deref().map_or(0, |e| json_len(e) + 20));
            let full = batch.len() >= self.limits.max_channels || size + name + since > budget;
            if full && !batch.is_empty() {
                self.send_subscribe(transport, options, std::mem::take(&mut batch));
                size = 0;
            }
            size += name + since;
            batch.push((channel, position));
        }
        if !batch.is_empty() {
            self.send_subscribe(transport, options, batch);
        }
    }

    fn send_subscribe(
        &mut self,
        transport: TransportId,
        options: &SubscriptionOptions,
        channels: Vec<(String, Option<StreamPosition>)>,
    ) {
        let mut since = BTreeMap::new();
        let mut names = Vec::with_capacity(channels.len());
        for (channel, position) in channels {
            if let Some(position) = position {
                since.insert(channel.clone(), position);
            }
            names.push(channel);
        }
        let id = self.id();
        let since = (!since.is_empty()).then_some(since);
        let command = Command::Subscribe(Subscribe {
            id: Some(id),
            channels: names,
            since,
            options: Some(command_options(options)),
        });
        match &command {
            Command::Subscribe(Subscribe { channels, .. }) if channels.len() == 1 => {
                let channel = channels[0].clone();
                self.send_for(transport, &channel, &command);
            }
            _ => self.send(transport, &command),
        }
    }

    /// Tells the app which subscriptions are being restored (after a link ended).
    pub(super) fn emit_subscription_states(&mut self) {
        let paused = self.paused;
        let mut subscribing: Vec<String> = (self.subscriptions.iter())
            .filter(|(_, s)| s.should_be_subscribed(paused))
            .map(|(c, _)| c.clone())
            .collect();
        subscribing.sort();
        for channel in subscribing {
            self.push(Action::Subscription { channel, event: SubscriptionEvent::Subscribing });
        }
    }
}
