//! The client core, driven deterministically with virtual time and a scripted server.

use std::time::Duration;

use serde_json::{Value, json};
use tidewire_client::core::{
    Action, ClientConfig, ClientCore, ClientError, ConnectionState, Event, OutgoingPublish, StopReason,
    SubscriptionEvent, SubscriptionOptions, SubscriptionState, TokenError, TransportId, TransportKind,
};
use tidewire_protocol::NewPublication;

const TS: &str = "2026-01-19T10:30:45.123456Z";

struct Harness {
    core: ClientCore,
    now: Duration,
    log: Vec<Action>,
}

impl Harness {
    fn new(configure: impl FnOnce(&mut ClientConfig)) -> Harness {
        let mut config = ClientConfig::new("ws://a/ws");
        config.token = Some("t".into());
        configure(&mut config);
        Harness { core: ClientCore::new(config), now: Duration::ZERO, log: Vec::new() }
    }

    fn event(&mut self, event: Event) {
        self.core.handle(event, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.log.push(action);
        }
    }

    /// Moves virtual time forward, firing every timer on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(at) = self.core.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.log)
    }

    /// The commands sent since the last take, as JSON.
    fn sent(&mut self) -> Vec<Value> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { text, .. } => Some(serde_json::from_str(&text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn opened(&mut self) -> TransportId {
        self.take()
            .into_iter()
            .find_map(|a| match a {
                Action::Open { transport, .. } => Some(transport),
                _ => None,
            })
            .expect("an Open action")
    }

    fn frame(&mut self, transport: TransportId, messages: Value) {
        self.event(Event::Frame { transport, text: messages.to_string() });
    }

    fn connected(&mut self, transport: TransportId) {
        self.frame(transport, json!([connected_message(25_000, None)]));
    }

    /// Connect → open → `connected`; returns the transport.
    fn connect(&mut self) -> TransportId {
        self.connect_with(connected_message(25_000, None))
    }

    /// Connect → open → the given `connected` message; returns the transport.
    fn connect_with(&mut self, connected: Value) -> TransportId {
        self.event(Event::Connect);
        let transport = self.opened();
        self.frame(transport, json!([connected]));
        transport
    }

    fn subscribed(&mut self, transport: TransportId, channel: &str, seq: u64, recovered: Option<bool>) {
        let mut m = json!({"type":"subscribed","timestamp":TS,"channel":channel,"seq":seq,"epoch":"e1"});
        if let Some(r) = recovered {
            m["recovered"] = json!(r);
        }
        self.frame(transport, json!([m]));
    }

    fn publish(&mut self, transport: TransportId, channel: &str, seqs: impl IntoIterator<Item = u64>) {
        let messages: Vec<Value> = seqs
            .into_iter()
            .map(|seq| json!({"type":"tick","timestamp":TS,"channel":channel,"seq":seq,"data":seq}))
            .collect();
        self.frame(transport, Value::Array(messages));
    }

    fn delivered(&mut self) -> Vec<u64> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Deliver(d) => Some(d.seq),
                _ => None,
            })
            .collect()
    }

    fn reconnect_delay(&self) -> Option<Duration> {
        self.core.poll_timeout().map(|at| at - self.now)
    }
}

fn connected_message(heartbeat_ms: u64, expires_in_secs: Option<i64>) -> Value {
    let mut m = json!({
        "type":"connected","timestamp":TS,"connectionId":"c","userId":"u","version":1,
        "heartbeatIntervalMs":heartbeat_ms,
        "limits":{
            "maxBatch":50,"batchIntervalMs":16,"maxQueuedBatches":10,"maxChannels":128,"maxMessageBytes":4096,
            "commandsPerSecond":1000,"commandBurst":200
        }
    });
    if let Some(secs) = expires_in_secs {
        let expires = tidewire_protocol::Timestamp::from_unix_micros(
            tidewire_protocol::Timestamp::parse(TS).unwrap().unix_micros() + secs * 1_000_000,
        );
        m["expiresAt"] = json!(expires.to_rfc3339());
    }
    m
}

#[test]
fn subscriptions_made_before_connect_go_out_after_connected() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "alerts".into() });
    h.event(Event::Subscribe { channel: "lp-performance".into() });
    assert_eq!(h.core.subscription_state("alerts"), SubscriptionState::Subscribing);
    h.event(Event::Connect);
    assert_eq!(h.core.state(), ConnectionState::Connecting);
    let actions = h.take();
    let open = actions.iter().find_map(|a| match a {
        Action::Open { transport, url, token, .. } => Some((*transport, url.clone(), token.clone())),
        _ => None,
    });
    let (transport, url, token) = open.unwrap();
    assert_eq!((url.as_str(), token.as_deref()), ("ws://a/ws", Some("t")));
    h.connected(transport);
    assert_eq!(h.core.state(), ConnectionState::Connected);
    let sent = h.sent();
    let options = json!({"snapshotEnd": true});
    assert_eq!(
        sent,
        vec![json!({"action":"subscribe","id":1,"channels":["alerts","lp-performance"],"options":options})]
    );
    h.subscribed(transport, "alerts", 7, None);
    assert_eq!(h.core.subscription_state("alerts"), SubscriptionState::Subscribed);
    h.publish(transport, "alerts", [8, 9]);
    assert_eq!(h.delivered(), vec![8, 9]);
}

#[test]
fn backoff_grows_with_full_jitter_and_rotates_urls() {
    let mut h = Harness::new(|c| c.urls = vec!["ws://a/ws".into(), "ws://b/ws".into()]);
    let mut transport = h.connect();
    let mut urls = Vec::new();
    for attempt in 0..10u32 {
        h.event(Event::TransportClosed { transport, code: 1006, reason: String::new() });
        assert_eq!(h.core.state(), ConnectionState::Connecting);
        let delay = h.reconnect_delay().expect("a reconnect is scheduled");
        let cap = Duration::from_millis(500) * 2u32.pow(attempt.min(6));
        assert!(delay < cap.min(Duration::from_secs(20)), "attempt {attempt}: {delay:?}");
        h.take();
        h.advance(delay);
        let actions = h.take();
        let (t, url) = actions
            .iter()
            .find_map(|a| match a {
                Action::Open { transport, url, .. } => Some((*transport, url.clone())),
                _ => None,
            })
            .expect("reopened");
        transport = t;
        urls.push(url);
    }
    assert!(urls.contains(&"ws://a/ws".to_owned()) && urls.contains(&"ws://b/ws".to_owned()));
    assert_eq!(h.core.attempt(), 10);
    h.connected(transport);
    assert_eq!(h.core.attempt(), 0, "a successful connect resets the backoff");
}

