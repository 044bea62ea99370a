//! A rate the subscriber asks for (`options.minInterval` on `subscribe`), against a real node
//! over real sockets: each key's newest value at most once per granted interval,
//! unkeyed publications all delivered, rates granted from the ladder and bad ones
//! refused, deletes, filters and replays through a resampled stream. (The Redis
//! engine's side is in `redis.rs`.)

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::{NewPublication, Op};

fn row(key: Option<&str>, n: u64) -> NewPublication {
    NewPublication {
        channel: "lp".into(),
        kind: "lp-metrics".into(),
        data: json!({"n": n}),
        key: key.map(Into::into),
        ..Default::default()
    }
}

/// Subscribes to `lp` with `options`; returns `subscribed`.
async fn subscribe(client: &mut Client, options: Value, since: Option<Value>) -> Value {
    client.subscribe_with("lp", options, since).await
}

/// Every publication that arrives within `wait`, with when it arrived.
async fn collect(client: &mut Client, wait: Duration) -> Vec<(Instant, Value)> {
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match client.try_next(left).await {
            Ok(Some(message)) if message["seq"].is_u64() && message["type"] != "subscribed" => {
                seen.push((Instant::now(), message));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

fn seqs(seen: &[(Instant, Value)]) -> Vec<u64> {
    seen.iter().filter_map(|(_, m)| m["seq"].as_u64()).collect()
}

#[tokio::test]
async fn a_key_gets_its_newest_value_at_most_once_per_interval_and_unkeyed_ones_all_arrive() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    let subscribed = subscribe(&mut client, json!({"minInterval": 250}), None).await;
    assert_eq!(subscribed["minInterval"], 250);

    // 200 values of A over about a second (far above 4/s), and an unkeyed one every 50,
    // read as they arrive.
    let hub = server.hub.clone();
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        let (mut last_a, mut unkeyed) = (0, Vec::new());
        for n in 1..=200u64 {
            let key = if n % 50 == 0 { None } else { Some("A") };
            let seq = hub.publish(row(key, n)).await.unwrap().seq;
            match key {
                Some(_) => last_a = seq,
                None => unkeyed.push(seq),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (last_a, unkeyed, started.elapsed())
    });
    let seen = collect(&mut client, Duration::from_millis(2500)).await;
    let (last_a, unkeyed, publishing) = publisher.await.unwrap();
    let received = seqs(&seen);
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in seq order: {received:?}");
    for seq in &unkeyed {
        assert!(received.contains(seq), "unkeyed {seq} is never thinned: {received:?}");
    }
    let a: Vec<&(Instant, Value)> = seen.iter().filter(|(_, m)| m["key"] == "A").collect();
    assert_eq!(a.last().and_then(|(_, m)| m["seq"].as_u64()), Some(last_a), "the newest value arrives");
    // One at once, then at most one per 250 ms interval while publishing lasted (a slow
    // machine publishes for longer and is allowed more, so this never fails by load).
    let most = 2 + (publishing.as_millis() / 250) as usize;
    assert!(a.len() <= most, "{} values of A in {publishing:?}; at most {most}", a.len());
}

#[tokio::test]
async fn rates_are_granted_from_the_ladder_and_meaningless_ones_refused() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    let granted = |v: Value| v["minInterval"].as_u64();
    assert_eq!(granted(subscribe(&mut client, json!({"minInterval": 300}), None).await), Some(500), "a step");
    assert_eq!(granted(subscribe(&mut client, json!({"minInterval": 1}), None).await), Some(20), "the node's floor");
    for bad in [json!(0), json!(10_001), json!(u64::MAX)] {
        client.send_value(json!({"action":"subscribe","channels":["lp"],"options":{"minInterval": bad}})).await;
        let error = client.expect_type("error").await;
        assert_eq!((error["code"].as_str(), error["channel"].as_str()), (Some("BAD_REQUEST"), Some("lp")), "{bad}");
        assert!(error["message"].as_str().unwrap().contains("minInterval"), "{error}");
    }
    for bad in [r#""fast""#, "-1", "2.5", "1e30"] {
        let command = format!(r#"{{"action":"subscribe","channels":["lp"],"options":{{"minInterval":{bad}}}}}"#);
        client.send(&command).await;
        assert_eq!(client.expect_type("error").await["code"], "BAD_REQUEST", "{bad}");
    }

    let floored = TestServer::with(|c| c.min_subscriber_interval = Duration::from_millis(100)).await;
    let mut client = floored.client("u").await;
    client.next().await;
    assert_eq!(granted(subscribe(&mut client, json!({"minInterval": 30}), None).await), Some(100));
    let plain = subscribe(&mut client, json!({}), None).await;
    assert!(plain.get("minInterval").is_none(), "an unthrottled subscription says no interval: {plain}");
}

#[tokio::test]
async fn a_delete_replaces_the_value_it_follows_and_never_resurrects_it() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    subscribe(&mut client, json!({"minInterval": 1000}), None).await;
    server.hub.publish(row(Some("B"), 0)).await.unwrap(); // 1: goes at once
    server.hub.publish(row(Some("A"), 1)).await.unwrap(); // 2: waits
    let delete = NewPublication { op: Op::Delete, ..row(Some("A"), 0) };
    let deleted = server.hub.publish(delete).await.unwrap().seq; // 3: replaces 2
    let seen = collect(&mut client, Duration::from_millis(1300)).await;
    assert_eq!(seqs(&seen), [1, deleted], "the upsert of A skipped, its delete delivered");
    assert_eq!(seen[1].1["op"], "delete");
    // A fresh subscriber's snapshot has B only.
    let mut fresh = server.client("u").await;
    fresh.next().await;
    subscribe(&mut fresh, json!({"minInterval": 1000, "snapshotEnd": true}), None).await;
    let first = fresh.next().await;
    assert_eq!((first["key"].as_str(), first["snapshot"].as_bool()), (Some("B"), Some(true)));
    assert_eq!(fresh.next().await["type"], "snapshot-end");
}

#[tokio::test]
async fn a_throttled_replay_holds_each_keys_latest_value_and_every_unkeyed_one() {
    let server = TestServer::start().await;
    let mut first = server.client("u").await;
    first.next().await;
    let subscribed = subscribe(&mut first, json!({}), None).await;
    for key in [Some("A"), Some("B"), Some("A"), None, Some("A")] {
        server.hub.publish(row(key, 0)).await.unwrap(); // 1..=5
    }
    let mut back = server.client("u").await;
    back.next().await;
    let since = json!({"lp": {"seq": 0, "epoch": subscribed["epoch"]}});
    let answer = subscribe(&mut back, json!({"minInterval": 500}), Some(since)).await;
    assert_eq!(answer["recovered"], true);
    let replay: Vec<u64> =
        [back.next().await, back.next().await, back.next().await].iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(replay, [2, 4, 5], "B's value, the unkeyed one, A's latest");
}

#[tokio::test]
async fn filters_apply_through_the_resampled_stream() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    subscribe(&mut client, json!({"minInterval": 500, "keys": ["A"]}), None).await;
    let mut watcher = server.client("u").await;
    watcher.next().await;
    subscribe(&mut watcher, json!({"minInterval": 500}), None).await;
    for key in [Some("B"), Some("A"), Some("B"), None, Some("A")] {
        server.hub.publish(row(key, 0)).await.unwrap(); // 1..=5
    }
    let seen = collect(&mut client, Duration::from_millis(800)).await;
    assert_eq!(seqs(&seen), [4, 5], "A's newest value (2 was replaced by 5) and the unkeyed one");
    let all = collect(&mut watcher, Duration::from_millis(100)).await;
    assert_eq!(seqs(&all), [1, 3, 4, 5], "the unfiltered member of the same stream: B at once, then the rest");
}

