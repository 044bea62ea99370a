//! Ingest against the RabbitMQ and NATS servers on this machine (loopback, default
//! ports, unique exchange/queue/subject names per test), and a nats-server of the test's
//! own for the restart case.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::*;
use tidewire_server::ingest::{self, IngestConfig};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";

fn unique(name: &str) -> String {
    format!("tw-test-{name}-{:08x}", fastrand::u32(..))
}

async fn amqp() -> Connection {
    match tokio::time::timeout(Duration::from_secs(5), Connection::connect(AMQP_URL, ConnectionProperties::default()))
        .await
    {
        Ok(Ok(connection)) => connection,
        _ => panic!("RabbitMQ is not reachable at {AMQP_URL}: start it (`rabbitmq-server -detached`)"),
    }
}

async fn nats(url: &str) -> async_nats::Client {
    match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url)).await {
        Ok(Ok(client)) => client,
        _ => panic!("NATS is not reachable at {url}: start it (`nats-server -js`)"),
    }
}

async fn listener(server: &TestServer, channels: &str) -> Client {
    let mut client = Client::connect(&server.url(&format!("token={}&channels={channels}", token("ingest")))).await;
    client.next().await;
    for _ in channels.split(',') {
        client.expect_type("subscribed").await;
    }
    client
}