#[test]
fn terminal_codes_stop_and_reconnect_codes_retry() {
    for (code, terminal) in [
        (4501, true),
        (4500, true),
        (1008, true),
        (4502, true),
        (1012, false),
        (4000, false),
        (1006, false),
        (4001, false),
    ] {
        let mut h = Harness::new(|_| {});
        let transport = h.connect();
        h.take();
        h.event(Event::TransportClosed { transport, code, reason: "why".into() });
        if terminal {
            assert_eq!(h.core.state(), ConnectionState::Disconnected, "{code}");
            assert_eq!(h.core.poll_timeout(), None, "{code}: no reconnect");
            let stopped = h.take().into_iter().find_map(|a| match a {
                Action::State { stopped, .. } => stopped,
                _ => None,
            });
            assert_eq!(stopped, Some(StopReason::Terminal { code, reason: "why".into() }));
        } else {
            assert_eq!(h.core.state(), ConnectionState::Connecting, "{code}");
            assert!(h.core.poll_timeout().is_some(), "{code}: reconnect scheduled");
        }
    }
}

#[test]
fn reconnect_resubscribes_with_since_and_reports_recovery() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t1 = h.connect();
    h.take();
    h.subscribed(t1, "a", 0, None);
    h.publish(t1, "a", 1..=3);
    assert_eq!(h.delivered(), vec![1, 2, 3]);
    h.event(Event::TransportClosed { transport: t1, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    h.connected(t2);
    assert_eq!(
        h.sent(),
        vec![json!({
            "action":"subscribe","id":2,"channels":["a"],"since":{"a":{"seq":3,"epoch":"e1"}},
            "options":{"snapshotEnd":true}
        })]
    );
    h.subscribed(t2, "a", 5, Some(true));
    let events: Vec<Action> = h.take();
    assert!(events.contains(&Action::Subscription {
        channel: "a".into(),
        event: SubscriptionEvent::Subscribed { recovered: Some(true) }
    }));
    h.publish(t2, "a", [4, 5, 6]);
    assert_eq!(h.delivered(), vec![4, 5, 6]);

    // Not recoverable: the app is told, the position jumps to the head.
    h.event(Event::TransportClosed { transport: t2, code: 1006, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t3 = h.opened();
    h.connected(t3);
    h.take();
    h.subscribed(t3, "a", 900, Some(false));
    assert!(h.take().contains(&Action::Subscription {
        channel: "a".into(),
        event: SubscriptionEvent::Subscribed { recovered: Some(false) }
    }));
    h.publish(t3, "a", [901]);
    assert_eq!(h.delivered(), vec![901]);
    assert_eq!(h.core.position("a").unwrap().seq, 901);
}

#[test]
fn a_seq_jump_triggers_recovery_and_every_seq_arrives_once() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t = h.connect();
    h.take();
    h.subscribed(t, "a", 0, None);
    h.publish(t, "a", [1, 2, 5, 6]);
    assert_eq!(h.delivered(), vec![1, 2]);
    assert_eq!(h.sent(), Vec::<Value>::new());
    // The recovery went out with the frame; nothing more until the answer.
    h.publish(t, "a", [1, 2]); // stale duplicates are ignored
    let actions = h.take();
    assert!(actions.iter().all(|a| !matches!(a, Action::Deliver(_))));
    h.publish(t, "a", [7]);
    assert_eq!(h.delivered(), Vec::<u64>::new());
    h.subscribed(t, "a", 7, Some(true));
    h.publish(t, "a", [3, 4, 5, 6, 7, 5, 8]);
    assert_eq!(h.delivered(), vec![3, 4, 5, 6, 7, 8]);
}

#[test]
fn a_channel_created_under_a_subscription_renews_its_epoch_quietly() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t1 = h.connect();
    h.take();
    // No state yet (the empty epoch); the first publication creates the epoch.
    let empty = json!({"type":"subscribed","timestamp":TS,"channel":"a","seq":0,"epoch":""});
    h.frame(t1, json!([empty]));
    h.take();
    let created = json!({"type":"subscribed","timestamp":TS,"channel":"a","seq":0,"epoch":"e7","recovered":true});
    h.frame(t1, json!([created]));
    assert!(!h.take().iter().any(|a| matches!(a, Action::Subscription { .. })), "no event for the app");
    h.publish(t1, "a", 1..=2);
    assert_eq!(h.delivered(), vec![1, 2]);
    h.event(Event::TransportClosed { transport: t1, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    h.connected(t2);
    assert_eq!(h.sent()[0]["since"]["a"], json!({"seq":2,"epoch":"e7"}), "recovers in the new epoch");
}

#[test]
fn recovery_command_carries_since() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t = h.connect();
    h.take();
    h.subscribed(t, "a", 10, None);
    h.publish(t, "a", [11, 14]);
    let actions = h.take();
    let sent: Vec<Value> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { text, .. } => Some(serde_json::from_str(text).unwrap()),
            _ => None,
        })
        .collect();
    let since = json!({"a":{"seq":11,"epoch":"e1"}});
    let options = json!({"snapshotEnd": true});
    assert_eq!(sent, vec![json!({"action":"subscribe","id":2,"channels":["a"],"since":since,"options":options})]);
}

#[test]
fn gap_notices_recover_on_overflow_and_skip_superseded() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "lp".into() });
    let t = h.connect();
    h.take();
    h.subscribed(t, "lp", 0, None);
    h.frame(
        t,
        json!([
            {"type":"gap","timestamp":TS,"channel":"lp","from":2,"to":3,"reason":"superseded"},
            {"type":"tick","timestamp":TS,"channel":"lp","seq":1,"data":1},
            {"type":"tick","timestamp":TS,"channel":"lp","seq":4,"data":4}
        ]),
    );
    assert_eq!(h.delivered(), vec![1, 4]);
    h.frame(t, json!([{"type":"gap","timestamp":TS,"channel":"lp","from":5,"to":9,"reason":"overflow"}]));
    let sent = h.sent();
    assert_eq!(sent[0]["since"]["lp"]["seq"], 4);
}

