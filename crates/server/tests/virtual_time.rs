//! The client core against a real server session, on virtual time, with no sockets.
//!
//! The server side is a real hub (the in-memory engine) with a manual clock, and real
//! [`Session`]s: each of the client's transports is one session, fed the client's
//! commands as text and read for frames at the virtual `now`. The client side is the
//! real sans-IO core. Between them there is only this file's loop, which moves both
//! clocks together from one deadline to the next, so a reconnect that waits out a
//! backoff of several virtual seconds runs in microseconds, and every run takes the
//! same path.

use std::time::Duration;

use tidewire_client::core::{
    Action, ClientConfig, ClientCore, Event, SubscriptionEvent, SubscriptionOptions, TransportId,
};
use tidewire_protocol::{CloseCode, NewPublication, Op};
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tidewire_server::hub::Clock;
use tidewire_server::session::{Next, Session};
use tidewire_server::{Config, Hub};

const SECRET: &str = "virtual-time-secret-of-32-bytes-or-more";

/// A client core and a node, joined by this loop instead of a socket.
struct Pair {
    hub: Hub,
    clock: Clock,
    /// Virtual time since the start: the client's `now`; the server's clock moves with it.
    now: Duration,
    client: ClientCore,
    /// The server side of the client's current transport.
    link: Option<(TransportId, Session)>,
    delivered: Vec<u64>,
    /// The delivered messages' JSON, in order.
    deliveries: Vec<String>,
    /// The fields each delivery changed, for those that arrived as field deltas.
    changed: Vec<Option<Vec<String>>>,
    subscribed: Vec<Option<bool>>,
    /// When each transport was opened, in virtual time.
    opened_at: Vec<Duration>,
    frames: usize,
    /// Resampled streams are sent by the hub when due (`Hub::flush_throttled`): with
    /// throttled subscriptions, virtual time also stops every 10 ms for them.
    throttled: bool,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(|_| {})
    }

    /// A pair whose node takes `configure`'s settings.
    fn with(configure: impl FnOnce(&mut Config)) -> Pair {
        let clock = Clock::manual();
        let mut config = Config::for_tests(SECRET);
        configure(&mut config);
        let hub = Hub::with_clock(config, clock.clone()).expect("hub");
        let claims = Claims { sub: "trader".into(), exp: unix_now() + 3600, ..Claims::default() };
        let mut config = ClientConfig::new("ws://virtual/ws");
        config.token = Some(mint_hs256(SECRET, &claims).expect("token"));
        Pair {
            hub,
            clock,
            now: Duration::ZERO,
            client: ClientCore::new(config),
            link: None,
            delivered: Vec::new(),
            deliveries: Vec::new(),
            changed: Vec::new(),
            subscribed: Vec::new(),
            opened_at: Vec::new(),
            frames: 0,
            throttled: false,
        }
    }

    fn event(&mut self, event: Event) {
        self.client.handle(event, self.now);
        self.settle();
    }

    /// Publishes on `orders` a row of `key` (a delete with `op`).
    async fn publish_row(&self, key: &str, op: Op) -> u64 {
        let data = serde_json::json!({ "key": key });
        let new = NewPublication {
            channel: "orders".into(),
            kind: "row".into(),
            data,
            key: Some(key.into()),
            op,
            ..Default::default()
        };
        self.hub.publish(new).await.expect("published").seq
    }

    /// Publishes on `orders` a wide row of `key` whose `n` field is `n`; returns its seq
    /// and data.
    async fn publish_wide(&self, key: &str, n: u64) -> (u64, serde_json::Value) {
        let data = serde_json::json!({"key": key, "venue": "London", "book": "EMEA-FX", "n": n, "spreadBps": 1.25});
        let new = NewPublication {
            channel: "orders".into(),
            kind: "row".into(),
            data: data.clone(),
            key: Some(key.into()),
            ..Default::default()
        };
        (self.hub.publish(new).await.expect("published").seq, data)
    }

    async fn publish(&self, n: u64) {
        let data = serde_json::json!({ "n": n });
        let new = NewPublication { channel: "orders".into(), kind: "order".into(), data, ..Default::default() };
        self.hub.publish(new).await.expect("published");
    }

    /// The server ends the link abruptly (a node's process dies, a proxy drops it).
    fn cut(&mut self) {
        if let Some((transport, mut session)) = self.link.take() {
            session.leave_all();
            let event = Event::TransportClosed { transport, code: CloseCode::ABNORMAL.0, reason: "cut".into() };
            self.event(event);
        }
    }

    /// Carries out what each side has to say at the current instant, until neither
    /// has anything more.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            self.hub.flush_throttled();
            while let Some(action) = self.client.poll_action() {
                progressed = true;
                self.perform(action);
            }
            let frame = self.link.as_ref().and_then(|(transport, session)| {
                let now = self.clock.now();
                session.next_frame(now, false).map(|text| (*transport, text))
            });
            if let Some((transport, text)) = frame {
                progressed = true;
                self.frames += 1;
                self.client.handle(Event::Frame { transport, text }, self.now);
            }
            if !progressed {
                return;
            }
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Open { transport, token, .. } => {
                self.opened_at.push(self.now);
                let auth = self.hub.verifier().verify(token.as_deref().unwrap_or_default());
                match Session::open(&self.hub, auth, None) {
                    Ok(mut session) => {
                        session.greet(Default::default());
                        self.link = Some((transport, session));
                        self.client.handle(Event::TransportOpened { transport }, self.now);
                    }
                    Err((code, reason)) => {
                        self.client.handle(Event::TransportClosed { transport, code: code.0, reason }, self.now)
                    }
                }
            }
            Action::Send { transport, text } => {
                let Some((current, session)) = self.link.as_mut() else { return };
                if *current != transport {
                    return;
                }
                if let Next::Close(code, reason) = session.on_text(&text) {
                    panic!("the server closed the link ({code:?}: {reason}) for {text}");
                }
            }
            Action::Close { transport, .. } => {
                if self.link.as_ref().is_some_and(|(current, _)| *current == transport) {
                    if let Some((_, mut session)) = self.link.take() {
                        session.leave_all();
                    }
                }
            }
            Action::Deliver(delivery) => {
                self.delivered.push(delivery.seq);
                self.deliveries.push(delivery.json);
                self.changed.push(delivery.changed);
            }
            Action::Subscription { event: SubscriptionEvent::Subscribed { recovered }, .. } => {
                self.subscribed.push(recovered)
            }
            Action::Subscription { .. } | Action::State { .. } | Action::FetchToken | Action::Error(_) => {}
        }
    }

    /// Moves virtual time to `by` from now, stopping at every deadline on the way (the
    /// client's timers and the server's next frame), so each fires when it is due.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            self.settle();
            let start = self.clock.now() - self.now;
            let server_due = self.link.as_ref().and_then(|(_, session)| session.outbox.next_frame_at());
            let server_due = server_due.map(|at| at.saturating_duration_since(start));
            let tick = self.throttled.then(|| self.now + Duration::from_millis(10));
            let due = [self.client.poll_timeout(), server_due, tick].into_iter().flatten().min();
            let Some(at) = due.filter(|at| *at <= end) else { break };
            self.step_to(at.max(self.now));
            self.client.handle_timeout(self.now);
        }
        self.step_to(end);
        self.settle();
    }

    fn step_to(&mut self, at: Duration) {
        self.clock.advance(at - self.now);
        self.now = at;
    }
}

