//! `snapshot-end`: a subscription that asks for it (`options.snapshotEnd`) is told when
//! the snapshot after its `subscribed` is complete, also when the channel holds nothing;
//! a client that does not ask sees what clients always saw. (The Redis engine's side is
//! in `redis.rs`.)

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::NewPublication;

async fn publish(server: &TestServer, channel: &str, key: &str, n: u64) {
    let new = NewPublication {
        channel: channel.into(),
        kind: "row".into(),
        data: json!({ "n": n }),
        key: Some(key.into()),
        idempotency_key: None,
    };
    server.hub.publish(new).await.unwrap();
}

/// The messages of one subscription's start, up to and including `snapshot-end`.
async fn start(client: &mut Client) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = client.next().await;
        let end = message["type"] == "snapshot-end";
        seen.push(message);
        if end {
            return seen;
        }
    }
}

#[tokio::test]
async fn the_snapshot_ends_with_a_marker_at_the_head() {
    let server = TestServer::start().await;
    for (key, n) in [("A", 1), ("B", 2), ("A", 3)] {
        publish(&server, "lps", key, n).await;
    }
    let mut client = server.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","id":1,"channels":["lps"],"options":{"snapshotEnd":true}})).await;
    let seen = start(&mut client).await;
    let kinds: Vec<(&str, Option<u64>)> =
        seen.iter().map(|m| (m["type"].as_str().unwrap_or_default(), m["seq"].as_u64())).collect();
    // The latest value per key, oldest first, then the marker at the head.
    assert_eq!(kinds, [("subscribed", Some(3)), ("row", Some(2)), ("row", Some(3)), ("snapshot-end", Some(3))]);
    assert_eq!(seen[3]["channel"], "lps");
    // Live publications follow.
    publish(&server, "lps", "C", 4).await;
    assert_eq!(client.next().await["seq"], 4);
}

#[tokio::test]
async fn an_empty_channel_ends_its_snapshot_at_once() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","channels":["empty"],"options":{"snapshotEnd":true}})).await;
    let seen = start(&mut client).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0]["type"].as_str(), seen[1]["seq"].as_u64()), (Some("subscribed"), Some(0)));
}

#[tokio::test]
async fn a_replay_has_no_snapshot_and_a_lost_stream_gets_one() {
    let server = TestServer::start().await;
    publish(&server, "lps", "A", 1).await;
    let mut client = server.client("u").await;
    client.next().await;
    let options = json!({"snapshotEnd": true});
    client.send_value(json!({"action":"subscribe","channels":["lps"],"options":options})).await;
    let epoch = start(&mut client).await[0]["epoch"].clone();
    publish(&server, "lps", "A", 2).await;
    client.next().await;

    // Recovered from the same epoch: the replay, no snapshot, no marker.
    let mut again = server.client("u").await;
    again.next().await;
    let since = json!({"lps": {"seq": 1, "epoch": epoch}});
    again.send_value(json!({"action":"subscribe","channels":["lps"],"since":since,"options":options})).await;
    assert_eq!(again.next().await["recovered"], true);
    assert_eq!(again.next().await["seq"], 2);
    assert_eq!(again.try_next(Duration::from_millis(200)).await, Ok(None), "no marker after a replay");

    // A position in a stream the node no longer has: a snapshot, then its end.
    let mut stale = server.client("u").await;
    stale.next().await;
    let since = json!({"lps": {"seq": 1, "epoch": "gone"}});
    stale.send_value(json!({"action":"subscribe","channels":["lps"],"since":since,"options":options})).await;
    let seen = start(&mut stale).await;
    assert_eq!(seen[0]["recovered"], false);
    assert_eq!(seen.last().unwrap()["seq"], 2);
}

#[tokio::test]
async fn without_the_option_the_start_is_as_it_always_was() {
    let server = TestServer::start().await;
    publish(&server, "lps", "A", 1).await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["lps"]}"#).await;
    assert_eq!(client.next().await["type"], "subscribed");
    assert_eq!(client.next().await["snapshot"], true);
    assert_eq!(client.try_next(Duration::from_millis(200)).await, Ok(None), "no marker unasked");
}

#[tokio::test]
async fn an_unknown_option_is_refused_not_ignored() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","id":5,"channels":["lps"],"options":{"maxRat":4}})).await;
    let error = client.expect_type("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_u64()), (Some("BAD_REQUEST"), Some(5)), "{error}");
    assert!(error["message"].as_str().unwrap_or_default().contains("maxRat"), "{error}");
}