#[test]
fn snapshot_messages_reach_the_handler_first_without_moving_the_position() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "lp".into() });
    let t = h.connect();
    h.take();
    h.frame(
        t,
        json!([
            {"type":"subscribed","timestamp":TS,"channel":"lp","seq":40,"epoch":"e1"},
            {"snapshot":true,"type":"lp-metrics","timestamp":TS,"channel":"lp","seq":38,"key":"LMAX","data":{}},
            {"snapshot":true,"type":"lp-metrics","timestamp":TS,"channel":"lp","seq":40,"key":"OANDA","data":{}},
            {"type":"lp-metrics","timestamp":TS,"channel":"lp","seq":41,"key":"OANDA","data":{}}
        ]),
    );
    let deliveries: Vec<(u64, bool)> = h
        .take()
        .into_iter()
        .filter_map(|a| match a {
            Action::Deliver(d) => Some((d.seq, d.snapshot)),
            _ => None,
        })
        .collect();
    assert_eq!(deliveries, vec![(38, true), (40, true), (41, false)]);
}

#[test]
fn quick_subscribe_unsubscribe_never_duplicates_server_subscriptions() {
    let mut h = Harness::new(|_| {});
    let t = h.connect();
    h.take();
    // Mount, unmount, mount within one round trip.
    h.event(Event::Subscribe { channel: "a".into() });
    h.event(Event::Unsubscribe { channel: "a".into() });
    h.event(Event::Subscribe { channel: "a".into() });
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "one subscribe in flight: {sent:?}");
    h.subscribed(t, "a", 0, None);
    assert_eq!(h.sent(), Vec::<Value>::new(), "wanted and subscribed: nothing more");
    assert_eq!(h.core.subscription_state("a"), SubscriptionState::Subscribed);

    // Unmount, mount, unmount, mount while the unsubscribe is in flight.
    h.event(Event::Unsubscribe { channel: "a".into() });
    assert_eq!(h.sent()[0]["action"], "unsubscribe");
    h.event(Event::Subscribe { channel: "a".into() });
    h.event(Event::Unsubscribe { channel: "a".into() });
    h.event(Event::Subscribe { channel: "a".into() });
    assert_eq!(h.sent(), Vec::<Value>::new(), "waits for the unsubscribe answer");
    h.frame(t, json!([{"type":"unsubscribed","timestamp":TS,"channel":"a"}]));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["action"], "subscribe");
    assert_eq!(sent[0]["since"]["a"]["seq"], 0, "resumes from where it was");

    // Subscribe and unsubscribe while disconnected: nothing ever reaches the server.
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "b".into() });
    h.event(Event::Unsubscribe { channel: "b".into() });
    h.connect();
    assert_eq!(h.sent(), Vec::<Value>::new());
}

#[test]
fn messages_for_unwanted_channels_are_not_delivered() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t = h.connect();
    h.subscribed(t, "a", 0, None);
    h.take();
    h.event(Event::Unsubscribe { channel: "a".into() });
    h.publish(t, "a", [1]);
    h.publish(t, "zzz", [1]);
    assert_eq!(h.delivered(), Vec::<u64>::new());
}