#[tokio::test]
async fn a_cut_link_reconnects_and_recovers_every_publication_on_virtual_time() {
    let mut pair = Pair::new();
    pair.event(Event::Subscribe { channel: "orders".into() });
    pair.event(Event::Connect);
    pair.advance(Duration::from_millis(100));
    assert_eq!(pair.subscribed, vec![None], "subscribed once, fresh");

    // Five publications at one instant leave in one frame; a sixth right after waits
    // out the batch interval, on the virtual clock.
    for n in 1..=5 {
        pair.publish(n).await;
    }
    let frames = pair.frames;
    pair.settle();
    assert_eq!(pair.frames, frames + 1, "one frame for five publications");
    pair.publish(6).await;
    pair.settle();
    assert_eq!(pair.delivered, (1..=5).collect::<Vec<_>>(), "the sixth waits for the interval");
    pair.advance(Duration::from_millis(16));
    assert_eq!(pair.delivered, (1..=6).collect::<Vec<_>>());

    // The link is cut; four publications happen while the client is away.
    pair.cut();
    let cut_at = pair.now;
    for n in 7..=10 {
        pair.publish(n).await;
    }
    // The client waits out its backoff (virtual seconds), reconnects, resubscribes with
    // `since`, and the server replays what it missed.
    pair.advance(Duration::from_secs(30));
    assert_eq!(pair.opened_at.len(), 2, "one reconnect");
    assert!(pair.opened_at[1] > cut_at, "after the backoff: {:?}", pair.opened_at);
    assert_eq!(pair.subscribed, vec![None, Some(true)], "the resubscription recovered everything");
    pair.publish(11).await;
    pair.advance(Duration::from_millis(20));
    assert_eq!(pair.delivered, (1..=11).collect::<Vec<_>>(), "every seq exactly once, in order");
}

