//! Field deltas (`options.deltas` on `subscribe`) against a real node over real sockets:
//! a key's value after the first is a merge patch against the one the subscriber holds,
//! whole values where a delta cannot apply (first delivery, after a delete, a value that
//! is not an object, after recovery, after the queue dropped the base), and through a
//! resampled stream against what that stream sent. (The Redis engine's side is in
//! `redis.rs`.)

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::{NewPublication, Op};

fn lp(key: &str, fill: f64) -> NewPublication {
    NewPublication {
        channel: "lp".into(),
        kind: "lp-metrics".into(),
        data: json!({"lp": key, "venue": "London", "fillRate": fill, "spreadBps": 1.25, "latencyMs": 4}),
        key: Some(key.into()),
        ..Default::default()
    }
}

/// A subscriber's table, rebuilt the way a client does it: every delta must apply to
/// the value it holds, at exactly the seq the delta names.
#[derive(Default, Debug)]
struct Table {
    rows: HashMap<String, (u64, Value)>,
    deltas: usize,
    wholes: usize,
}

impl Table {
    fn take(&mut self, message: &Value) {
        let key = message["key"].as_str().expect("keyed").to_owned();
        let seq = message["seq"].as_u64().unwrap();
        match (message["op"].as_str(), message["base"].as_u64()) {
            (Some("delete"), _) => {
                self.rows.remove(&key);
            }
            (_, Some(base)) => {
                let (held, value) = self.rows.get_mut(&key).unwrap_or_else(|| panic!("a delta for {key}, not held"));
                assert_eq!(*held, base, "a delta for {key} against {base}, but {held} is held: {message}");
                tidewire_protocol::delta::apply(value, &message["data"]);
                *held = seq;
                self.deltas += 1;
            }
            (_, None) => {
                self.rows.insert(key, (seq, message["data"].clone()));
                self.wholes += 1;
            }
        }
    }

    fn values(&self) -> HashMap<String, Value> {
        self.rows.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    }
}

async fn subscribe(client: &mut Client, options: Value, since: Option<Value>) -> Value {
    client.subscribe_with("lp", options, since).await
}