#[test]
fn refused_channels_are_reported_and_not_retried() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "secret".into() });
    let t = h.connect();
    h.take();
    h.frame(t, json!([{"type":"error","timestamp":TS,"id":1,"code":"FORBIDDEN","message":"no","channel":"secret"}]));
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Subscription { event: SubscriptionEvent::Refused { .. }, .. })));
    assert_eq!(h.core.subscription_state("secret"), SubscriptionState::Unsubscribed);
    h.event(Event::TransportClosed { transport: t, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    h.connected(t2);
    assert_eq!(h.sent(), Vec::<Value>::new(), "not retried after a reconnect");
}

#[test]
fn a_subscription_the_server_ends_is_reported_and_not_retried() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "book".into() });
    let t = h.connect();
    h.subscribed(t, "book", 0, None);
    h.take();
    // A refreshed token no longer grants the channel: the server ends it.
    let ended =
        json!({"type":"unsubscribed","timestamp":TS,"channel":"book","code":"FORBIDDEN","message":"no longer granted"});
    h.frame(t, json!([ended]));
    let actions = h.take();
    let refused = actions.iter().any(|a| {
        matches!(a, Action::Subscription { channel, event: SubscriptionEvent::Refused { code, .. } }
        if channel == "book" && *code == tidewire_protocol::ErrorCode::Forbidden)
    });
    assert!(refused, "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })), "not subscribed again: {actions:?}");
    assert_eq!(h.core.subscription_state("book"), SubscriptionState::Unsubscribed);
    h.publish(t, "book", [1]);
    assert_eq!(h.delivered(), Vec::<u64>::new());
    h.event(Event::TransportClosed { transport: t, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    h.connected(t2);
    assert_eq!(h.sent(), Vec::<Value>::new(), "nor after a reconnect");
    // The app may ask again (after getting a token that grants it).
    h.event(Event::Subscribe { channel: "book".into() });
    assert_eq!(h.sent().len(), 1);
}

#[test]
fn offline_publishes_queue_bounded_and_go_out_in_order_paced() {
    let mut h = Harness::new(|c| c.max_queued_publishes = 32);
    assert_eq!(publish_n(&mut h, 0..100), 100 - 32);
    let t = h.connect();
    let _ = t;
    let mut sent = h.sent();
    assert!(sent.len() <= 16, "paced: {}", sent.len());
    while sent.len() < 32 {
        h.advance(Duration::from_millis(16));
        let more = h.sent();
        assert!(more.len() <= 16);
        sent.extend(more);
    }
    let data: Vec<u64> = sent.iter().map(|c| c["data"].as_u64().unwrap()).collect();
    assert_eq!(data, (68..100).collect::<Vec<_>>(), "the newest 32, in order");
    assert!(sent.iter().all(|c| c["action"] == "publish"));
}

#[test]
fn publishes_are_paced_to_the_command_rate_the_server_announces() {
    let mut h = Harness::new(|_| {});
    h.connect_with(connected_at(Some(100)));
    h.take();
    for i in 0..50u32 {
        publish_data(&mut h, i);
    }
    // 100/s announced: the first at once, then two every 22.2 ms (nine tenths of it), so
    // the server's limiter never refuses one.
    let mut sent = h.sent();
    assert_eq!(sent.len(), 1);
    let started = h.now;
    while sent.len() < 50 {
        h.advance(Duration::from_millis(10));
        let more = h.sent();
        assert!(more.len() <= 2, "{} in 10 ms", more.len());
        sent.extend(more);
        assert!(h.now - started <= Duration::from_secs(1), "paced far below the announced rate");
    }
    assert_eq!(h.now - started, Duration::from_millis(560), "then 25 frames of two, 22.2 ms apart (90/s)");
    let data: Vec<u64> = sent.iter().map(|c| c["data"].as_u64().unwrap()).collect();
    assert_eq!(data, (0..50).collect::<Vec<_>>(), "nothing dropped, in order");
}

/// `connected` with `commandsPerSecond` set to `rate`, or with no limits at all.
fn connected_at(rate: Option<u32>) -> Value {
    let mut m = connected_message(25_000, None);
    match rate {
        Some(rate) => m["limits"]["commandsPerSecond"] = json!(rate),
        None => {
            m.as_object_mut().unwrap().remove("limits");
        }
    }
    m
}

/// Publishes `data: i` to channel `p`.
fn publish_data(h: &mut Harness, i: u32) {
    let publish = OutgoingPublish::new(NewPublication {
        channel: "p".into(),
        kind: "t".into(),
        data: json!(i),
        ..Default::default()
    })
    .unwrap();
    h.event(Event::Publish(publish));
}

/// Publishes `data: i` for each `i` in `range` to channel `p`, taking every action
/// since; returns how many publishes the client said it dropped.
fn publish_n(h: &mut Harness, range: std::ops::Range<u32>) -> u32 {
    let mut dropped = 0;
    for i in range {
        publish_data(h, i);
        for action in h.take() {
            if let Action::Error(ClientError::PublishesDropped { count }) = action {
                dropped += count;
            }
        }
    }
    dropped
}

#[test]
fn dropped_publishes_do_not_take_the_place_of_sent_ones_at_a_low_rate() {
    let mut h = Harness::new(|c| c.max_queued_publishes = 4);
    assert_eq!(publish_n(&mut h, 0..10), 6, "offline, the newest 4 wait");
    h.connect_with(connected_at(Some(1)));
    let mut data: Vec<u64> = h.sent().iter().map(|c| c["data"].as_u64().unwrap()).collect();
    for _ in 0..3 {
        h.advance(Duration::from_secs(1));
        data.extend(h.sent().iter().map(|c| c["data"].as_u64().unwrap()));
    }
    assert_eq!(data, vec![6, 7, 8, 9], "one a second from the first second on, none lost to drop records");
}

#[test]
fn a_small_announced_burst_splits_frames() {
    let mut h = Harness::new(|_| {});
    let mut connected = connected_at(Some(1000));
    connected["limits"]["commandBurst"] = json!(10);
    h.connect_with(connected);
    h.take();
    assert_eq!(publish_n(&mut h, 0..21), 0, "the first went at once");
    let mut frames = Vec::new();
    for _ in 0..4 {
        h.advance(Duration::from_micros(5_556));
        frames.push(h.sent().len());
    }
    assert_eq!(frames, vec![5, 5, 5, 5], "half the burst every 5.6 ms: still 900/s");
}

#[test]
fn a_server_without_announced_limits_gets_the_default_pace() {
    let mut h = Harness::new(|_| {});
    let t = h.connect_with(connected_at(Some(1)));
    h.take();
    // Reconnected to a server that announces no limits: back to its default, 1000/s (15
    // every 16.7 ms).
    h.event(Event::TransportClosed { transport: t, code: 1006, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t = h.opened();
    h.frame(t, json!([connected_at(None)]));
    h.take();
    assert_eq!(publish_n(&mut h, 0..40), 0, "the first went at once");
    h.advance(Duration::from_millis(17));
    assert_eq!(h.sent().len(), 15);
}

#[test]
fn a_silent_link_is_closed_and_replaced() {
    let mut h = Harness::new(|c| c.heartbeat_grace = Duration::from_secs(2));
    let t = h.connect();
    h.frame(t, json!([connected_message(1000, None)]));
    h.take();
    h.advance(Duration::from_millis(2500));
    assert_eq!(h.core.state(), ConnectionState::Connected, "a heartbeat interval plus grace is allowed");
    h.frame(t, json!([{"type":"heartbeat","timestamp":TS}]));
    h.advance(Duration::from_millis(2900));
    assert_eq!(h.core.state(), ConnectionState::Connected, "a heartbeat resets the deadline");
    h.advance(Duration::from_millis(200));
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Close { code: 4001, .. })), "{actions:?}");
    assert_eq!(h.core.state(), ConnectionState::Connecting);
    // Late events from the dead transport are ignored.
    h.publish(t, "a", [1]);
    h.event(Event::TransportClosed { transport: t, code: 1006, reason: String::new() });
    assert_eq!(h.core.state(), ConnectionState::Connecting);
}

#[test]
fn token_provider_paths() {
    // Fetched before each connect; failures retry with backoff; unauthorized is terminal.
    let mut h = Harness::new(|c| c.token_provider = true);
    h.event(Event::Connect);
    assert!(h.take().contains(&Action::FetchToken));
    h.event(Event::Token(Err(TokenError::Failed("503".into()))));
    assert!(h.take().contains(&Action::Error(ClientError::Token("503".into()))));
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    assert!(h.take().contains(&Action::FetchToken));
    h.event(Event::Token(Ok("fresh".into())));
    let open = h.take().into_iter().find_map(|a| match a {
        Action::Open { token, transport, .. } => Some((token, transport)),
        _ => None,
    });
    let (token, t) = open.unwrap();
    assert_eq!(token.as_deref(), Some("fresh"));

    // Refreshed in band before expiry (60 s left → refresh at 30 s).
    h.frame(t, json!([connected_message(25_000, Some(60))]));
    h.take();
    h.advance(Duration::from_secs(29));
    h.frame(t, json!([{"type":"heartbeat","timestamp":TS}]));
    assert!(!h.take().contains(&Action::FetchToken));
    h.advance(Duration::from_secs(2));
    assert!(h.take().contains(&Action::FetchToken));
    h.event(Event::Token(Ok("renewed".into())));
    assert_eq!(h.sent(), vec![json!({"action":"refresh","id":1,"token":"renewed"})]);

    // TOKEN_EXPIRED with a provider: fetch a new token and reconnect.
    h.event(Event::TransportClosed { transport: t, code: 4502, reason: String::new() });
    assert_eq!(h.core.state(), ConnectionState::Connecting);
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    assert!(h.take().contains(&Action::FetchToken));
    h.event(Event::Token(Err(TokenError::Unauthorized("banned".into()))));
    assert_eq!(h.core.state(), ConnectionState::Disconnected);
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn offline_and_online() {
    let mut h = Harness::new(|_| {});
    let t = h.connect();
    h.take();
    h.event(Event::Offline);
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Close { transport, .. } if *transport == t)));
    assert_eq!(h.core.state(), ConnectionState::Disconnected);
    assert_eq!(h.core.poll_timeout(), None, "no reconnect attempts while offline");
    h.event(Event::Online);
    assert!(h.take().iter().any(|a| matches!(a, Action::Open { .. })), "online → reconnect now");
}