#[tokio::test]
async fn history_expiry_follows_the_node_clock() {
    // With history kept for 60 virtual seconds, a client away for longer cannot recover
    // and is told so (`recovered: false`), without anyone waiting a minute.
    let mut pair = Pair::new();
    let mut config = Config::for_tests(SECRET);
    config.history_ttl = Duration::from_secs(60);
    pair.hub = Hub::with_clock(config, pair.clock.clone()).expect("hub");
    pair.event(Event::Subscribe { channel: "orders".into() });
    pair.event(Event::Connect);
    pair.advance(Duration::from_millis(100));
    pair.publish(1).await;
    pair.advance(Duration::from_millis(20));
    pair.cut();
    pair.publish(2).await;
    // Keep the client from reconnecting before the history expired: it is offline.
    pair.event(Event::Offline);
    pair.advance(Duration::from_secs(90));
    pair.event(Event::Online);
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.subscribed, vec![None, Some(false)], "the missed publication expired");
    assert_eq!(pair.delivered, vec![1]);
}

#[tokio::test]
async fn a_filtered_table_with_deletes_survives_a_cut_link_exactly() {
    // A subscription to two keys of a table: what the filter excludes is skipped without
    // a recovery, a delete of a watched key arrives as a delete, and after a cut link the
    // replay brings exactly the watched keys' changes, in order.
    let mut pair = Pair::new();
    let options = SubscriptionOptions { keys: Some(vec!["A".into(), "B".into()]), ..Default::default() };
    pair.event(Event::SubscribeWith { channel: "orders".into(), options });
    pair.event(Event::Connect);
    pair.advance(Duration::from_millis(100));
    let mut watched = Vec::new();
    for (key, op) in [("A", Op::Upsert), ("C", Op::Upsert), ("B", Op::Upsert), ("C", Op::Upsert)] {
        let seq = pair.publish_row(key, op).await;
        if key != "C" {
            watched.push(seq);
        }
    }
    pair.advance(Duration::from_millis(20));
    assert_eq!(pair.delivered, watched, "C is filtered, and its seqs are no gap");
    assert_eq!(pair.opened_at.len(), 1, "no recovery, no reconnect");

    pair.cut();
    for (key, op) in [("C", Op::Upsert), ("A", Op::Delete), ("D", Op::Upsert), ("B", Op::Upsert)] {
        let seq = pair.publish_row(key, op).await;
        if key == "A" || key == "B" {
            watched.push(seq);
        }
    }
    pair.advance(Duration::from_secs(30));
    assert_eq!(pair.subscribed, vec![None, Some(true)], "recovered with the filter");
    assert_eq!(pair.delivered, watched, "exactly the watched keys' changes, once, in order");
    let delete: serde_json::Value = serde_json::from_str(&pair.deliveries[watched.len() - 2]).unwrap();
    assert_eq!((delete["op"].as_str(), delete["key"].as_str()), (Some("delete"), Some("A")));
}

