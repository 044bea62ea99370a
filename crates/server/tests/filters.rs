//! Server-side filters (`options.types`, `options.keys` on `subscribe`): the server sends
//! a filtered subscription only what its filter admits, live, in its snapshot and in its
//! replay; bad filters get documented errors; filters count against a per-connection
//! byte budget. (The Redis engine's side is in `redis.rs`.)

mod support;

use serde_json::{Value, json};
use support::*;
use tidewire_protocol::{NewPublication, Op};

async fn publish(server: &TestServer, kind: &str, key: Option<&str>) -> u64 {
    let new = NewPublication {
        channel: "desk".into(),
        kind: kind.into(),
        data: json!({}),
        key: key.map(Into::into),
        ..Default::default()
    };
    server.hub.publish(new).await.unwrap().seq
}

/// Subscribes to `desk` with `options` and returns the start (up to `snapshot-end`).
async fn subscribe(client: &mut Client, options: Value, since: Option<Value>) -> Vec<Value> {
    let mut options = options;
    options["snapshotEnd"] = json!(true);
    let mut command = json!({"action":"subscribe","channels":["desk"],"options":options});
    if let Some(since) = since {
        command["since"] = since;
    }
    client.send_value(command).await;
    let mut seen = Vec::new();
    loop {
        let message = client.next().await;
        let done = message["type"] == "snapshot-end" || message["recovered"] == true;
        seen.push(message);
        if done {
            return seen;
        }
    }
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter(|m| m["data"].is_object()).filter_map(|m| m["seq"].as_u64()).collect()
}

#[tokio::test]
async fn a_type_filter_passes_only_its_types_live_and_in_the_snapshot() {
    let server = TestServer::start().await;
    publish(&server, "lp", Some("A")).await; // 1
    publish(&server, "alert", Some("x")).await; // 2
    let mut client = server.client("u").await;
    client.next().await;
    let start = subscribe(&mut client, json!({"types": ["lp"]}), None).await;
    assert_eq!(seqs(&start), [1], "the snapshot holds only lp rows");
    publish(&server, "alert", None).await; // 3
    publish(&server, "lp", Some("B")).await; // 4
    let next = client.next().await;
    assert_eq!((next["seq"].as_u64(), next["type"].as_str()), (Some(4), Some("lp")), "3 was filtered");
}

#[tokio::test]
async fn a_key_filter_passes_its_keys_and_unkeyed_publications() {
    let server = TestServer::start().await;
    for key in ["A", "B", "C"] {
        publish(&server, "lp", Some(key)).await;
    }
    let mut client = server.client("u").await;
    client.next().await;
    let start = subscribe(&mut client, json!({"keys": ["C", "A"]}), None).await;
    let keys: Vec<&str> = start.iter().filter_map(|m| m["key"].as_str()).collect();
    assert_eq!(keys, ["A", "C"]);
    publish(&server, "lp", Some("B")).await; // 4: filtered
    let clear = NewPublication { channel: "desk".into(), kind: "lp".into(), op: Op::Clear, ..Default::default() };
    server.hub.publish(clear).await.unwrap(); // 5: unkeyed, passes
    let next = client.next().await;
    assert_eq!((next["seq"].as_u64(), next["op"].as_str()), (Some(5), Some("clear")));
}

#[tokio::test]
async fn a_replay_is_filtered_too() {
    let server = TestServer::start().await;
    publish(&server, "lp", Some("A")).await; // 1
    let mut first = server.client("u").await;
    first.next().await;
    let start = subscribe(&mut first, json!({"types": ["lp"]}), None).await;
    let epoch = start[0]["epoch"].clone();
    first.close().await;
    publish(&server, "alert", None).await; // 2
    publish(&server, "lp", Some("A")).await; // 3
    let mut back = server.client("u").await;
    back.next().await;
    let since = json!({"desk": {"seq": 1, "epoch": epoch}});
    let start = subscribe(&mut back, json!({"types": ["lp"]}), Some(since)).await;
    assert_eq!(start[0]["recovered"], true);
    assert_eq!(back.next().await["seq"], 3, "the alert was not replayed");
}

#[tokio::test]
async fn bad_filters_are_refused_with_their_reason() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    let many: Vec<String> = (0..=tidewire_protocol::filter::MAX_FILTER_KEYS).map(|i| format!("k{i}")).collect();
    for (options, needle) in [
        (json!({"types": []}), "at least one"),
        (json!({"types": ["gap"]}), "reserved"),
        (json!({"keys": many}), "at most"),
        (json!({"keys": [""]}), "1..=255"),
    ] {
        client.send_value(json!({"action":"subscribe","id":9,"channels":["desk"],"options":options})).await;
        let error = client.expect_type("error").await;
        assert_eq!(error["code"], "BAD_REQUEST", "{error}");
        assert!(error["message"].as_str().unwrap_or_default().contains(needle), "{error}");
    }
    // Nothing was subscribed by the refused commands.
    publish(&server, "lp", Some("A")).await;
    assert_eq!(client.try_next(std::time::Duration::from_millis(200)).await, Ok(None));
}

#[tokio::test]
async fn filters_count_against_the_connection_budget() {
    let server = TestServer::with(|c| c.max_filter_bytes = 1500).await;
    let mut client = server.client("u").await;
    client.next().await;
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i:04}")).collect(); // 960 bytes held (24 a key)
    client.send_value(json!({"action":"subscribe","channels":["a","b"],"options":{"keys":keys}})).await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let m = client.next().await;
        if m["type"] == "subscribed" || m["type"] == "error" {
            answers.push(m);
        }
    }
    assert_eq!(answers[0]["type"], "subscribed", "{answers:?}");
    assert_eq!((answers[1]["code"].as_str(), answers[1]["channel"].as_str()), (Some("TOO_MANY_KEYS"), Some("b")));
    // Leaving a channel gives its filter's bytes back.
    client.send(r#"{"action":"unsubscribe","channels":["a"]}"#).await;
    client.expect_type("unsubscribed").await;
    client.send_value(json!({"action":"subscribe","channels":["b"],"options":{"keys":keys}})).await;
    assert_eq!(client.expect_type("subscribed").await["channel"], "b");
}

#[tokio::test]
async fn a_filtered_subscribe_costs_a_command_per_channel() {
    // A filtered start scans what it does not send, so nothing fills the client's queue
    // to stop a loop of them: the rate limit pays for it instead.
    let server = TestServer::with(|c| {
        c.commands_per_second = 5;
        c.command_burst = 10;
    })
    .await;
    let mut client = server.client("u").await;
    client.next().await;
    let channels: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    client.send_value(json!({"action":"subscribe","id":1,"channels":channels,"options":{"types":["lp"]}})).await;
    let error = client.expect_type("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_u64()), (Some("RATE_LIMIT_EXCEEDED"), Some(1)), "{error}");
    // Unfiltered, the same command is one command.
    client.send_value(json!({"action":"subscribe","id":2,"channels":channels})).await;
    assert_eq!(client.expect_type("subscribed").await["id"], 2);
}