#[test]
fn background_mode_leaves_and_catches_up_with_since() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t = h.connect();
    h.subscribed(t, "a", 5, None);
    h.take();
    h.event(Event::Pause);
    assert_eq!(h.sent()[0]["action"], "unsubscribe");
    h.frame(t, json!([{"type":"unsubscribed","timestamp":TS,"channel":"a"}]));
    h.publish(t, "a", [6]);
    assert_eq!(h.delivered(), Vec::<u64>::new());
    h.event(Event::Resume);
    let sent = h.sent();
    assert_eq!(sent[0]["action"], "subscribe");
    assert_eq!(sent[0]["since"]["a"]["seq"], 5);
}

#[test]
fn an_incompatible_server_is_refused() {
    let mut h = Harness::new(|_| {});
    let mut connected = connected_message(25_000, None);
    connected["version"] = json!(99);
    h.connect_with(connected);
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Close { code: 4503, .. })));
    assert_eq!(h.core.state(), ConnectionState::Disconnected);
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn garbage_frames_are_reported_and_skipped() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t = h.connect();
    h.subscribed(t, "a", 0, None);
    h.take();
    h.event(Event::Frame { transport: t, text: "not json".into() });
    h.frame(
        t,
        json!([
            {"type":"future-control-type-without-channel"},
            {"type":"tick","timestamp":TS,"channel":"a","seq":1,"data":1},
            17
        ]),
    );
    let actions = h.take();
    let errors = actions.iter().filter(|a| matches!(a, Action::Error(ClientError::Decode(_)))).count();
    assert_eq!(errors, 3);
    assert!(actions.iter().any(|a| matches!(a, Action::Deliver(d) if d.seq == 1)));
    assert_eq!(h.core.state(), ConnectionState::Connected);
}

#[test]
fn subscription_events_follow_the_lifecycle() {
    let mut h = Harness::new(|_| {});
    let t = h.connect();
    h.take();
    h.event(Event::Subscribe { channel: "a".into() });
    h.subscribed(t, "a", 0, None);
    h.event(Event::Unsubscribe { channel: "a".into() });
    let events: Vec<SubscriptionEvent> = h
        .take()
        .into_iter()
        .filter_map(|a| match a {
            Action::Subscription { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![
            SubscriptionEvent::Subscribing,
            SubscriptionEvent::Subscribed { recovered: None },
            SubscriptionEvent::Unsubscribed
        ]
    );
}

#[test]
fn commands_refused_by_the_rate_limit_are_sent_again() {
    let mut h = Harness::new(|_| {});
    let t = h.connect();
    h.take();
    h.event(Event::Subscribe { channel: "a".into() });
    assert_eq!(h.sent().len(), 1);
    // The server refused it without saying which command it was.
    h.frame(t, json!([{"type":"error","timestamp":TS,"code":"RATE_LIMIT_EXCEEDED","message":"slow down"}]));
    h.take();
    h.advance(Duration::from_millis(1100));
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "the pending subscribe goes out again");
    assert_eq!(sent[0]["action"], "subscribe");
    h.subscribed(t, "a", 0, None);
    assert_eq!(h.core.subscription_state("a"), SubscriptionState::Subscribed);
}

#[test]
fn the_end_of_a_snapshot_is_reported_once_the_table_is_complete() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "lps".into() });
    let t = h.connect();
    h.take();
    h.frame(
        t,
        json!([
            {"type":"subscribed","timestamp":TS,"id":1,"channel":"lps","seq":7,"epoch":"e"},
            {"type":"lp","timestamp":TS,"channel":"lps","seq":3,"key":"A","snapshot":true,"data":{}},
            {"type":"lp","timestamp":TS,"channel":"lps","seq":7,"key":"B","snapshot":true,"data":{}},
            {"type":"snapshot-end","timestamp":TS,"channel":"lps","seq":7}
        ]),
    );
    let events: Vec<String> = h
        .take()
        .into_iter()
        .filter_map(|a| match a {
            Action::Deliver(d) => Some(format!("row {}", d.seq)),
            Action::Subscription { event: SubscriptionEvent::SnapshotEnd, channel } => Some(format!("end {channel}")),
            _ => None,
        })
        .collect();
    assert_eq!(events, ["row 3", "row 7", "end lps"], "the end comes after the last row");
    // A marker for a channel the app left is not reported.
    h.event(Event::Unsubscribe { channel: "lps".into() });
    h.frame(t, json!([{"type":"snapshot-end","timestamp":TS,"channel":"lps","seq":7}]));
    let late =
        h.take().into_iter().any(|a| matches!(a, Action::Subscription { event: SubscriptionEvent::SnapshotEnd, .. }));
    assert!(!late);
}

#[test]
fn a_filtered_subscription_takes_seq_jumps_as_filtered_and_recovers_only_on_a_notice() {
    let mut h = Harness::new(|_| {});
    let options = SubscriptionOptions { types: Some(vec!["lp".into()]), ..Default::default() };
    h.event(Event::SubscribeWith { channel: "desk".into(), options });
    let t = h.connect();
    let sent = h.sent();
    assert_eq!(sent[0]["options"], json!({"snapshotEnd": true, "types": ["lp"]}), "the filter goes out");
    h.subscribed(t, "desk", 0, None);
    h.publish(t, "desk", [1, 4, 9]);
    assert_eq!(h.delivered(), [1, 4, 9], "jumps over filtered seqs are no gaps");
    assert!(h.sent().is_empty(), "nothing to recover");
    // A real loss is still announced, and recovered with the filter.
    h.frame(t, json!([{"type":"gap","timestamp":TS,"channel":"desk","from":10,"to":12,"reason":"overflow"}]));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0]["since"]["desk"]["seq"].as_u64(), sent[0]["options"]["types"].clone()),
        (Some(9), json!(["lp"]))
    );
    // Live publications during the recovery wait for the replay (which has them in
    // order); taking them now would skip the replay's older seqs as duplicates.
    h.publish(t, "desk", [15]);
    assert!(h.delivered().is_empty());
    h.frame(
        t,
        json!([
            {
                "type":"subscribed","timestamp":TS,"id":sent[0]["id"],"channel":"desk","seq":15,"epoch":"e1",
                "recovered":true
            },
            {"type":"lp","timestamp":TS,"channel":"desk","seq":13,"data":{}},
            {"type":"lp","timestamp":TS,"channel":"desk","seq":15,"data":{}}
        ]),
    );
    assert_eq!(h.delivered(), [13, 15], "the replay, in order, once");
}

