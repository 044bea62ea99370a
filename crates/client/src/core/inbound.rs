//! What arrives from the server: frames, publications in order, and control messages,
//! each kind handed to the part of the core it concerns.
//!
//! A frame is a JSON array of messages. Publications are delivered in seq order, once:
//! a duplicate (a replay overlapping live messages) is dropped, a jump that no gap
//! notice explains starts a recovery. A control message is read into the protocol's
//! flat [`ControlFields`] view (one decoder for all of them, which keeps the wasm small)
//! and dispatched on its [`ControlKind`].

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tidewire_protocol::message::{ControlFields, ControlKind, GapReason};
use tidewire_protocol::{CommandId, ErrorCode};

use super::deltas::{Keyed, Rebuilt};
use super::subscription::{Arrival, Confirmation, SubscriptionState};
use super::{Action, ClientCore, ClientError, Delivery, SubscriptionEvent, TransportId};

/// How soon commands go again after the server refused them unanswered.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl ClientCore {
    pub(super) fn on_frame(&mut self, transport: TransportId, text: &str) {
        if !self.link.is(transport) {
            return;
        }
        self.expect_frame_within_heartbeat();
        let items: Vec<&RawValue> = match serde_json::from_str(text) {
            Ok(items) => items,
            Err(e) => {
                self.push(Action::Error(ClientError::Decode(format!("frame is not a JSON array: {e}"))));
                return;
            }
        };
        for item in items {
            if !self.link.is(transport) {
                return; // a message in this frame ended the connection
            }
            self.on_message(transport, item.get());
        }
        self.flush_publishes();
    }

    fn on_message(&mut self, transport: TransportId, json: &str) {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(borrow, default)]
            channel: Option<Cow<'a, str>>,
            #[serde(default)]
            seq: Option<u64>,
            #[serde(default)]
            snapshot: bool,
            // What a field delta needs (read in the same pass, so no second decoder).
            #[serde(borrow, default)]
            key: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            op: Option<Cow<'a, str>>,
            #[serde(default)]
            base: Option<u64>,
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
        }
        let head: Head<'_> = match serde_json::from_str(json) {
            Ok(head) => head,
            Err(e) => return self.push(Action::Error(ClientError::Decode(format!("unreadable message: {e}")))),
        };
        if ControlKind::parse(&head.kind).is_some() {
            match serde_json::from_str::<ControlFields<'_>>(json) {
                Ok(fields) => self.on_control(transport, fields),
                Err(e) => {
                    let error = format!("unreadable {} message: {e}", head.kind);
                    self.push(Action::Error(ClientError::Decode(error)))
                }
            }
            return;
        }
        let (Some(channel), Some(seq)) = (head.channel, head.seq) else {
            let error = format!("{} message without channel or seq", head.kind);
            return self.push(Action::Error(ClientError::Decode(error)));
        };
        let keyed = Keyed { key: head.key.as_deref(), op: head.op.as_deref(), base: head.base, data: head.data };
        self.on_publication(transport, &channel, seq, head.snapshot, json, keyed);
    }

    fn on_publication(
        &mut self,
        transport: TransportId,
        channel: &str,
        seq: u64,
        snapshot: bool,
        wire: &str,
        keyed: Keyed<'_>,
    ) {
        let paused = self.paused;
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        if !subscription.takes_publications(paused) {
            return;
        }
        let next = snapshot || subscription.arrival(seq) == Arrival::Next;
        if !next {
            if subscription.arrival(seq) == Arrival::Gap {
                self.recover(transport, channel);
            }
            return;
        }
        let (json, changed) = match subscription.deltas().map(|table| table.rebuild(seq, wire, keyed)) {
            None => (wire.to_owned(), None),
            Some(Rebuilt::Whole { json, changed }) => (json, changed),
            // The value it changes is not held: nothing is shown, and the channel
            // recovers from the last seq delivered.
            Some(Rebuilt::Lost) => return self.recover(transport, channel),
        };
        if !snapshot {
            subscription.advance(seq);
        }
        let wire_bytes = wire.len();
        self.push(Action::Deliver(Delivery { channel: channel.to_owned(), seq, snapshot, json, changed, wire_bytes }));
    }

    fn on_control(&mut self, transport: TransportId, m: ControlFields<'_>) {
        match m.kind {
            ControlKind::Connected => self.on_connected(transport, &m),
            ControlKind::Subscribed => self.on_subscribed(m),
            ControlKind::Unsubscribed => self.on_unsubscribed(m),
            ControlKind::Gap => self.on_gap(transport, &m),
            ControlKind::Error => self.on_error(m),
            ControlKind::Refreshed => self.schedule_refresh(m.timestamp, m.expires_at),
            ControlKind::Published => {
                if let Some(CommandId::Number(id)) = m.id {
                    self.publishes.acknowledged(id);
                }
            }
            ControlKind::SnapshotEnd => {
                let channel = m.channel.as_deref().unwrap_or_default();
                let live = self.subscriptions.get(channel).is_some_and(|s| s.takes_publications(self.paused));
                if live {
                    let event = SubscriptionEvent::SnapshotEnd;
                    self.push(Action::Subscription { channel: channel.to_owned(), event });
                }
            }
            // Only proof of life, already taken by `on_frame`.
            ControlKind::Pong | ControlKind::Heartbeat => {}
        }
    }

    fn on_subscribed(&mut self, m: ControlFields<'_>) {
        let channel = m.channel.as_deref().unwrap_or_default().to_owned();
        let Some(subscription) = self.subscriptions.get_mut(&channel) else { return };
        let epoch = m.epoch.map(Cow::into_owned);
        if subscription.confirmed(m.seq, epoch, m.recovered, m.min_interval, m.deltas) != Confirmation::Live {
            return;
        }
        if subscription.state() == SubscriptionState::Subscribed {
            let event = SubscriptionEvent::Subscribed { recovered: m.recovered };
            self.push(Action::Subscription { channel: channel.clone(), event });
        }
        self.reconcile(&channel);
    }

    fn on_unsubscribed(&mut self, m: ControlFields<'_>) {
        let channel = m.channel.as_deref().unwrap_or_default().to_owned();
        let Some(subscription) = self.subscriptions.get_mut(&channel) else { return };
        let Some(code) = m.code else {
            subscription.server_unsubscribed();
            return self.reconcile(&channel);
        };
        // The server ended it (the token no longer grants it): subscribing again would
        // be refused, so tell the app instead.
        if subscription.wanted() {
            subscription.refuse();
            let message = m.message.map(Cow::into_owned).unwrap_or_default();
            self.push(Action::Subscription { channel, event: SubscriptionEvent::Refused { code, message } });
        } else {
            self.subscriptions.remove(&channel);
        }
    }

    fn on_gap(&mut self, transport: TransportId, m: &ControlFields<'_>) {
        let channel = m.channel.as_deref().unwrap_or_default();
        let Some(subscription) = self.subscriptions.get_mut(channel) else { return };
        match (m.reason, m.from, m.to) {
            (Some(GapReason::Superseded), Some(from), Some(to)) => subscription.skip(from, to),
            _ => self.recover(transport, channel),
        }
    }

    fn on_error(&mut self, m: ControlFields<'_>) {
        let answers = match &m.id {
            Some(CommandId::Number(id)) => Some(*id),
            _ => None,
        };
        let code = m.code.unwrap_or(ErrorCode::InternalError);
        let message = m.message.map(Cow::into_owned).unwrap_or_default();
        let channel = m.channel.map(Cow::into_owned);
        if code == ErrorCode::RateLimitExceeded && channel.as_deref().is_none_or(str::is_empty) {
            // The command limiter's refusal names no command: re-send whatever is
            // pending soon, unanswered publishes included (their idempotency keys make
            // that safe). (A channel's publish limit names the channel, and leaves
            // subscriptions alone.)
            self.timers.retry.get_or_insert(self.now + RETRY_AFTER);
        }
        if let Some(CommandId::Number(id)) = m.id {
            if code == ErrorCode::Unavailable && self.publishes.is_unacked(id) {
                // The server cannot publish right now (its broker is down): the publish
                // stays unanswered and goes again with the others.
                self.timers.retry.get_or_insert(self.now + RETRY_AFTER);
            } else {
                self.publishes.acknowledged(id);
            }
        }
        // BAD_REQUEST names a channel only for a subscribe's options (a filter the
        // server refuses): retrying the same subscribe would be refused again.
        let refusal = matches!(
            code,
            ErrorCode::Forbidden
                | ErrorCode::InvalidChannel
                | ErrorCode::TooManyChannels
                | ErrorCode::TooManyKeys
                | ErrorCode::BadRequest
        );
        if let Some(name) = channel.as_deref().filter(|_| refusal) {
            if let Some(subscription) = self.subscriptions.get_mut(name).filter(|s| s.awaits_subscribe(answers)) {
                subscription.refuse();
                let event = SubscriptionEvent::Refused { code, message };
                return self.push(Action::Subscription { channel: name.to_owned(), event });
            }
        }
        self.push(Action::Error(ClientError::Server { code, message, channel }));
    }
}