#[tokio::test]
async fn a_throttled_table_resamples_without_gaps_and_recovers_each_keys_latest_value() {
    // At 4 updates per second per key, a key written every 10 ms reaches the client at
    // most once per 250 ms, always as its newest value, with no recovery for the seqs it
    // skipped; unkeyed publications all arrive; after a cut link the replay brings each
    // key's latest value and every unkeyed publication, once, in order.
    let mut pair = Pair::new();
    pair.throttled = true;
    let options = SubscriptionOptions { min_interval_ms: Some(250), ..Default::default() };
    pair.event(Event::SubscribeWith { channel: "orders".into(), options });
    pair.event(Event::Connect);
    pair.advance(Duration::from_millis(100));
    assert_eq!(pair.client.granted_interval_ms("orders"), Some(250));
    let mut last_a = 0;
    let mut unkeyed = Vec::new();
    for n in 0..100 {
        last_a = pair.publish_row("A", Op::Upsert).await;
        if n % 25 == 0 {
            pair.publish(n).await;
            unkeyed.push(last_a + 1);
        }
        pair.advance(Duration::from_millis(10));
    }
    pair.advance(Duration::from_millis(300));
    let delivered_a: Vec<u64> = pair.delivered.iter().copied().filter(|seq| !unkeyed.contains(seq)).collect();
    assert!(delivered_a.len() <= 1 + 1000 / 250 + 1, "{} values of A in one virtual second", delivered_a.len());
    assert_eq!(delivered_a.last(), Some(&last_a), "the newest value arrived");
    assert!(unkeyed.iter().all(|seq| pair.delivered.contains(seq)), "no unkeyed publication thinned");
    assert!(pair.delivered.windows(2).all(|w| w[0] < w[1]), "in order: {:?}", pair.delivered);
    assert_eq!((pair.opened_at.len(), pair.subscribed.clone()), (1, vec![None]), "skipped seqs are no gap");

    pair.cut();
    let before = pair.delivered.len();
    let mut expected = Vec::new();
    for key in ["A", "B", "A", "B", "A"] {
        pair.publish_row(key, Op::Upsert).await;
    }
    pair.publish(1000).await;
    let head = pair.publish_row("A", Op::Delete).await;
    expected.extend([head - 3, head - 1, head]); // B's latest, the unkeyed one, A's delete
    pair.advance(Duration::from_secs(30));
    assert_eq!(pair.subscribed, vec![None, Some(true)], "recovered");
    assert_eq!(pair.delivered[before..], expected[..], "each key's latest and the unkeyed one");
}