#[test]
fn a_filter_too_large_for_the_server_is_refused_here() {
    let mut h = Harness::new(|_| {});
    // Within the protocol's count (256), over the server's 4 KiB message limit.
    let keys: Vec<String> = (0..200).map(|i| format!("a-rather-long-instrument-key-{i:04}")).collect();
    h.event(Event::SubscribeWith {
        channel: "desk".into(),
        options: SubscriptionOptions { keys: Some(keys), ..Default::default() },
    });
    let t = h.connect();
    let actions = h.take();
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { text, .. } if text.contains("subscribe"))));
    let refused = actions.iter().any(|a| match a {
        Action::Subscription { event: SubscriptionEvent::Refused { code, .. }, .. } => code.as_str() == "BAD_REQUEST",
        _ => false,
    });
    assert!(refused, "{actions:?}");
    assert_eq!(h.core.subscription_state("desk"), SubscriptionState::Unsubscribed);
    // A filter the server refuses (naming the channel) is reported and not retried.
    let options = SubscriptionOptions { types: Some(vec![]), ..Default::default() };
    h.event(Event::SubscribeWith { channel: "other".into(), options });
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let error = json!({
        "type":"error","timestamp":TS,"id":sent[0]["id"],"code":"BAD_REQUEST","message":"at least one","channel":"other"
    });
    h.frame(t, json!([error]));
    let refusal = h.take().into_iter().find_map(|a| match a {
        Action::Subscription { event: SubscriptionEvent::Refused { message, .. }, .. } => Some(message),
        _ => None,
    });
    assert!(refusal.is_some_and(|m| m.contains("at least one")));
    h.advance(Duration::from_secs(5));
    assert!(h.sent().is_empty(), "not retried");
}

#[test]
fn closing_clears_every_timer_a_link_had() {
    // Stopping and losing a link end it through one path: no timer of the old link
    // (here a pending retry after a rate-limit refusal) fires after a stop.
    let mut h = Harness::new(|_| {});
    let t = h.connect();
    h.event(Event::Subscribe { channel: "a".into() });
    h.frame(t, json!([{"type":"error","timestamp":TS,"code":"RATE_LIMIT_EXCEEDED","message":"slow down"}]));
    assert!(h.core.poll_timeout().is_some());
    h.event(Event::Close);
    h.take();
    assert_eq!(h.core.poll_timeout(), None, "a stopped client has nothing due");
    h.advance(Duration::from_secs(5));
    assert!(h.take().is_empty(), "nothing fires after a stop");
}

#[test]
fn a_refused_recovery_does_not_leave_the_channel_stuck() {
    let mut h = Harness::new(|_| {});
    h.event(Event::Subscribe { channel: "a".into() });
    let t = h.connect();
    h.subscribed(t, "a", 0, None);
    h.publish(t, "a", [1, 5]);
    let recovery = h.sent();
    // A publish's error naming the channel refuses nothing.
    h.frame(t, json!([{"type":"error","timestamp":TS,"id":999,"code":"FORBIDDEN","message":"no","channel":"a"}]));
    assert!(
        !h.take().iter().any(|a| matches!(a, Action::Subscription { event: SubscriptionEvent::Refused { .. }, .. }))
    );
    // The recovery subscribe is refused (the token's grants changed).
    let id = recovery.last().unwrap()["id"].clone();
    let refusal = json!({"type":"error","timestamp":TS,"id":id,"code":"FORBIDDEN","message":"no","channel":"a"});
    h.frame(t, json!([refusal]));
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Subscription { event: SubscriptionEvent::Refused { .. }, .. })));
    assert_eq!(h.core.subscription_state("a"), SubscriptionState::Unsubscribed);
}

/// Answers each publish command in `sent` with `published` (the server's seq = its
/// place in the list, from `first_seq`).
fn acknowledge(h: &mut Harness, t: TransportId, sent: &[Value], first_seq: u64) {
    let answers: Vec<Value> = sent
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"type":"published","timestamp":TS,"id":c["id"],"channel":c["channel"],"seq":first_seq + i as u64})
        })
        .collect();
    h.frame(t, Value::Array(answers));
}

#[test]
fn unanswered_publishes_are_sent_again_after_a_reconnect_with_the_same_keys() {
    let mut h = Harness::new(|_| {});
    let t1 = h.connect();
    h.take();
    for i in 0..4 {
        publish_data(&mut h, i);
    }
    h.advance(Duration::from_millis(50));
    let sent = h.sent();
    assert_eq!(sent.len(), 4);
    let keys: Vec<String> = sent.iter().map(|c| c["idempotencyKey"].as_str().unwrap().to_owned()).collect();
    assert!(sent.iter().all(|c| c["id"].is_u64()), "each publish carries an id: {sent:?}");
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 4, "one key per publish");
    // The server answers the first two; the link is cut before the others' answers.
    acknowledge(&mut h, t1, &sent[..2], 1);
    h.event(Event::TransportClosed { transport: t1, code: 1012, reason: String::new() });
    publish_data(&mut h, 4);
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    h.connected(t2);
    h.advance(Duration::from_millis(50));
    let again: Vec<Value> = h.sent().into_iter().filter(|c| c["action"] == "publish").collect();
    let data: Vec<u64> = again.iter().map(|c| c["data"].as_u64().unwrap()).collect();
    assert_eq!(data, [2, 3, 4], "the unanswered two first, in order, then the new one");
    assert_eq!(again[0]["idempotencyKey"], keys[2], "the same key: the server publishes it once");
    assert_eq!(again[1]["idempotencyKey"], keys[3]);
    acknowledge(&mut h, t2, &again, 3);
    h.event(Event::TransportClosed { transport: t2, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t3 = h.opened();
    h.connected(t3);
    assert_eq!(h.sent(), Vec::<Value>::new(), "answered publishes are never sent again");
}

#[test]
fn two_clients_never_share_idempotency_keys() {
    let key = |seed: u64| {
        let mut h = Harness::new(|c| c.seed = seed);
        h.connect();
        h.take();
        publish_data(&mut h, 0);
        h.sent()[0]["idempotencyKey"].as_str().unwrap().to_owned()
    };
    assert_ne!(key(1), key(2));
}

#[test]
fn a_publish_too_large_for_the_server_is_refused_before_sending() {
    let mut h = Harness::new(|_| {});
    let mut connected = connected_message(25_000, None);
    connected["limits"]["maxMessageBytes"] = json!(512);
    h.connect_with(connected);
    h.take();
    let big = OutgoingPublish::new(NewPublication {
        channel: "p".into(),
        kind: "t".into(),
        data: json!("x".repeat(600)),
        ..Default::default()
    })
    .unwrap();
    h.event(Event::Publish(big));
    let actions = h.take();
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Error(ClientError::PublishTooLarge { channel, max: 512, .. }) if channel == "p")
        ),
        "{actions:?}"
    );
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Send { .. })),
        "not sent: the server would close the connection (1009)"
    );
    publish_data(&mut h, 1);
    assert_eq!(h.sent().len(), 1, "the client carries on");
}