#[tokio::test]
async fn leaving_a_throttled_subscription_or_changing_it_takes_effect() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    subscribe(&mut client, json!({"minInterval": 1000}), None).await;
    server.hub.publish(row(Some("A"), 0)).await.unwrap(); // 1: at once
    server.hub.publish(row(Some("A"), 1)).await.unwrap(); // 2: waits
    assert_eq!(seqs(&collect(&mut client, Duration::from_millis(100)).await), [1]);
    // Subscribing again without a rate: every publication as it comes.
    let again = subscribe(&mut client, json!({}), None).await;
    assert!(again.get("minInterval").is_none());
    for n in 3..=5 {
        server.hub.publish(row(Some("A"), n)).await.unwrap();
    }
    let seen = collect(&mut client, Duration::from_millis(1200)).await;
    assert_eq!(seqs(&seen).iter().filter(|&&s| s >= 3).count(), 3, "unthrottled now: {:?}", seqs(&seen));
    // Leaving ends delivery, throttled or not.
    subscribe(&mut client, json!({"minInterval": 1000}), None).await;
    client.send(r#"{"action":"unsubscribe","channels":["lp"]}"#).await;
    client.expect_type("unsubscribed").await;
    server.hub.publish(row(Some("A"), 6)).await.unwrap();
    assert!(collect(&mut client, Duration::from_millis(1200)).await.is_empty());
    let channels = server.hub.channels().await;
    assert_eq!(channels.iter().find(|c| c.channel == "lp").map(|c| c.subscribers), Some(0));
}
