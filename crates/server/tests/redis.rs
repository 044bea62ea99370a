//! The Redis engine against a real redis-server.
//!
//! Tests that only read and write use the shared server on 127.0.0.1:6379 (or
//! `TIDEWIRE_TEST_REDIS_URL`) with a unique key prefix each; tests that stop, restart or
//! flush Redis start their own `redis-server` on a free port.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn shared_redis() -> String {
    let url = std::env::var("TIDEWIRE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url.as_str()).expect("a valid Redis URL");
    let reachable = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok();
    assert!(
        reachable,
        "Redis is not reachable at {url}: start one (`redis-server --port 6379 --save '' --appendonly no`) \
         or point TIDEWIRE_TEST_REDIS_URL at one"
    );
    url
}

fn unique_prefix(test: &str) -> String {
    format!("tw-test-{test}-{:08x}", fastrand::u32(..))
}

async fn node(url: &str, prefix: &str) -> TestServer {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    let server = TestServer::with(move |c| {
        c.redis_url = Some(url);
        c.redis_prefix = prefix;
        c.drain_window = Duration::from_millis(100);
    })
    .await;
    wait_ready(&server).await;
    server
}

async fn wait_ready(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.hub.is_ready() {
        assert!(Instant::now() < deadline, "node never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscriber(server: &TestServer, channels: &str) -> Client {
    let mut client = Client::connect(&server.url(&format!("token={}&channels={channels}", token("u")))).await;
    assert_eq!(client.next().await["type"], "connected");
    for _ in channels.split(',') {
        client.expect_type("subscribed").await;
    }
    client
}

async fn publish(server: &TestServer, channel: &str, n: u64, key: Option<&str>) -> u64 {
    server
        .hub
        .publish(tidewire_protocol::NewPublication {
            channel: channel.into(),
            kind: "tick".into(),
            data: json!(n),
            key: key.map(Into::into),
            ..Default::default()
        })
        .await
        .expect("publish")
        .seq
}

async fn seqs(client: &mut Client, count: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = client.next().await;
        if let Some(seq) = message["seq"].as_u64().filter(|_| message["type"] == "tick") {
            seen.push(seq);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_act_as_one() {
    let url = shared_redis();
    let prefix = unique_prefix("three");
    let nodes = [node(&url, &prefix).await, node(&url, &prefix).await, node(&url, &prefix).await];
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(subscriber(n, "ticks").await);
    }
    // Publications accepted by every node, interleaved: one global order.
    for i in 0..300u64 {
        let seq = publish(&nodes[(i % 3) as usize], "ticks", i, None).await;
        assert_eq!(seq, i + 1);
    }
    for client in &mut clients {
        assert_eq!(
            seqs(client, 300).await,
            (1..=300).collect::<Vec<_>>(),
            "every node delivers everything once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_recovery_across_nodes() {
    let url = shared_redis();
    let prefix = unique_prefix("recover");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    for (i, lp) in ["OANDA", "LMAX", "OANDA"].iter().enumerate() {
        publish(&a, "lp", i as u64, Some(lp)).await;
    }
    // Fresh on another node: the latest value per key, oldest first.
    let mut fresh = Client::connect(&b.url(&format!("token={}", token("u")))).await;
    fresh.next().await;
    fresh.send(r#"{"action":"subscribe","channels":["lp"]}"#).await;
    let subscribed = fresh.expect_type("subscribed").await;
    assert_eq!(subscribed["seq"], 3);
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    let snapshot = [fresh.next().await, fresh.next().await];
    assert_eq!(
        snapshot.iter().map(|m| (m["key"].clone(), m["seq"].clone(), m["snapshot"].clone())).collect::<Vec<_>>(),
        vec![(json!("LMAX"), json!(2), json!(true)), (json!("OANDA"), json!(3), json!(true)),]
    );
    // Recovery from seq 1 in that epoch, on the first node.
    let mut again = Client::connect(&a.url(&format!("token={}", token("u")))).await;
    again.next().await;
    again.send_value(json!({"action":"subscribe","channels":["lp"],"since":{"lp":{"seq":1,"epoch":epoch}}})).await;
    assert_eq!(again.expect_type("subscribed").await["recovered"], true);
    assert_eq!(seqs(&mut again, 2).await, vec![2, 3]);
    publish(&b, "lp", 9, Some("CITI")).await;
    assert_eq!(seqs(&mut again, 1).await, vec![4]);
    assert_eq!(seqs(&mut fresh, 1).await, vec![4]);
    // Another epoch: not recoverable.
    let mut stale = Client::connect(&b.url(&format!("token={}", token("u")))).await;
    stale.next().await;
    stale.send(r#"{"action":"subscribe","channels":["lp"],"since":{"lp":{"seq":1,"epoch":"elsewhere"}}}"#).await;
    assert_eq!(stale.expect_type("subscribed").await["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listens_to_a_channel_only_while_it_has_subscribers() {
    let url = shared_redis();
    let prefix = unique_prefix("numsub");
    let a = node(&url, &prefix).await;
    let pubsub_channel = format!("{prefix}:pub:ticks");
    let numsub = || {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let (_, n): (String, u64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&pubsub_channel).query::<Vec<(String, u64)>>(&mut c).unwrap()[0]
                .clone();
        n
    };
    assert_eq!(numsub(), 0);
    publish(&a, "ticks", 1, None).await;
    assert_eq!(numsub(), 0, "publishing alone does not subscribe");
    let mut client = subscriber(&a, "ticks").await;
    assert_eq!(numsub(), 1);
    client.send(r#"{"action":"unsubscribe","channels":["ticks"]}"#).await;
    client.expect_type("unsubscribed").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub() != 0 {
        assert!(Instant::now() < deadline, "still subscribed after the last subscriber left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A redis-server of the test's own, on a free port, without persistence.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = OwnRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run this test (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "own redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn flushall(&self) {
        let mut c = redis::Client::open(self.url()).unwrap().get_connection().unwrap();
        redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_and_clients_stay_then_everything_resumes() {
    let mut redis = OwnRedis::start();
    let a = node(&redis.url(), "tw").await;
    let mut client = subscriber(&a, "ticks").await;
    for n in 1..=3 {
        publish(&a, "ticks", n, None).await;
    }
    assert_eq!(seqs(&mut client, 3).await, vec![1, 2, 3]);

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.hub.is_ready() {
        assert!(Instant::now() < deadline, "readiness did not notice Redis going away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = http_request(&a, "GET", "/ready", None, None).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("unavailable")));
    let (status, body) =
        post_publish(&a, Some(&publisher_token()), r#"{"channel":"ticks","type":"tick","data":4}"#).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("UNAVAILABLE")), "never silently accepted");
    client.send(r#"{"action":"ping","id":1}"#).await;
    assert_eq!(client.expect_type("pong").await["id"], 1, "local connections stay up");

    // Redis comes back empty: the node reconnects, and the client is told its stream is gone.
    redis.restart();
    wait_ready(&a).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = loop {
        match a
            .hub
            .publish(tidewire_protocol::NewPublication {
                channel: "ticks".into(),
                kind: "tick".into(),
                data: json!(5),
                ..Default::default()
            })
            .await
        {
            Ok(accepted) => break accepted.seq,
            Err(e) => {
                assert!(Instant::now() < deadline, "publishing did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(seq, 1, "a fresh Redis starts a fresh stream");
    let resubscribed = client.expect_type("subscribed").await;
    assert_eq!(resubscribed["recovered"], false);
    assert_eq!(resubscribed["seq"], 0);
    assert_eq!(seqs(&mut client, 1).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_changes_the_epoch() {
    let redis = OwnRedis::start();
    let a = node(&redis.url(), "tw").await;
    let mut client = subscriber(&a, "ticks").await;
    for n in 1..=3 {
        publish(&a, "ticks", n, None).await;
    }
    assert_eq!(seqs(&mut client, 3).await, vec![1, 2, 3]);
    let mut probe = Client::connect(&a.url(&format!("token={}", token("u")))).await;
    probe.next().await;
    probe.send(r#"{"action":"subscribe","channels":["ticks"]}"#).await;
    let old_epoch = probe.expect_type("subscribed").await["epoch"].as_str().unwrap().to_owned();

    redis.flushall();
    publish(&a, "ticks", 4, None).await;
    let notice = client.expect_type("subscribed").await;
    assert_eq!(notice["recovered"], false);
    assert_ne!(notice["epoch"].as_str().unwrap(), old_epoch);
    assert_eq!(seqs(&mut client, 1).await, vec![1]);

    let mut late = Client::connect(&a.url(&format!("token={}", token("u")))).await;
    late.next().await;
    late.send_value(json!({"action":"subscribe","channels":["ticks"],"since":{"ticks":{"seq":3,"epoch":old_epoch}}}))
        .await;
    let answer: Value = late.expect_type("subscribed").await;
    assert_eq!(answer["recovered"], false, "a client never recovers from the wrong stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pubsub_link_is_filled_from_the_stream() {
    let redis = OwnRedis::start();
    let a = node(&redis.url(), "tw").await;
    let mut client = subscriber(&a, "ticks").await;
    publish(&a, "ticks", 1, None).await;
    assert_eq!(seqs(&mut client, 1).await, vec![1]);
    // Cut the node's pub/sub connection (Redis keeps its data), publish meanwhile.
    let mut admin = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let killed: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut admin).unwrap();
    assert_eq!(killed, 1);
    for n in 2..=20 {
        publish(&a, "ticks", n, None).await;
    }
    // Every seq arrives once, in order: live or replayed from the stream after the resync.
    assert_eq!(seqs(&mut client, 19).await, (2..=20).collect::<Vec<_>>());
    publish(&a, "ticks", 21, None).await;
    assert_eq!(seqs(&mut client, 1).await, vec![21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_lost_while_pubsub_was_down_is_announced_with_its_new_snapshot() {
    // Redis loses the channel while the node's pub/sub link is down, and the stream
    // starts again with two rows. When the node catches up it announces `recovered:
    // false`, then sends each subscriber the new stream's snapshot and `snapshot-end`,
    // so its table is whole again without asking.
    let redis = OwnRedis::start();
    let a = node(&redis.url(), "tw").await;
    let mut client = Client::connect(&a.url(&format!("token={}", token("u")))).await;
    client.next().await;
    let options = json!({"snapshotEnd": true, "deltas": true});
    client.send_value(json!({"action":"subscribe","channels":["book"],"options":options})).await;
    client.expect_type("subscribed").await;
    assert_eq!(client.expect_type("snapshot-end").await["seq"], 0);
    publish(&a, "book", 1, Some("old")).await;
    // The first publication creates the channel's epoch (announced), then arrives.
    assert_eq!(client.expect_type("subscribed").await["recovered"], true);
    assert_eq!(client.next().await["key"], "old");

    let mut admin = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let killed: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut admin).unwrap();
    assert_eq!(killed, 1);
    redis.flushall();
    publish(&a, "book", 2, Some("A")).await; // 1 of the new stream
    publish(&a, "book", 3, Some("B")).await; // 2
    let notice = client.expect_type("subscribed").await;
    assert_eq!((notice["recovered"].as_bool(), notice["deltas"].as_bool()), (Some(false), Some(true)));
    let mut snapshot = Vec::new();
    loop {
        let message = client.next().await;
        if message["type"] == "snapshot-end" {
            assert_eq!(message["seq"], notice["seq"]);
            break;
        }
        assert_eq!(message["snapshot"], true, "{message}");
        snapshot.push(message["key"].as_str().unwrap().to_owned());
    }
    let head = notice["seq"].as_u64().unwrap();
    // Pub/sub comes back after a 100 ms backoff, normally after both publications: then
    // the snapshot holds both rows (else the rows after the head follow live).
    assert_eq!(snapshot.len() as u64, head, "the snapshot holds the new stream up to the head: {snapshot:?}");
    // What the snapshot did not cover follows live.
    let mut rows = snapshot.clone();
    while rows.len() < 2 {
        let message = client.next().await;
        assert!(message["seq"].as_u64().unwrap() > head);
        rows.push(message["key"].as_str().unwrap().to_owned());
    }
    rows.sort();
    assert_eq!(rows, ["A", "B"], "the old row is gone, the new stream's rows are there");
}

/// The keys under `prefix`, each with its time to live in ms (-1: none).
/// (The nodes' own announcements, `{prefix}:node:…` and `{prefix}:nodes`, are left out: they are the nodes',
/// renewed every few seconds while a node lives, not anything a client caused.)
fn keys_with_ttl(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut conn).unwrap();
    let (node, nodes) = (format!("{prefix}:node:"), format!("{prefix}:nodes"));
    keys.into_iter()
        .filter(|key| !key.starts_with(&node) && *key != nodes)
        .map(|key| {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
            (key, ttl)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_leaves_nothing_in_redis() {
    let url = shared_redis();
    let prefix = unique_prefix("readonly");
    let server = node(&url, &prefix).await;
    let mut client = server.client("mallory").await;
    client.next().await;
    for round in 0..5 {
        let names: Vec<String> = (0..100).map(|i| format!("nobody-publishes-{round}-{i}")).collect();
        client.send_value(json!({"action":"subscribe","channels":names})).await;
        for _ in 0..100 {
            client.expect_type("subscribed").await;
        }
        client.send_value(json!({"action":"unsubscribe","channels":names})).await;
        for _ in 0..100 {
            client.expect_type("unsubscribed").await;
        }
    }
    assert_eq!(keys_with_ttl(&url, &prefix), Vec::<(String, i64)>::new(), "subscribing wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires_and_an_expired_channel_starts_a_new_epoch() {
    let url = shared_redis();
    let prefix = unique_prefix("ttl");
    let (url2, prefix2) = (url.clone(), prefix.clone());
    let server = TestServer::with(move |c| {
        c.redis_url = Some(url2);
        c.redis_prefix = prefix2;
        c.history_ttl = Duration::from_millis(500);
        c.channel_ttl = Duration::from_millis(1500);
    })
    .await;
    wait_ready(&server).await;
    let mut client = subscriber(&server, "book").await;
    publish(&server, "book", 1, Some("EURUSD")).await;
    publish(&server, "book", 2, None).await;
    assert_eq!(seqs(&mut client, 2).await, vec![1, 2]);
    let keys = keys_with_ttl(&url, &prefix);
    assert_eq!(keys.len(), 5, "seq, epoch, latest, lbytes, hist: {keys:?}");
    for (key, ttl) in &keys {
        assert!(*ttl > 0 && *ttl <= 1500, "{key} expires ({ttl} ms)");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !keys_with_ttl(&url, &prefix).is_empty() {
        assert!(Instant::now() < deadline, "keys outlived the channel TTL: {:?}", keys_with_ttl(&url, &prefix));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The channel starts again: seq 1 in a new epoch, announced as a loss to those who
    // held a position in the old one.
    assert_eq!(publish(&server, "book", 3, None).await, 1);
    let renewed = client.expect_type("subscribed").await;
    assert_eq!((renewed["recovered"].as_bool(), renewed["seq"].as_u64()), (Some(false), Some(0)));
    assert_eq!(seqs(&mut client, 1).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_created_under_its_subscribers_continues_without_loss() {
    let url = shared_redis();
    let prefix = unique_prefix("create");
    let server = node(&url, &prefix).await;
    let mut client = Client::connect(&server.url(&format!("token={}", token("u")))).await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["fresh"]}"#).await;
    let subscribed = client.expect_type("subscribed").await;
    assert_eq!(
        (subscribed["seq"].as_u64(), subscribed["epoch"].as_str()),
        (Some(0), Some("")),
        "no state yet: the empty epoch"
    );
    for n in 1..=3 {
        publish(&server, "fresh", n, None).await;
    }
    let created = client.next().await;
    assert_eq!(
        (created["type"].as_str(), created["recovered"].as_bool(), created["seq"].as_u64()),
        (Some("subscribed"), Some(true), Some(0))
    );
    let epoch = created["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());
    assert_eq!(seqs(&mut client, 3).await, vec![1, 2, 3]);
    // The position in the new epoch recovers; the empty epoch's no longer does (the
    // channel may have lived and died meanwhile), honestly.
    let mut again = Client::connect(&server.url(&format!("token={}", token("u")))).await;
    again.next().await;
    again
        .send_value(json!({"action":"subscribe","channels":["fresh"],"since":{"fresh":{"seq":1,"epoch":epoch}}}))
        .await;
    assert_eq!(again.expect_type("subscribed").await["recovered"], true);
    assert_eq!(seqs(&mut again, 2).await, vec![2, 3]);
    let mut stale = Client::connect(&server.url(&format!("token={}", token("u")))).await;
    stale.next().await;
    stale.send(r#"{"action":"subscribe","channels":["fresh"],"since":{"fresh":{"seq":0,"epoch":""}}}"#).await;
    assert_eq!(stale.expect_type("subscribed").await["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_per_channel_are_capped_in_redis() {
    let url = shared_redis();
    let prefix = unique_prefix("keys");
    let (url2, prefix2) = (url.clone(), prefix.clone());
    let server = TestServer::with(move |c| {
        c.redis_url = Some(url2);
        c.redis_prefix = prefix2;
        c.max_keys_per_channel = 3;
        c.max_queued_bytes = 4096;
    })
    .await;
    wait_ready(&server).await;
    let keyed = |key: &str, data: Value| tidewire_protocol::NewPublication {
        channel: "lp".into(),
        kind: "lp".into(),
        data,
        key: Some(key.into()),
        ..Default::default()
    };
    for key in ["a", "b", "c"] {
        server.hub.publish(keyed(key, json!(1))).await.unwrap();
    }
    let refused = server.hub.publish(keyed("d", json!(1))).await.unwrap_err();
    assert_eq!(refused.code, tidewire_protocol::ErrorCode::TooManyKeys, "{refused}");
    server.hub.publish(keyed("a", json!(2))).await.expect("a known key may change");
    // Latest values over half of --max-queued-bytes.
    let refused = server.hub.publish(keyed("b", json!("x".repeat(2100)))).await.unwrap_err();
    assert_eq!(refused.code, tidewire_protocol::ErrorCode::TooManyKeys, "{refused}");
    assert!(refused.message.contains("bytes"));
    let (status, body) =
        post_publish(&server, Some(&publisher_token()), r#"{"channel":"lp","type":"lp","data":1,"key":"e"}"#).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("TOO_MANY_KEYS")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_hold_across_nodes_and_expire() {
    let url = shared_redis();
    let prefix = unique_prefix("idem");
    let (url2, prefix2) = (url.clone(), prefix.clone());
    let config = move |c: &mut tidewire_server::Config| {
        c.redis_url = Some(url2.clone());
        c.redis_prefix = prefix2.clone();
        c.idempotency_window = Duration::from_millis(800);
        c.idempotency_keys_per_channel = 2;
    };
    let a = TestServer::with(config.clone()).await;
    let b = TestServer::with(config).await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let once = |key: &str| tidewire_protocol::NewPublication {
        channel: "orders".into(),
        kind: "order".into(),
        data: json!(1),
        key: None,
        idempotency_key: Some(key.into()),
        ..Default::default()
    };
    let first = a.hub.publish(once("k1")).await.unwrap();
    let again = b.hub.publish(once("k1")).await.unwrap();
    assert_eq!(
        (first.seq, first.duplicate, again.seq, again.duplicate),
        (1, false, 1, true),
        "one publication, on any node"
    );
    // At most two keys per channel: a third forgets the oldest.
    b.hub.publish(once("k2")).await.unwrap();
    b.hub.publish(once("k3")).await.unwrap();
    assert!(!a.hub.publish(once("k1")).await.unwrap().duplicate, "k1 was forgotten early");
    // And after the window, every key is gone, from Redis too.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!a.hub.publish(once("k3")).await.unwrap().duplicate);
    let keys = keys_with_ttl(&url, &prefix);
    for (key, ttl) in keys.iter().filter(|(k, _)| k.ends_with(":idem") || k.ends_with(":idemt")) {
        assert!(*ttl > 0 && *ttl <= 800, "{key}: {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_start_at_a_time_per_connection_and_channel() {
    // Each start reads the snapshot from Redis: a client that asks again before the
    // answer must not queue that work faster than it is done.
    let url = shared_redis();
    let prefix = unique_prefix("starts");
    let server = node(&url, &prefix).await;
    for key in 0..800 {
        let new = tidewire_protocol::NewPublication {
            channel: "book".into(),
            kind: "row".into(),
            data: json!({"pad": "x".repeat(300)}),
            key: Some(format!("k{key}")),
            ..Default::default()
        };
        server.hub.publish(new).await.unwrap();
    }
    let mut client = server.client("u").await;
    client.next().await;
    for id in 0..40 {
        client.send_value(json!({"action":"subscribe","id":id,"channels":["book"]})).await;
    }
    let (mut started, mut refused) = (0, 0);
    while started + refused < 40 {
        let m = client.next().await;
        match m["type"].as_str() {
            Some("subscribed") => started += 1,
            Some("error") => {
                assert_eq!(
                    (m["code"].as_str(), m["channel"].as_str()),
                    (Some("RATE_LIMIT_EXCEEDED"), Some("book")),
                    "{m}"
                );
                refused += 1;
            }
            _ => {}
        }
    }
    assert!(refused > 0, "40 starts at once were all queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_end_with_a_marker_on_every_node() {
    // The marker comes from the channel's actor, after the snapshot it read from Redis,
    // on a node that did not publish, and at once for a channel Redis holds nothing of.
    let url = shared_redis();
    let prefix = unique_prefix("snapshot-end");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    for (key, n) in [("A", 1), ("B", 2), ("A", 3)] {
        let new = tidewire_protocol::NewPublication {
            channel: "lps".into(),
            kind: "row".into(),
            data: json!({ "n": n }),
            key: Some(key.into()),
            ..Default::default()
        };
        a.hub.publish(new).await.unwrap();
    }
    let mut client = b.client("u").await;
    client.next().await;
    let options = json!({"snapshotEnd": true});
    client.send_value(json!({"action":"subscribe","channels":["lps","void"],"options":options})).await;
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    while seen.iter().filter(|(kind, ..)| kind == "snapshot-end").count() < 2 {
        let m = client.next().await;
        let (kind, channel) = (m["type"].as_str().unwrap_or_default(), m["channel"].as_str().unwrap_or_default());
        seen.push((kind.to_owned(), channel.to_owned(), m["seq"].as_u64().unwrap_or(0)));
    }
    let lps: Vec<(&str, u64)> =
        seen.iter().filter(|(_, c, _)| c == "lps").map(|(k, _, seq)| (k.as_str(), *seq)).collect();
    assert_eq!(lps, [("subscribed", 3), ("row", 2), ("row", 3), ("snapshot-end", 3)]);
    let void: Vec<(&str, u64)> =
        seen.iter().filter(|(_, c, _)| c == "void").map(|(k, _, seq)| (k.as_str(), *seq)).collect();
    assert_eq!(void, [("subscribed", 0), ("snapshot-end", 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_clears_change_the_table_in_redis() {
    // In the publish script: a delete takes its key (and its bytes) out of the latest
    // values, a clear empties them, and both reach every node's subscribers in order.
    let url = shared_redis();
    let prefix = unique_prefix("tables");
    let node_a = TestServer::with({
        let (url, prefix) = (url.clone(), prefix.clone());
        move |c| {
            c.redis_url = Some(url);
            c.redis_prefix = prefix;
            c.max_keys_per_channel = 2;
        }
    })
    .await;
    wait_ready(&node_a).await;
    let b = node(&url, &prefix).await;
    let row = |key: &str, op: tidewire_protocol::Op| tidewire_protocol::NewPublication {
        channel: "lps".into(),
        kind: "row".into(),
        data: json!({ "key": key }),
        key: (op != tidewire_protocol::Op::Clear).then(|| key.to_owned()),
        op,
        ..Default::default()
    };
    use tidewire_protocol::Op::{Clear, Delete, Upsert};
    let mut watcher = subscriber(&b, "lps").await;
    for (key, op) in [("A", Upsert), ("B", Upsert)] {
        node_a.hub.publish(row(key, op)).await.unwrap();
    }
    let refused = node_a.hub.publish(row("C", Upsert)).await.unwrap_err();
    assert_eq!(refused.code.as_str(), "TOO_MANY_KEYS");
    node_a.hub.publish(row("A", Delete)).await.unwrap();
    node_a.hub.publish(row("C", Upsert)).await.expect("the delete freed A's place");
    let keys = |server: &TestServer| {
        let server_url = server.url(&format!("token={}", token("u")));
        async move {
            let mut client = Client::connect(&server_url).await;
            client.next().await;
            client.send_value(json!({"action":"subscribe","channels":["lps"],"options":{"snapshotEnd":true}})).await;
            let mut keys = Vec::new();
            loop {
                let m = client.next().await;
                if m["type"] == "snapshot-end" {
                    return keys;
                }
                if m["snapshot"] == true {
                    keys.push(m["key"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    };
    assert_eq!(keys(&b).await, ["B", "C"]);
    node_a.hub.publish(row("", Clear)).await.unwrap();
    assert!(keys(&b).await.is_empty(), "cleared");
    // The live subscriber on the other node saw every change, in order.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let m = watcher.next().await;
        if m["channel"] == "lps" && m["seq"].is_u64() && m["type"] == "row" {
            seen.push((m["seq"].as_u64().unwrap(), m["op"].as_str().unwrap_or("upsert").to_owned()));
        }
    }
    let ops: Vec<&str> = seen.iter().map(|(_, op)| op.as_str()).collect();
    assert_eq!(ops, ["upsert", "upsert", "delete", "upsert", "clear"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_to_the_snapshot_the_replay_and_live_fan_out_on_another_node() {
    // The channel's actor filters what Redis gives it: the snapshot's latest values, a
    // replay's texts (which carry no key but their own) and live pub/sub deliveries.
    let url = shared_redis();
    let prefix = unique_prefix("filters");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let row = |kind: &str, key: &str| tidewire_protocol::NewPublication {
        channel: "desk".into(),
        kind: kind.into(),
        data: json!({}),
        key: Some(key.into()),
        ..Default::default()
    };
    for (kind, key) in [("lp", "A"), ("lp", "B"), ("alert", "C")] {
        a.hub.publish(row(kind, key)).await.unwrap();
    }
    let mut client = b.client("u").await;
    client.next().await;
    let options = json!({"snapshotEnd": true, "types": ["lp"], "keys": ["A"]});
    client.send_value(json!({"action":"subscribe","channels":["desk"],"options":options})).await;
    let subscribed = client.expect_type("subscribed").await;
    let first = client.next().await;
    assert_eq!((first["seq"].as_u64(), first["snapshot"].as_bool()), (Some(1), Some(true)), "only lp A: {first}");
    assert_eq!(client.next().await["type"], "snapshot-end");
    for (kind, key) in [("lp", "B"), ("alert", "A"), ("lp", "A")] {
        a.hub.publish(row(kind, key)).await.unwrap(); // 4, 5, 6
    }
    assert_eq!(client.next().await["seq"], 6, "4 and 5 filtered out");
    // A replay from seq 1 holds only what the filter admits (6), not 2..5.
    let mut back = b.client("u").await;
    back.next().await;
    let since = json!({"desk": {"seq": 1, "epoch": subscribed["epoch"]}});
    back.send_value(json!({"action":"subscribe","channels":["desk"],"since":since,"options":options})).await;
    assert_eq!(back.expect_type("subscribed").await["recovered"], true);
    assert_eq!(back.next().await["seq"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_subscription_on_another_node_gets_each_keys_newest_value() {
    // The channel's actor resamples what pub/sub brings; a throttled replay from Redis
    // holds each key's latest value and every unkeyed publication.
    let url = shared_redis();
    let prefix = unique_prefix("throttle");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let row = |key: Option<&str>| tidewire_protocol::NewPublication {
        channel: "desk".into(),
        kind: "lp".into(),
        data: json!({}),
        key: key.map(Into::into),
        ..Default::default()
    };
    let mut client = b.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","channels":["desk"],"options":{"minInterval": 1000}})).await;
    let subscribed = client.expect_type("subscribed").await;
    assert_eq!(subscribed["minInterval"], 1000);
    for key in [Some("A"), Some("A"), Some("B"), None, Some("A")] {
        a.hub.publish(row(key)).await.unwrap(); // 1..=5
    }
    let (mut received, mut epoch) = (Vec::new(), subscribed["epoch"].clone());
    while received.len() < 4 {
        let message = client.next().await;
        if message["type"] == "subscribed" {
            // The first publication created the channel: re-announced with its epoch.
            assert_eq!((message["recovered"].as_bool(), message["minInterval"].as_u64()), (Some(true), Some(1000)));
            epoch = message["epoch"].clone();
        }
        if let Some(seq) = message["seq"].as_u64().filter(|_| message["type"] == "lp") {
            received.push(seq);
        }
    }
    assert_eq!(received, [1, 3, 4, 5], "1 at once; 2 replaced by 5 within the interval");
    let mut back = b.client("u").await;
    back.next().await;
    let since = json!({"desk": {"seq": 0, "epoch": epoch}});
    let options = json!({"minInterval": 1000});
    back.send_value(json!({"action":"subscribe","channels":["desk"],"since":since,"options":options})).await;
    assert_eq!(back.expect_type("subscribed").await["recovered"], true);
    let replay: Vec<u64> =
        [back.next().await, back.next().await, back.next().await].iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(replay, [3, 4, 5], "B's value, the unkeyed one and A's latest");
}

#[tokio::test]
async fn deltas_on_another_node_apply_to_the_snapshot_and_to_what_followed() {
    // The channel's actor keeps each key's last value (seeded from the snapshot of the
    // subscription that started it) and diffs what pub/sub brings; a throttled member
    // on the same node gets deltas against its own stream's outputs.
    let url = shared_redis();
    let prefix = unique_prefix("deltas");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let row = |key: &str, fill: u64| tidewire_protocol::NewPublication {
        channel: "desk".into(),
        kind: "lp".into(),
        data: json!({"lp": key, "venue": "London", "fill": fill, "spreadBps": 125}),
        key: Some(key.into()),
        ..Default::default()
    };
    a.hub.publish(row("A", 1)).await.unwrap(); // 1: in the snapshot
    let mut client = b.client("u").await;
    client.next().await;
    client.send_value(json!({"action":"subscribe","channels":["desk"],"options":{"deltas": true}})).await;
    assert_eq!(client.expect_type("subscribed").await["deltas"], true);
    assert_eq!(client.next().await["seq"], 1, "the snapshot");
    let mut throttled = b.client("u").await;
    throttled.next().await;
    let options = json!({"deltas": true, "minInterval": 100});
    throttled.send_value(json!({"action":"subscribe","channels":["desk"],"options":options})).await;
    assert_eq!(throttled.expect_type("subscribed").await["deltas"], true);
    throttled.next().await; // its snapshot
    for fill in 2..=4 {
        a.hub.publish(row("A", fill)).await.unwrap(); // 2..=4
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let message = client.next().await;
        if message["type"] == "lp" {
            got.push((message["seq"].as_u64(), message["base"].as_u64(), message["data"].clone()));
        }
    }
    assert_eq!(
        got,
        [
            (Some(2), Some(1), json!({"fill": 2})),
            (Some(3), Some(2), json!({"fill": 3})),
            (Some(4), Some(3), json!({"fill": 4}))
        ]
    );
    let mut resampled = Vec::new();
    while resampled.len() < 3 {
        let message = throttled.next().await;
        if message["type"] == "lp" {
            resampled.push((message["seq"].as_u64(), message["base"].as_u64()));
        }
    }
    assert_eq!(resampled, [(Some(2), None), (Some(3), Some(2)), (Some(4), Some(3))], "whole first after its start");
}

#[tokio::test]
async fn operator_orders_reach_the_users_connections_on_every_node() {
    // An order given to one node reaches the user's connections on the others through
    // Redis, within a second; the node that gave it counts its own.
    let url = shared_redis();
    let prefix = unique_prefix("operator");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let user = format!("trader-{}", fastrand::u32(..));
    let mut on_a = a.client(&user).await;
    on_a.expect_type("connected").await;
    let mut on_b = b.client(&user).await;
    on_b.expect_type("connected").await;
    on_b.send(r#"{"action":"subscribe","channels":["exposure"]}"#).await;
    on_b.expect_type("subscribed").await;

    let order = |path: &'static str, body: Value| {
        let a = &a;
        async move { http_request(a, "POST", path, Some(&operator_token()), Some(&body.to_string())).await }
    };
    let started = Instant::now();
    let body = json!({"user": user, "channel": "exposure", "reason": "book closed"});
    assert_eq!(order("/api/unsubscribe", body).await, (200, json!({"connections": 1})), "a's connection, not in it");
    let unsubscribed = on_b.expect_type("unsubscribed").await;
    assert_eq!(
        (unsubscribed["code"].as_str(), unsubscribed["message"].as_str()),
        (Some("FORBIDDEN"), Some("book closed"))
    );
    assert!(started.elapsed() < Duration::from_secs(1), "reached the other node in {:?}", started.elapsed());

    let started = Instant::now();
    let body = json!({"user": user, "reconnect": false, "reason": "access ended"});
    assert_eq!(order("/api/disconnect", body).await, (200, json!({"connections": 1})));
    for client in [&mut on_a, &mut on_b] {
        let closed = client.closed().await;
        assert_eq!((closed.code, closed.reason.as_str()), (4504, "REVOKED: access ended"));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "closed on both nodes in {:?}", started.elapsed());
}

#[tokio::test]
async fn history_reads_what_redis_stores_from_any_node() {
    let url = shared_redis();
    let prefix = unique_prefix("history");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    for n in 1..=6 {
        publish(&a, "ledger", n, None).await;
    }
    let get = |query: &'static str| {
        let b = &b;
        async move { http_request(b, "GET", &format!("/api/history?{query}"), Some(&operator_token()), None).await.1 }
    };
    let seqs = |page: &Value| -> Vec<u64> {
        page["publications"].as_array().unwrap().iter().map(|p| p["seq"].as_u64().unwrap()).collect()
    };
    let page = get("channel=ledger&limit=4").await;
    assert_eq!((seqs(&page), page["more"].as_bool(), page["head"].as_u64()), (vec![1, 2, 3, 4], Some(true), Some(6)));
    assert_eq!(page["publications"][2]["data"], 3);
    let page = get("channel=ledger&since=4").await;
    assert_eq!((seqs(&page), page["more"].as_bool()), (vec![5, 6], Some(false)));
    let page = get("channel=ledger&order=newest&limit=2").await;
    assert_eq!(seqs(&page), [6, 5]);
    let mut client = b.client("u").await;
    client.expect_type("connected").await;
    client.send(r#"{"action":"subscribe","channels":["ledger"]}"#).await;
    assert_eq!(client.expect_type("subscribed").await["epoch"], page["epoch"], "the stream's epoch");
    let page = get("channel=untouched").await;
    assert_eq!((seqs(&page), page["epoch"].as_str()), (vec![], Some("")), "no state: the empty epoch");
}

#[tokio::test]
async fn info_lists_every_node_of_the_cluster() {
    let url = shared_redis();
    let prefix = unique_prefix("info");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let mut client = b.client("u").await;
    client.expect_type("connected").await;
    client.send(r#"{"action":"subscribe","channels":["ticks"]}"#).await;
    client.expect_type("subscribed").await;
    // b announces itself every few seconds; a lists what Redis holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_request(&a, "GET", "/api/info", Some(&operator_token()), None).await;
        assert_eq!(status, 200, "{body}");
        let nodes = body["nodes"].as_array().unwrap().clone();
        let connected_b = nodes.iter().find(|n| n["id"] != body["node"]["id"]);
        if let Some(other) = connected_b.filter(|n| n["connections"] == 1) {
            assert_eq!(
                (nodes.len(), other["engine"].as_str(), other["subscriptions"].as_u64()),
                (2, Some("redis"), Some(1))
            );
            assert_eq!(body["node"]["connections"], 0, "a has none");
            assert!(body["node"]["uptimeSeconds"].is_u64() && body["node"]["version"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "b never showed its connection: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_node_and_a_node_started_later() {
    let url = shared_redis();
    let prefix = unique_prefix("revoke");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let user = format!("trader-{}", fastrand::u32(..));
    let jti = format!("jti-{}", fastrand::u64(..));
    let revoked = token_with(&tidewire_server::auth::Claims { jti: Some(jti.clone()), ..claims(&user) });
    let mut on_b = Client::connect(&b.url(&format!("token={revoked}"))).await;
    on_b.expect_type("connected").await;
    let started = Instant::now();
    let body = json!({"jti": jti, "expiresAt": tidewire_server::auth::unix_now() + 120}).to_string();
    let (status, answer) = http_request(&a, "POST", "/api/revoke", Some(&operator_token()), Some(&body)).await;
    assert_eq!((status, answer["connections"].as_u64()), (200, Some(0)), "none on a: {answer}");
    assert_eq!(on_b.closed().await.code, 4504);
    assert!(started.elapsed() < Duration::from_secs(1), "closed on the other node in {:?}", started.elapsed());
    let closed = Client::connect(&b.url(&format!("token={revoked}"))).await.closed().await;
    assert_eq!(closed.code, 4504, "refused at connect on the other node");
    // A user's revocation, given twice, is one member of the set, and its cut moves on.
    let banned = format!("banned-{}", fastrand::u32(..));
    for _ in 0..2 {
        let body = json!({"user": banned, "expiresAt": tidewire_server::auth::unix_now() + 120}).to_string();
        let (status, answer) = http_request(&b, "POST", "/api/revoke", Some(&operator_token()), Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let members: Vec<String> =
        redis::cmd("ZRANGE").arg(format!("{prefix}:revocations")).arg(0).arg(-1).query(&mut conn).unwrap();
    assert_eq!(members, vec![format!("jti:{jti}"), format!("user:{banned}")]);
    // A node that starts after the revocations reads them from Redis before it is ready.
    let c = node(&url, &prefix).await;
    let closed = Client::connect(&c.url(&format!("token={revoked}"))).await.closed().await;
    assert_eq!(closed.code, 4504, "refused on a node started later");
    let old = token_with(&tidewire_server::auth::Claims {
        iat: Some(tidewire_server::auth::unix_now() - 5),
        ..claims(&banned)
    });
    assert_eq!(Client::connect(&c.url(&format!("token={old}"))).await.closed().await.code, 4504, "and the user's cut");
    // Redis keeps it no longer than asked.
    let ttl = keys_with_ttl(&url, &prefix)
        .into_iter()
        .find(|(key, _)| key.ends_with(":revocations"))
        .map(|(_, ttl)| ttl)
        .expect("the revocations key");
    assert!((0..=120_000).contains(&ttl), "expires with the revocation: {ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_five_thousand_subscribers_on_two_nodes() {
    // 2 500 subscribers on each node, of 100 users; either node answers for both. The
    // time each answer took is printed (`-- --nocapture`), not asserted.
    let url = shared_redis();
    let prefix = unique_prefix("presence");
    let crowd = |url: String, prefix: String| {
        move |c: &mut tidewire_server::Config| {
            c.redis_url = Some(url);
            c.redis_prefix = prefix;
            (c.max_connections_per_ip, c.max_connections_per_user) = (5000, 5000);
        }
    };
    let a = TestServer::with(crowd(url.clone(), prefix.clone())).await;
    let b = TestServer::with(crowd(url.clone(), prefix.clone())).await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let mut clients = Vec::new();
    for i in 0..5000 {
        let server = if i % 2 == 0 { &a } else { &b };
        let url = server.url(&format!("token={}&channels=floor", token(&format!("user-{:03}", i % 100))));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        clients.push(Client::from_ws(ws));
    }
    for client in &mut clients {
        client.expect_type("subscribed").await;
    }
    let mut times = Vec::new();
    for round in 0..20 {
        let asking = if round % 2 == 0 { &a } else { &b };
        let started = Instant::now();
        let (status, report) =
            http_request(asking, "GET", "/api/presence?channel=floor", Some(&operator_token()), None).await;
        times.push(started.elapsed());
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            (report["connections"].as_u64(), report["users"].as_u64(), report["nodes"].as_u64()),
            (Some(5000), Some(100), Some(2)),
            "{}",
            report["complete"]
        );
        assert_eq!(report["complete"], true);
        let listed = report["presence"].as_array().unwrap();
        assert_eq!(listed.len(), 100);
        assert!(listed.iter().all(|p| p["connections"] == 50), "each user has 50 connections, 25 per node");
    }
    times.sort();
    println!(
        "presence over 5000 subscribers on two nodes: p50 {:?}, max {:?} (HTTP request included)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_trace_and_connections_come_from_every_node() {
    let url = shared_redis();
    let prefix = unique_prefix("trace");
    let (a, b) = (node(&url, &prefix).await, node(&url, &prefix).await);
    let user = format!("trader-{}", fastrand::u32(..));
    let mut trace = EventStream::open(&a, &format!("/api/trace?user={user}"), &operator_token()).await;
    // The lease reaches b through Redis; its first events may precede it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut on_b = loop {
        let mut client = b.client(&user).await;
        client.expect_type("connected").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if trace_has_connected(&mut trace).await {
            break client;
        }
        assert!(Instant::now() < deadline, "b's events never reached a's trace");
    };
    on_b.send(r#"{"action":"subscribe","channels":["exposure"]}"#).await;
    on_b.expect_type("subscribed").await;
    let subscribed = trace.expect("subscribed").await;
    assert_eq!((subscribed["channel"].as_str(), subscribed["user"].as_str()), (Some("exposure"), Some(user.as_str())));
    assert_ne!(subscribed["node"], a.hub.node_id(), "from the other node");
    let (status, list) =
        http_request(&a, "GET", &format!("/api/connections?user={user}"), Some(&operator_token()), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!((list["nodes"].as_u64(), list["complete"].as_bool()), (Some(2), Some(true)));
    let detail = list["detail"].as_array().unwrap();
    assert!(
        detail.iter().any(|c| c["node"] == b.hub.node_id() && c["channels"] == json!(["exposure"])),
        "b's connection, with its channel: {list}"
    );
    on_b.close().await;
    trace.expect("closed").await;
}

/// Whether a `connected` event arrives on `trace` within half a second.
async fn trace_has_connected(trace: &mut EventStream) -> bool {
    tokio::time::timeout(Duration::from_millis(500), trace.expect("connected")).await.is_ok()
}

#[tokio::test]
async fn a_node_that_has_not_read_the_revocations_accepts_no_token() {
    // Redis unreachable since start: the node cannot know what was revoked.
    let server = TestServer::with(|c| {
        c.redis_url = Some("redis://127.0.0.1:1".into());
        c.redis_prefix = unique_prefix("unread");
    })
    .await;
    let closed = server.client("trader").await.closed().await;
    assert_eq!(closed.code, 1013, "TRY_AGAIN_LATER: {}", closed.reason);
    let (status, answer) = http_request(&server, "GET", "/api/info", Some(&operator_token()), None).await;
    assert_eq!((status, answer["code"].as_str()), (503, Some("UNAVAILABLE")), "{answer}");
}