#[test]
fn a_publish_unanswered_past_the_idempotency_window_is_reported_not_resent() {
    let mut h = Harness::new(|_| {});
    let mut connected = connected_message(25_000, None);
    connected["limits"]["idempotencyWindowMs"] = json!(10_000);
    let t1 = h.connect_with(connected.clone());
    h.take();
    publish_data(&mut h, 0);
    assert_eq!(h.sent().len(), 1);
    h.event(Event::TransportClosed { transport: t1, code: 1012, reason: String::new() });
    // Offline for longer than the server remembers keys.
    h.event(Event::Offline);
    h.advance(Duration::from_secs(30));
    h.event(Event::Online);
    let t2 = h.opened();
    h.frame(t2, json!([connected]));
    let actions = h.take();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Error(ClientError::PublishUnconfirmed { channel }) if channel == "p")),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { text, .. } if text.contains("publish"))));
}

#[test]
fn publishes_refused_by_the_command_limiter_are_sent_again() {
    let mut h = Harness::new(|_| {});
    let t = h.connect();
    h.take();
    publish_data(&mut h, 0);
    let first = h.sent();
    // The command limiter's refusal names no command: everything unanswered goes again.
    h.frame(t, json!([{"type":"error","timestamp":TS,"code":"RATE_LIMIT_EXCEEDED","message":"slow down"}]));
    h.take();
    h.advance(Duration::from_secs(1));
    let again = h.sent();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["idempotencyKey"], first[0]["idempotencyKey"]);
    // A refusal for the publish itself ends it (and is reported).
    h.frame(
        t,
        json!([{"type":"error","timestamp":TS,"id":again[0]["id"],"code":"FORBIDDEN","message":"no","channel":"p"}]),
    );
    h.take();
    h.event(Event::TransportClosed { transport: t, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    h.connected(t2);
    assert_eq!(h.sent(), Vec::<Value>::new(), "a refused publish is not retried");
}

#[test]
fn resubscribing_many_channels_splits_the_commands_to_fit_the_server() {
    let mut h = Harness::new(|_| {});
    let channels: Vec<String> = (0..300).map(|i| format!("desk.instrument.{i:04}.with-a-rather-long-name")).collect();
    for channel in &channels {
        h.event(Event::Subscribe { channel: channel.clone() });
    }
    let mut connected = connected_message(25_000, None);
    connected["limits"]["maxChannels"] = json!(400);
    let t = h.connect_with(connected.clone());
    let commands = h.sent();
    assert!(commands.len() > 1, "one command would be {} bytes", channels.iter().map(|c| c.len() + 3).sum::<usize>());
    let mut named = Vec::new();
    for command in &commands {
        assert!(command.to_string().len() <= 4096, "within maxMessageBytes");
        named.extend(command["channels"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()));
    }
    let mut expected = channels.clone();
    expected.sort();
    assert_eq!(named, expected, "every channel once");
    // With positions, and a lower channel limit per command.
    let answers: Vec<Value> =
        channels.iter().map(|c| json!({"type":"subscribed","timestamp":TS,"channel":c,"seq":3,"epoch":"e1"})).collect();
    h.frame(t, Value::Array(answers));
    h.event(Event::TransportClosed { transport: t, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let t2 = h.opened();
    connected["limits"]["maxChannels"] = json!(50);
    h.frame(t2, json!([connected]));
    let commands = h.sent();
    assert!(commands.len() >= 6);
    for command in &commands {
        let listed = command["channels"].as_array().unwrap();
        assert!(listed.len() <= 50);
        assert!(command.to_string().len() <= 4096);
        assert_eq!(command["since"].as_object().unwrap().len(), listed.len(), "each with its position");
    }
}

#[test]
fn channels_asking_the_same_options_are_restored_in_one_command() {
    // Options are a command's: channels that ask the same go together, each other set
    // in commands of its own, so a dashboard of many filtered or throttled views
    // reconnects in a few commands rather than one per channel.
    let mut h = Harness::new(|_| {});
    let rate = SubscriptionOptions { min_interval_ms: Some(500), deltas: true, ..Default::default() };
    let types = SubscriptionOptions { types: Some(vec!["alert".into()]), ..Default::default() };
    for (channel, options) in
        [("lp.a", &rate), ("lp.b", &rate), ("alerts.x", &types), ("lp.c", &rate), ("alerts.y", &types)]
    {
        h.event(Event::SubscribeWith { channel: channel.into(), options: options.clone() });
    }
    h.event(Event::Subscribe { channel: "plain".into() });
    h.connect();
    let sent = h.sent();
    let channels: Vec<Value> = sent.iter().map(|c| c["channels"].clone()).collect();
    assert_eq!(channels, [json!(["plain"]), json!(["alerts.x", "alerts.y"]), json!(["lp.a", "lp.b", "lp.c"])]);
    assert_eq!(sent[1]["options"], json!({"snapshotEnd": true, "types": ["alert"]}));
    assert_eq!(sent[2]["options"], json!({"snapshotEnd": true, "minInterval": 500, "deltas": true}));
}

/// The kind and URL of the next `Open` since the last take.
fn opened_kind(h: &mut Harness) -> (TransportId, TransportKind, String) {
    h.take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open { transport, kind, url, .. } => Some((transport, kind, url)),
            _ => None,
        })
        .expect("an Open action")
}

fn with_fallback(c: &mut ClientConfig) {
    c.transports = vec![TransportKind::WebSocket, TransportKind::Http];
}

#[test]
fn a_websocket_that_does_not_get_through_falls_back_at_once_and_loses_nothing() {
    let mut h = Harness::new(with_fallback);
    h.event(Event::Subscribe { channel: "a".into() });
    h.event(Event::Connect);
    let (t1, kind, url) = opened_kind(&mut h);
    assert_eq!((kind, url.as_str()), (TransportKind::WebSocket, "ws://a/ws"));
    // A proxy refuses the upgrade: the browser reports 1006 before anything arrived.
    h.event(Event::TransportClosed { transport: t1, code: 1006, reason: String::new() });
    assert_eq!(h.reconnect_delay(), Some(Duration::ZERO), "no backoff before the fallback");
    h.advance(Duration::ZERO);
    let (t2, kind, url) = opened_kind(&mut h);
    assert_eq!((kind, url.as_str()), (TransportKind::Http, "http://a/http/stream"));
    assert_eq!(h.core.attempt(), 0);
    h.connected(t2);
    assert_eq!(h.core.transport_kind(), Some(TransportKind::Http));
    let sent = h.sent();
    assert_eq!(sent[0]["channels"], json!(["a"]));
    h.subscribed(t2, "a", 0, None);
    h.publish(t2, "a", 1..=3);
    assert_eq!(h.delivered(), vec![1, 2, 3]);

    // A server restart: the reconnect keeps to what works, and recovers with since.
    h.event(Event::TransportClosed { transport: t2, code: 1012, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    let (t3, kind, _) = opened_kind(&mut h);
    assert_eq!(kind, TransportKind::Http);
    h.connected(t3);
    assert_eq!(h.sent()[0]["since"], json!({"a":{"seq":3,"epoch":"e1"}}));
}

#[test]
fn a_websocket_that_never_opens_falls_back_after_the_open_timeout() {
    let mut h = Harness::new(|c| {
        with_fallback(c);
        c.open_timeout = Duration::from_secs(3);
    });
    h.event(Event::Connect);
    let (t1, kind, _) = opened_kind(&mut h);
    assert_eq!(kind, TransportKind::WebSocket);
    h.advance(Duration::from_millis(2900));
    assert!(h.take().is_empty(), "still waiting");
    h.advance(Duration::from_millis(100));
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Close { transport, .. } if *transport == t1)), "{actions:?}");
    assert!(actions.iter().any(|a| matches!(a, Action::Open { kind: TransportKind::Http, .. })), "{actions:?}");
}