/// Publications (and gap notices) that arrive within `wait`.
async fn collect(client: &mut Client, wait: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match client.try_next(left).await {
            Ok(Some(message)) if message["type"] == "gap" || message["seq"].is_u64() && message["channel"] == "lp" => {
                if message["type"] != "subscribed" && message["type"] != "snapshot-end" {
                    seen.push(message);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// The channel's latest values, from a fresh subscriber's snapshot.
async fn snapshot(server: &TestServer) -> HashMap<String, Value> {
    let mut fresh = server.client("u").await;
    fresh.next().await;
    subscribe(&mut fresh, json!({"snapshotEnd": true}), None).await;
    let mut table = Table::default();
    loop {
        let message = fresh.next().await;
        if message["type"] == "snapshot-end" {
            return table.values();
        }
        table.take(&message);
    }
}

#[tokio::test]
async fn a_keys_next_value_is_a_patch_of_the_one_the_subscriber_holds() {
    let server = TestServer::start().await;
    server.hub.publish(lp("A", 0.90)).await.unwrap(); // 1: in the snapshot
    let mut client = server.client("u").await;
    client.next().await;
    let subscribed = subscribe(&mut client, json!({"deltas": true, "snapshotEnd": true}), None).await;
    assert_eq!(subscribed["deltas"], true, "granted: {subscribed}");
    let mut plain = server.client("u").await;
    plain.next().await;
    let answer = subscribe(&mut plain, json!({}), None).await;
    assert!(answer.get("deltas").is_none(), "not asked, not granted: {answer}");

    server.hub.publish(lp("A", 0.95)).await.unwrap(); // 2: a delta of the snapshot's 1
    server.hub.publish(lp("B", 0.50)).await.unwrap(); // 3: B's first value: whole
    server.hub.publish(lp("B", 0.55)).await.unwrap(); // 4: a delta of 3
    let seen = collect(&mut client, Duration::from_millis(300)).await;
    let snapshot_item = &seen[0];
    assert_eq!((snapshot_item["seq"].as_u64(), snapshot_item["snapshot"].as_bool()), (Some(1), Some(true)));
    let bases: Vec<Option<u64>> = seen.iter().map(|m| m["base"].as_u64()).collect();
    assert_eq!(bases, [None, Some(1), None, Some(3)], "{seen:#?}");
    assert_eq!(seen[1]["data"], json!({"fillRate": 0.95}), "only the field that changed");
    assert_eq!(seen[1]["type"], "lp-metrics");
    let mut table = Table::default();
    seen.iter().for_each(|m| table.take(m));
    assert_eq!(table.values(), snapshot(&server).await, "the rebuilt table is the channel's");
    // A subscriber that did not ask gets whole values.
    let whole = collect(&mut plain, Duration::from_millis(100)).await;
    assert!(whole.iter().all(|m| m.get("base").is_none() && m["data"]["venue"] == "London"), "{whole:#?}");
}

#[tokio::test]
async fn whole_values_after_a_delete_for_values_that_are_not_objects_and_after_recovery() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    let subscribed = subscribe(&mut client, json!({"deltas": true}), None).await;
    server.hub.publish(lp("A", 0.9)).await.unwrap(); // 1
    server.hub.publish(NewPublication { op: Op::Delete, data: Value::Null, ..lp("A", 0.0) }).await.unwrap(); // 2
    server.hub.publish(lp("A", 0.8)).await.unwrap(); // 3: whole, the row was deleted
    server.hub.publish(NewPublication { data: json!([1, 2, 3]), ..lp("A", 0.0) }).await.unwrap(); // 4: an array
    server.hub.publish(lp("A", 0.8)).await.unwrap(); // 5: whole, 4 was no object
    server.hub.publish(lp("A", 0.7)).await.unwrap(); // 6: a delta of 5
    let seen = collect(&mut client, Duration::from_millis(300)).await;
    let bases: Vec<Option<u64>> = seen.iter().map(|m| m["base"].as_u64()).collect();
    assert_eq!(bases, [None, None, None, None, None, Some(5)], "{seen:#?}");

    // Back after a lost link: the replay is whole, and so is each key's next value.
    drop(client);
    server.hub.publish(lp("A", 0.6)).await.unwrap(); // 7
    let mut back = server.client("u").await;
    back.next().await;
    let since = json!({"lp": {"seq": 6, "epoch": subscribed["epoch"]}});
    let answer = subscribe(&mut back, json!({"deltas": true}), Some(since)).await;
    assert_eq!((answer["recovered"].as_bool(), answer["deltas"].as_bool()), (Some(true), Some(true)));
    server.hub.publish(lp("A", 0.5)).await.unwrap(); // 8: whole (the first after the start)
    server.hub.publish(lp("A", 0.4)).await.unwrap(); // 9: a delta of 8
    let seen = collect(&mut back, Duration::from_millis(300)).await;
    let got: Vec<(u64, Option<u64>)> = seen.iter().map(|m| (m["seq"].as_u64().unwrap(), m["base"].as_u64())).collect();
    assert_eq!(got, [(7, None), (8, None), (9, Some(8))]);
}

#[tokio::test]
async fn a_delta_never_names_a_base_the_queue_dropped() {
    // A queue of four publications sent every 100 ms: most values are superseded before
    // they go, and some overflow. Every delta that arrives still applies to exactly the
    // value held, and after recovering from the overflow the table is the channel's.
    let server = TestServer::with(|c| {
        c.max_batch = 4;
        c.max_queued_batches = 1;
        c.batch_interval = Duration::from_millis(100);
    })
    .await;
    let mut client = server.client("u").await;
    client.next().await;
    let subscribed = subscribe(&mut client, json!({"deltas": true}), None).await;
    for round in 0..40 {
        for key in ["A", "B", "C"] {
            server.hub.publish(lp(key, f64::from(round) / 100.0)).await.unwrap();
        }
        if round % 10 == 9 {
            for _ in 0..6 {
                let fact = NewPublication { key: None, data: json!({"note": round}), ..lp("A", 0.0) };
                server.hub.publish(fact).await.unwrap(); // unkeyed: overflows
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut table = Table::default();
    let mut position = 0;
    let (mut superseded, mut overflowed) = (0, false);
    for message in collect(&mut client, Duration::from_millis(1500)).await {
        if message["type"] == "gap" {
            if message["reason"] == "overflow" {
                overflowed = true;
                break;
            }
            superseded += 1;
            continue;
        }
        position = message["seq"].as_u64().unwrap();
        if message["key"].is_string() {
            table.take(&message);
        }
    }
    assert!(superseded > 0 && overflowed, "the queue dropped values: {superseded} superseded notices");
    // Recover as a client does: from the last seq taken, and start the table again.
    let since = json!({"lp": {"seq": position, "epoch": subscribed["epoch"]}});
    let answer = subscribe(&mut client, json!({"deltas": true}), Some(since)).await;
    // Recovered: what was missed follows; not (more was missed than a queue holds): a
    // snapshot follows, and the table starts empty.
    let rows = if answer["recovered"] == true { table.rows } else { HashMap::new() };
    let mut table = Table { rows, ..Table::default() };
    for message in collect(&mut client, Duration::from_millis(1500)).await {
        assert_ne!(message["type"], "gap", "nothing is dropped once the publisher stopped");
        if message["key"].is_string() {
            table.take(&message);
        }
    }
    assert_eq!(table.values(), snapshot(&server).await);
    assert!(table.deltas == 0, "after recovery every key came whole first, and nothing followed");
}

#[tokio::test]
async fn a_resampled_stream_sends_deltas_against_what_it_sent() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    let subscribed = subscribe(&mut client, json!({"deltas": true, "minInterval": 200}), None).await;
    assert_eq!((subscribed["deltas"].as_bool(), subscribed["minInterval"].as_u64()), (Some(true), Some(200)));
    let mut table = Table::default();
    for round in 0..12 {
        for key in ["A", "B"] {
            server.hub.publish(lp(key, f64::from(round) / 10.0)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = collect(&mut client, Duration::from_millis(500)).await;
    seen.iter().for_each(|m| table.take(m));
    assert!(seen.len() < 24, "values were skipped: {}", seen.len());
    assert_eq!(table.wholes, 2, "one whole value per key, then deltas: {table:?}");
    assert!(table.deltas >= 4, "{table:?}");
    assert_eq!(table.values(), snapshot(&server).await);
}