async fn metric(server: &TestServer, outcome: &str) -> u64 {
    let text = http_text(server, "GET", "/metrics", None, None).await.1;
    text.lines()
        .filter(|l| l.starts_with("tidewire_ingest_events_total") && l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn amqp_config(exchange: &str, queue: &str) -> IngestConfig {
    toml::from_str(&format!(
        r##"
        [[amqp]]
        name = "rabbit"
        url = "{AMQP_URL}"
        exchange = "{exchange}"
        queue = "{queue}"
        bindings = ["backtest.*", "assessment.#"]
        reconnect_delay = "100ms"

        [[route]]
        when_field = "assessmentId"
        channel = "assessment#{{assessmentId}}"

        [[route]]
        when_key = "backtest.*"
        channel = "backtests"
        key = "{{job_id}}"
        "##
    ))
    .unwrap()
}

async fn publish_amqp(connection: &Connection, exchange: &str, key: &str, body: &str) {
    let channel = connection.create_channel().await.unwrap();
    // Declared as tidewire declares it, so publishing never races the source's setup.
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_events_flow_to_channels_and_bad_ones_are_dead_lettered() {
    let (exchange, queue) = (unique("exchange"), unique("queue"));
    let server = TestServer::start().await;
    ingest::start(&server.hub, amqp_config(&exchange, &queue));
    let mut backtests = listener(&server, "backtests").await;
    let mut user = Client::connect(&server.url(&format!("token={}&channels=assessment%23a-123", token("a-123")))).await;
    user.next().await;
    user.expect_type("subscribed").await;
    let rabbit = amqp().await;
    // The source declares the queue; wait until it consumes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publish_amqp(&rabbit, &exchange, "backtest.completed", r#"{"type":"backtest.completed","job_id":"probe"}"#)
            .await;
        if let Ok(Some(m)) = backtests.try_next(Duration::from_millis(300)).await {
            assert_eq!(m["type"], "backtest.completed");
            break;
        }
        assert!(Instant::now() < deadline, "the AMQP source never consumed");
    }

    publish_amqp(
        &rabbit,
        &exchange,
        "backtest.completed",
        r#"{"type":"backtest.completed","job_id":"j1","sharpe_ratio":1.85}"#,
    )
    .await;
    let m = backtests.expect_type("backtest.completed").await;
    assert_eq!((m["key"].as_str(), m["data"]["sharpe_ratio"].as_f64()), (Some("j1"), Some(1.85)));
    publish_amqp(
        &rabbit,
        &exchange,
        "assessment.pnl",
        r#"{"type":"pnl_update","assessmentId":"a-123","unrealizedPnl":1500.0}"#,
    )
    .await;
    let m = user.expect_type("pnl_update").await;
    assert_eq!(m["channel"], "assessment#a-123", "routed by a JSON field to a user-scoped channel");

    // Malformed events go to the dead-letter queue, are counted, and crash nothing.
    for bad in ["not json", "[1,2]", r#"{"type":"backtest.completed"}"#] {
        publish_amqp(&rabbit, &exchange, "backtest.failed", bad).await;
    }
    let dead_queue = format!("{queue}.dead");
    let channel = rabbit.create_channel().await.unwrap();
    // A dead letter keeps neither the original's expiration (it would vanish from the
    // dead-letter queue) nor its user-id (the broker checks that against the publisher).
    channel
        .basic_publish(
            exchange.as_str().into(),
            "backtest.failed".into(),
            BasicPublishOptions::default(),
            b"expiring junk",
            BasicProperties::default()
                .with_expiration("600000".into())
                .with_user_id("guest".into())
                .with_message_id("m-9".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let header = |message: &lapin::message::BasicGetMessage, name: &str| match message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v.clone()))
    {
        Some(lapin::types::AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("a dead letter without its {name} header: {other:?}"),
    };
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dead.len() < 4 {
        if let Some(message) =
            channel.basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
        {
            let body = String::from_utf8_lossy(&message.delivery.data).into_owned();
            assert_eq!(header(&message, "Tidewire-Original-Exchange"), exchange);
            assert_eq!(message.delivery.routing_key.as_str(), "backtest.failed", "the routing key is kept");
            assert_eq!(*message.delivery.properties.delivery_mode(), Some(2), "persistent");
            if body == "expiring junk" {
                let properties = &message.delivery.properties;
                assert_eq!((properties.expiration(), properties.user_id()), (&None, &None));
                assert_eq!(properties.message_id().as_ref().map(|m| m.as_str()), Some("m-9"));
            }
            dead.push((body, header(&message, "Tidewire-Dead-Letter-Reason")));
        } else {
            assert!(Instant::now() < deadline, "dead letters missing: {dead:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let reason_of = |body: &str| dead.iter().find(|(b, _)| b == body).map(|(_, r)| r.clone()).unwrap_or_default();
    assert!(reason_of("not json").contains("not a JSON object"), "{dead:?}");
    assert!(reason_of("[1,2]").contains("not a JSON object"), "{dead:?}");
    assert!(!reason_of(r#"{"type":"backtest.completed"}"#).is_empty(), "{dead:?}");
    assert_eq!(metric(&server, "dead_lettered").await, 4);
    publish_amqp(&rabbit, &exchange, "backtest.completed", r#"{"type":"backtest.completed","job_id":"after"}"#).await;
    assert_eq!(backtests.expect_type("backtest.completed").await["key"], "after", "still consuming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_events_published_while_tidewire_is_down_are_delivered_after_it_restarts() {
    let (exchange, queue) = (unique("exchange"), unique("queue"));
    let rabbit = amqp().await;
    {
        // First run: declares the durable queue, then stops.
        let mut first = TestServer::start().await;
        ingest::start(&first.hub, amqp_config(&exchange, &queue));
        let mut backtests = listener(&first, "backtests").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            publish_amqp(&rabbit, &exchange, "backtest.x", r#"{"job_id":"probe"}"#).await;
            if let Ok(Some(_)) = backtests.try_next(Duration::from_millis(300)).await {
                break;
            }
            assert!(Instant::now() < deadline, "the AMQP source never consumed");
        }
        first.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut first.task).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..50 {
        publish_amqp(
            &rabbit,
            &exchange,
            "backtest.completed",
            &format!(r#"{{"type":"backtest.completed","job_id":"j{n}"}}"#),
        )
        .await;
    }
    let second = TestServer::start().await;
    let mut backtests = listener(&second, "backtests").await;
    ingest::start(&second.hub, amqp_config(&exchange, &queue));
    let mut keys = Vec::new();
    while keys.len() < 50 {
        let m = backtests.next().await;
        if m["type"] == "backtest.completed" {
            keys.push(m["key"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(keys, (0..50).map(|n| format!("j{n}")).collect::<Vec<_>>(), "nothing lost, in order");
}

fn nats_config(url: &str, subject: &str, dead: &str, jetstream: Option<(&str, &str)>) -> IngestConfig {
    let js = jetstream
        .map(|(stream, durable)| format!(r#"jetstream = {{ stream = "{stream}", durable = "{durable}" }}"#))
        .unwrap_or_default();
    toml::from_str(&format!(
        r##"
        [[nats]]
        name = "nats"
        url = "{url}"
        subject = "{subject}.>"
        dead_letter_subject = "{dead}"
        reconnect_delay = "100ms"
        {js}

        [[route]]
        when_key = "{subject}.strategy.*"
        channel = "strategies"
        "##
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_core_events_flow_and_bad_ones_go_to_the_dead_letter_subject() {
    let (subject, dead) = (unique("events"), unique("dead"));
    let client = nats(NATS_URL).await;
    let mut dead_letters = client.subscribe(dead.clone()).await.unwrap();
    let server = TestServer::start().await;
    ingest::start(&server.hub, nats_config(NATS_URL, &subject, &dead, None));
    let mut strategies = listener(&server, "strategies").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client
            .publish(format!("{subject}.strategy.discovered"), r#"{"type":"strategy.discovered","id":"s1"}"#.into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Some(m)) = strategies.try_next(Duration::from_millis(300)).await {
            assert_eq!(m["type"], "strategy.discovered");
            break;
        }
        assert!(Instant::now() < deadline, "the NATS source never consumed");
    }
    client.publish(format!("{subject}.strategy.discovered"), "{broken".into()).await.unwrap();
    client.publish(format!("{subject}.unrouted.thing"), r#"{"x":1}"#.into()).await.unwrap();
    client.flush().await.unwrap();
    for expected in ["not a JSON object", "no route matches"] {
        let message =
            tokio::time::timeout(Duration::from_secs(10), dead_letters.next()).await.expect("a dead letter").unwrap();
        let reason = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Tidewire-Dead-Letter-Reason"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(reason.contains(expected), "{reason}");
    }
    assert_eq!(metric(&server, "dead_lettered").await, 2);
}

struct OwnNats {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnNats {
    fn start() -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(unique("jetstream"));
        let mut own = OwnNats { port, dir, child: None };
        own.restart();
        own
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed to run this test (Debian package nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "own nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Publishes event `n` to JetStream, retrying until the stream exists and acknowledges it.
async fn publish_to_jetstream(js: &async_nats::jetstream::Context, subject: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = js
            .publish(format!("{subject}.strategy.found"), format!(r#"{{"type":"strategy.found","n":{n}}}"#).into())
            .await;
        if let Ok(ack) = sent {
            if ack.await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "could not publish {n} to JetStream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message of `kind` within `wait` (ignoring others); panics without one.
async fn within(client: &mut Client, kind: &str, wait: Duration) -> serde_json::Value {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match client.try_next(left).await {
            Ok(Some(message)) if message["type"] == kind => return message,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(closed) => panic!("closed ({}) while waiting for {kind}", closed.code),
        }
    }
    panic!("no {kind} within {wait:?}");
}

/// Waits until the source has created its stream.
async fn stream_exists(js: &async_nats::jetstream::Context, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while js.get_stream(stream).await.is_err() {
        assert!(Instant::now() < deadline, "the JetStream source never created its stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_resumes_after_the_broker_restarts() {
    let mut own = OwnNats::start();
    let subject = unique("js");
    let server = TestServer::start().await;
    ingest::start(&server.hub, nats_config(&own.url(), &subject, "tidewire.dead", Some(("EVENTS", "tidewire"))));
    let mut strategies = listener(&server, "strategies").await;
    let client = nats(&own.url()).await;
    let js = async_nats::jetstream::new(client.clone());
    let publish = |n: u32| publish_to_jetstream(&js, &subject, n);
    // The source creates the stream; publish once it exists.
    stream_exists(&js, "EVENTS").await;
    for n in 0..5 {
        publish(n).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let m = strategies.expect_type("strategy.found").await;
        seen.push(m["data"]["n"].as_u64().unwrap());
    }
    own.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    own.restart();
    for n in 5..10 {
        publish(n).await;
    }
    while seen.len() < 10 {
        let m = strategies.expect_type("strategy.found").await;
        seen.push(m["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>(), "reconnected and resumed, in order, nothing lost");
    assert_eq!(metric(&server, "published").await, 10);
}

/// A stream deleted and created again numbers its messages from 1 again; the source
/// must not mistake the new stream's first messages for redeliveries of the old one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_delivers_from_a_stream_that_was_deleted_and_created_again() {
    let (subject, stream) = (unique("jsre"), unique("STREAM"));
    let server = TestServer::start().await;
    ingest::start(&server.hub, nats_config(NATS_URL, &subject, "tidewire.dead", Some((&stream, "tidewire"))));
    let mut strategies = listener(&server, "strategies").await;
    let js = async_nats::jetstream::new(nats(NATS_URL).await);
    stream_exists(&js, &stream).await;
    let mut seen = Vec::new();
    for n in 0..3 {
        publish_to_jetstream(&js, &subject, n).await;
        seen.push(strategies.expect_type("strategy.found").await["data"]["n"].as_u64().unwrap());
    }
    js.delete_stream(&stream).await.expect("delete the stream");
    // The source's consumer went with the stream: it reconnects and creates both again,
    // and the new stream's sequences start at 1.
    for n in 3..6 {
        publish_to_jetstream(&js, &subject, n).await;
        // The source learns of the deletion from its consumer's heartbeats and reconnects
        // with backoff: under a loaded machine the first event after it can take longer
        // than the usual few seconds. What this test checks is that none is skipped.
        let event = within(&mut strategies, "strategy.found", Duration::from_secs(30)).await;
        seen.push(event["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(seen, (0..6).collect::<Vec<_>>(), "the recreated stream's events are published, not skipped");
    let _ = js.delete_stream(&stream).await;
}