#[test]
fn when_every_transport_fails_the_backoff_applies_and_the_round_starts_again() {
    let mut h = Harness::new(with_fallback);
    h.event(Event::Connect);
    let (t1, _, _) = opened_kind(&mut h);
    h.event(Event::TransportClosed { transport: t1, code: 1006, reason: String::new() });
    h.advance(Duration::ZERO);
    let (t2, kind, _) = opened_kind(&mut h);
    assert_eq!(kind, TransportKind::Http);
    h.event(Event::TransportClosed { transport: t2, code: 1006, reason: String::new() });
    assert!(h.reconnect_delay().unwrap() > Duration::ZERO, "the server may be down: back off");
    assert_eq!(h.core.attempt(), 1);
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    assert_eq!(opened_kind(&mut h).1, TransportKind::WebSocket);
}

#[test]
fn a_refusal_by_the_server_is_not_a_reason_to_fall_back() {
    let mut h = Harness::new(with_fallback);
    h.event(Event::Connect);
    let (t1, _, _) = opened_kind(&mut h);
    h.event(Event::TransportClosed { transport: t1, code: 4501, reason: "AUTH_INVALID".into() });
    assert!(matches!(h.core.state(), ConnectionState::Disconnected));
    h.event(Event::Connect);
    let (t2, kind, _) = opened_kind(&mut h);
    assert_eq!(kind, TransportKind::WebSocket);
    h.event(Event::TransportClosed { transport: t2, code: 1013, reason: String::new() });
    let delay = h.reconnect_delay().unwrap();
    h.advance(delay);
    assert_eq!(opened_kind(&mut h).1, TransportKind::WebSocket, "1013 is the server's answer, not the network's");
}

#[test]
fn a_fallback_link_tries_websocket_again_later_with_a_growing_delay() {
    let mut h = Harness::new(|c| {
        with_fallback(c);
        c.upgrade_after = Duration::from_secs(60);
    });
    h.event(Event::Subscribe { channel: "a".into() });
    h.event(Event::Connect);
    let (t1, _, _) = opened_kind(&mut h);
    h.event(Event::TransportClosed { transport: t1, code: 1006, reason: String::new() });
    h.advance(Duration::ZERO);
    let (t2, _, _) = opened_kind(&mut h);
    h.connected(t2);
    h.take();
    h.subscribed(t2, "a", 0, None);
    h.publish(t2, "a", [1]);
    h.take();
    // Heartbeats keep the link alive while the upgrade timer runs.
    for _ in 0..5 {
        h.advance(Duration::from_secs(11));
        h.frame(t2, json!([{"type":"heartbeat","timestamp":TS}]));
    }
    assert!(h.take().iter().all(|a| !matches!(a, Action::Open { .. })), "not before 60 s");
    h.advance(Duration::from_secs(6));
    let actions = h.take();
    assert!(actions.iter().any(|a| matches!(a, Action::Close { transport, code: 1000, .. } if *transport == t2)));
    let t3 = actions
        .iter()
        .find_map(|a| match a {
            Action::Open { transport, kind: TransportKind::WebSocket, .. } => Some(*transport),
            _ => None,
        })
        .expect("WebSocket tried again");
    // Still blocked: straight back to HTTP, and the next try waits twice as long.
    h.event(Event::TransportClosed { transport: t3, code: 1006, reason: String::new() });
    h.advance(Duration::ZERO);
    let (t4, kind, _) = opened_kind(&mut h);
    assert_eq!(kind, TransportKind::Http);
    h.connected(t4);
    assert_eq!(h.sent()[0]["since"], json!({"a":{"seq":1,"epoch":"e1"}}), "nothing lost in the switch");
    for _ in 0..10 {
        h.advance(Duration::from_secs(11));
        h.frame(t4, json!([{"type":"heartbeat","timestamp":TS}]));
    }
    assert!(h.take().iter().all(|a| !matches!(a, Action::Open { .. })), "not before 120 s");
    h.advance(Duration::from_secs(11));
    h.frame(t4, json!([{"type":"heartbeat","timestamp":TS}]));
    let (t5, kind, _) = opened_kind(&mut h);
    assert_eq!(kind, TransportKind::WebSocket);
    // WebSocket works now: it stays, with no further switching.
    h.connected(t5);
    assert_eq!(h.core.transport_kind(), Some(TransportKind::WebSocket));
    h.take();
    for _ in 0..30 {
        h.advance(Duration::from_secs(11));
        h.frame(t5, json!([{"type":"heartbeat","timestamp":TS}]));
    }
    assert!(h.take().iter().all(|a| !matches!(a, Action::Open { .. } | Action::Close { .. })));
}
