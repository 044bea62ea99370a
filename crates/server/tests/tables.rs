//! Keyed tables: a channel's latest values per key, with a lifecycle.
//!
//! - `snapshot-end`: a subscription that asks for it (`options.snapshotEnd`) is told
//!   when the snapshot after its `subscribed` is complete, also when the channel holds
//!   nothing; a client that does not ask sees what clients always saw.
//! - `op: "delete"` takes a key out of the table and `op: "clear"` empties it: both are
//!   publications (numbered, kept in history, replayed, delivered), and the snapshot a
//!   new subscriber gets no longer has what they removed.
//!
//! (The Redis engine's side is in `redis.rs`.)

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::{NewPublication, Op};

async fn publish(server: &TestServer, channel: &str, key: &str, n: u64) {
    let new = NewPublication {
        channel: channel.into(),
        kind: "row".into(),
        data: json!({ "n": n }),
        key: Some(key.into()),
        ..Default::default()
    };
    server.hub.publish(new).await.unwrap();
}

/// A delete of `key` (or, without one, a clear) on `channel`.
fn removal(channel: &str, key: Option<&str>) -> NewPublication {
    NewPublication {
        channel: channel.into(),
        kind: "row".into(),
        data: Value::Null,
        key: key.map(Into::into),
        op: if key.is_some() { Op::Delete } else { Op::Clear },
        ..Default::default()
    }
}

/// The keys of a fresh subscription's snapshot, in order.
async fn snapshot_keys(server: &TestServer, channel: &str) -> Vec<String> {
    let mut client = server.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","channels":[channel],"options":{"snapshotEnd":true}})).await;
    let seen = start(&mut client).await;
    seen.iter().filter(|m| m["snapshot"] == true).map(|m| m["key"].as_str().unwrap_or_default().to_owned()).collect()
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

#[tokio::test]
async fn a_deleted_key_leaves_the_table_and_subscribers_are_told() {
    let server = TestServer::start().await;
    for (key, n) in [("A", 1), ("B", 2)] {
        publish(&server, "lps", key, n).await;
    }
    let mut live = server.client("u").await;
    live.next().await;
    live.send(r#"{"action":"subscribe","channels":["lps"]}"#).await;
    live.expect_type("subscribed").await;
    live.next().await;
    live.next().await;
    let accepted = server.hub.publish(removal("lps", Some("A"))).await.unwrap();
    assert_eq!(accepted.seq, 3, "a delete is numbered like any publication");
    let delete = live.next().await;
    assert_eq!(
        (delete["op"].as_str(), delete["key"].as_str(), delete["seq"].as_u64()),
        (Some("delete"), Some("A"), Some(3))
    );
    assert_eq!(snapshot_keys(&server, "lps").await, ["B"], "a new subscriber's table has no A");
    // An upsert brings it back.
    publish(&server, "lps", "A", 4).await;
    assert_eq!(snapshot_keys(&server, "lps").await, ["B", "A"]);
}

#[tokio::test]
async fn a_clear_empties_the_table() {
    let server = TestServer::start().await;
    for (key, n) in [("A", 1), ("B", 2)] {
        publish(&server, "lps", key, n).await;
    }
    server.hub.publish(removal("lps", None)).await.unwrap();
    assert!(snapshot_keys(&server, "lps").await.is_empty());
    publish(&server, "lps", "C", 4).await;
    assert_eq!(snapshot_keys(&server, "lps").await, ["C"]);
}

#[tokio::test]
async fn deletes_are_replayed_in_order_to_a_recovering_subscriber() {
    let server = TestServer::start().await;
    publish(&server, "lps", "A", 1).await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["lps"]}"#).await;
    let epoch = client.expect_type("subscribed").await["epoch"].clone();
    client.next().await;
    client.close().await;
    server.hub.publish(removal("lps", Some("A"))).await.unwrap();
    publish(&server, "lps", "B", 3).await;
    let mut back = server.client("u").await;
    back.next().await;
    back.send_value(json!({"action":"subscribe","channels":["lps"],"since":{"lps":{"seq":1,"epoch":epoch}}})).await;
    assert_eq!(back.next().await["recovered"], true);
    let (first, second) = (back.next().await, back.next().await);
    assert_eq!((first["seq"].as_u64(), first["op"].as_str()), (Some(2), Some("delete")));
    assert_eq!((second["seq"].as_u64(), second["op"].as_str()), (Some(3), None), "an upsert carries no op");
}

#[tokio::test]
async fn a_deleted_key_frees_its_place_under_the_key_limit() {
    let server = TestServer::with(|c| c.max_keys_per_channel = 2).await;
    publish(&server, "lps", "A", 1).await;
    publish(&server, "lps", "B", 2).await;
    let third = NewPublication { key: Some("C".into()), ..removal("lps", Some("C")) };
    let upsert = NewPublication { op: Op::Upsert, data: json!({"n": 3}), ..third };
    assert_eq!(server.hub.publish(upsert.clone()).await.unwrap_err().code.as_str(), "TOO_MANY_KEYS");
    server.hub.publish(removal("lps", Some("A"))).await.unwrap();
    server.hub.publish(upsert).await.expect("A's place is free");
    assert_eq!(snapshot_keys(&server, "lps").await, ["B", "C"]);
}

#[tokio::test]
async fn a_delete_needs_a_key_and_a_clear_takes_none() {
    let server = TestServer::start().await;
    let no_key = NewPublication { op: Op::Delete, ..removal("lps", None) };
    let error = server.hub.publish(no_key).await.unwrap_err();
    assert_eq!(error.code.as_str(), "BAD_REQUEST", "{}", error.message);
    let keyed_clear = NewPublication { op: Op::Clear, ..removal("lps", Some("A")) };
    assert_eq!(server.hub.publish(keyed_clear).await.unwrap_err().code.as_str(), "BAD_REQUEST");
    // Over the wire, an op the protocol does not know is a bad command.
    let mut client = Client::connect(&server.url(&format!("token={}", publisher_token()))).await;
    client.next().await;
    let publish = json!({"action":"publish","id":1,"channel":"lps","type":"row","data":null,"key":"A","op":"drop"});
    client.send_value(publish).await;
    assert_eq!(client.expect_type("error").await["code"], "BAD_REQUEST");
}