#[tokio::test]
async fn a_delta_table_shows_whole_records_across_deletes_a_cut_link_and_a_resampled_stream() {
    // With deltas, each key's values after the first travel as merge patches; the core
    // rebuilds every one whole (naming the fields that changed), a delete forgets the
    // row, and after a cut link the replay comes whole and the table stays exact.
    for throttled in [false, true] {
        let mut pair = Pair::new();
        pair.throttled = throttled;
        let options =
            SubscriptionOptions { deltas: true, min_interval_ms: throttled.then_some(100), ..Default::default() };
        pair.event(Event::SubscribeWith { channel: "orders".into(), options });
        pair.event(Event::Connect);
        pair.advance(Duration::from_millis(100));
        assert!(pair.client.deltas_granted("orders"));
        let mut published = std::collections::HashMap::new();
        for n in 0..30 {
            for key in ["A", "B"] {
                let (seq, data) = pair.publish_wide(key, n).await;
                published.insert(seq, data);
            }
            if n == 20 {
                published.insert(pair.publish_row("B", Op::Delete).await, serde_json::json!({"key": "B"}));
            }
            if n == 25 {
                pair.cut();
            }
            pair.advance(Duration::from_millis(40));
        }
        pair.advance(Duration::from_secs(30));
        assert_eq!(pair.subscribed, vec![None, Some(true)], "recovered after the cut");
        for json in &pair.deliveries {
            let message: serde_json::Value = serde_json::from_str(json).unwrap();
            let seq = message["seq"].as_u64().unwrap();
            assert!(message.get("base").is_none(), "the app never sees a patch: {message}");
            assert_eq!(message["data"], published[&seq], "seq {seq} rebuilt whole (throttled: {throttled})");
        }
        let patched = pair.changed.iter().flatten().count();
        assert!(patched > 10, "most values arrived as deltas ({patched}, throttled: {throttled})");
        assert!(pair.changed.iter().flatten().all(|fields| fields == &["n".to_owned()]), "only n changes");
        assert_eq!(pair.opened_at.len(), 2, "one reconnect, no recovery for a base not held");
    }
}

#[tokio::test]
async fn a_delta_table_stays_exact_when_the_queue_drops_values() {
    // A queue of four publications a frame, one frame per 100 ms, while three keys change
    // every 10 ms and unkeyed facts overflow it now and then: values are superseded (the
    // next one of its key goes whole) and dropped (the core recovers). Every record the
    // app sees is whole and right, and the table ends as the channel's latest values.
    let mut pair = Pair::with(|c| {
        c.max_batch = 4;
        c.max_queued_batches = 1;
        c.batch_interval = Duration::from_millis(100);
    });
    let options = SubscriptionOptions { deltas: true, ..Default::default() };
    pair.event(Event::SubscribeWith { channel: "orders".into(), options });
    pair.event(Event::Connect);
    pair.advance(Duration::from_millis(100));
    let mut published = std::collections::HashMap::new();
    let mut latest = std::collections::BTreeMap::new();
    for n in 0..60 {
        for key in ["A", "B", "C"] {
            let (seq, data) = pair.publish_wide(key, n).await;
            latest.insert(key, data.clone());
            published.insert(seq, data);
        }
        if n % 20 == 19 {
            for fact in 0..6 {
                pair.publish(fact).await;
            }
        }
        pair.advance(Duration::from_millis(10));
    }
    pair.advance(Duration::from_secs(5));
    // Calm again: one change per key every 300 ms fits the queue, and goes as deltas.
    for n in 60..65 {
        for key in ["A", "B", "C"] {
            let (seq, data) = pair.publish_wide(key, n).await;
            latest.insert(key, data.clone());
            published.insert(seq, data);
        }
        pair.advance(Duration::from_millis(300));
    }
    let mut table = std::collections::BTreeMap::new();
    for json in &pair.deliveries {
        let message: serde_json::Value = serde_json::from_str(json).unwrap();
        let Some(key) = message["key"].as_str() else { continue };
        let seq = message["seq"].as_u64().unwrap();
        assert!(message.get("base").is_none(), "the app never sees a patch");
        assert_eq!(message["data"], published[&seq], "seq {seq} rebuilt whole");
        table.insert(key.to_owned(), message["data"].clone());
    }
    let latest: std::collections::BTreeMap<String, serde_json::Value> =
        latest.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(table, latest, "the table ends at the channel's latest values");
    assert!(pair.subscribed.len() > 1, "the overflow made the core recover: {:?}", pair.subscribed);
    assert!(pair.changed.iter().flatten().count() > 0, "deltas were delivered between the drops");
}
