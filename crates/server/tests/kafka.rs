//! The Kafka source against a real Kafka-protocol broker: `tansu`, started by each test
//! on a port of its own (memory storage), reached through a proxy the test can cut.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::*;
use tidewire_server::ingest::{self, IngestConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn unique(name: &str) -> String {
    format!("tw-{name}-{:08x}", fastrand::u32(..))
}

/// The broker's binary: `TIDEWIRE_TANSU`, else `tansu` on the PATH or in cargo's bin.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TIDEWIRE_TANSU") {
        return path.into();
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("tansu")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain(cargo_bin).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the Kafka tests need the Kafka-protocol broker tansu: `cargo xtask tools` installs it \
             (cargo install tansu --version 0.6.0 --locked --features dynostore), or set TIDEWIRE_TANSU"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tansu broker of the test's own. It advertises the proxy's port, so every client
/// connection goes through the proxy.
struct Broker {
    child: Child,
    proxy: Proxy,
}

impl Broker {
    async fn start() -> Broker {
        let (port, advertised) = (free_port(), free_port());
        let child = Command::new(tansu_binary())
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
            .args(["--storage-engine", "memory://tansu/", "--cluster-id", &unique("cluster")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "tansu did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let proxy = Proxy::start(advertised, ([127, 0, 0, 1], port).into()).await;
        Broker { child, proxy }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.address());
        config
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().unwrap();
        let results = admin
            .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await
            .expect("CreateTopics");
        for result in results {
            result.unwrap_or_else(|e| panic!("cannot create {topic}: {e:?}"));
        }
    }

    fn producer(&self) -> FutureProducer {
        self.client_config().set("message.timeout.ms", "10000").create().unwrap()
    }

    /// The first `expected` messages of partition 0 of `topic` (the dead letters), with
    /// their headers (read on a thread of its own: the proxy needs this runtime).
    async fn read_all(&self, topic: &str, expected: usize) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
        let mut config = self.client_config();
        config.set("group.id", unique("reader")).set("enable.auto.commit", "false");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_partition(&config, &topic, expected)).await.unwrap()
    }
}

fn read_partition(config: &ClientConfig, topic: &str, expected: usize) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = config.create().unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut messages = Vec::new();
    while messages.len() < expected && std::time::Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else { continue };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        messages.push((message.payload().unwrap_or_default().to_vec(), headers));
    }
    messages
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the broker: `cut` closes every connection and refuses new
/// ones (the broker gone, as its clients see it), `restore` listens again.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    running: CancellationToken,
}

impl Proxy {
    async fn start(port: u16, upstream: SocketAddr) -> Proxy {
        let mut proxy = Proxy { port, upstream, running: CancellationToken::new() };
        proxy.restore().await;
        proxy
    }

    fn cut(&self) {
        self.running.cancel();
    }

    async fn restore(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "proxy cannot listen again: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.running = CancellationToken::new();
        let (running, upstream) = (self.running.clone(), self.upstream);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = running.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let running = running.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = running.cancelled() => {}
                    }
                });
            }
        });
    }
}

/// A routing file with one Kafka source on `topics` and the test's routes.
fn config(broker: &Broker, group: &str, topics: &[&str], extra: &str) -> IngestConfig {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let config: IngestConfig = toml::from_str(&format!(
        r##"
        [[kafka]]
        name = "kafka"
        brokers = ["{}"]
        topics = [{}]
        group = "{group}"
        start = "earliest"
        dead_letter_topic = "{group}.dead"
        commit_interval = "200ms"
        lag_interval = "200ms"
        reconnect_delay = "100ms"
        max_reconnect_wait = "1s"
        {extra}
        [kafka.properties]
        "heartbeat.interval.ms" = "300"
        "session.timeout.ms" = "6000"
        "topic.metadata.refresh.interval.ms" = "1000"

        [[route]]
        when_field = "assessmentId"
        channel = "assessments.{{assessmentId}}"

        [[route]]
        when_key = "trading.#"
        channel = "orders"
        key = "{{orderId}}"

        [[route]]
        when_key = "ticks"
        channel = "ticks"
        "##,
        broker.address(),
        topics.join(", ")
    ))
    .unwrap();
    config.check().unwrap();
    config
}

async fn listener(server: &TestServer, channels: &str) -> Client {
    let mut client = server.connect(Transport::WebSocket, Some(&token("kafka-reader")), channels).await;
    client.next().await;
    for _ in channels.split(',') {
        client.expect_type("subscribed").await;
    }
    client
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
}

async fn send_with_header(producer: &FutureProducer, topic: &str, payload: &[u8]) {
    let headers = OwnedHeaders::new().insert(rdkafka::message::Header { key: "origin", value: Some("test") });
    let record = FutureRecord::<str, [u8]>::to(topic).payload(payload).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
}

#[tokio::test]
async fn messages_are_routed_by_field_and_by_topic_pattern_and_bad_ones_dead_lettered_with_reasons() {
    let broker = Broker::start().await;
    let group = unique("routes");
    broker.create_topic("market-data.prices", 3).await;
    broker.create_topic("trading.orders", 1).await;
    broker.create_topic("unrelated", 1).await;
    let server = TestServer::with(|c| c.max_publication_bytes = 4096).await;
    let mut client = listener(&server, "assessments.a-7,orders").await;
    let producer = broker.producer();
    send(&producer, "market-data.prices", "a-7", br#"{"assessmentId":"a-7","price":101.5}"#).await;
    send(&producer, "trading.orders", "o-1", br#"{"orderId":"o-1","qty":5,"type":"order"}"#).await;
    send(&producer, "unrelated", "x", br#"{"assessmentId":"a-7","price":1}"#).await;
    send_with_header(&producer, "market-data.prices", b"not json").await;
    send(&producer, "market-data.prices", "n", br#"{"nothing":"routes this"}"#).await;
    send(&producer, "market-data.prices", "b", br#"{"assessmentId":"bad id"}"#).await;
    let big = format!(r#"{{"assessmentId":"a-7","pad":"{}"}}"#, "x".repeat(8192));
    send(&producer, "market-data.prices", "a-7", big.as_bytes()).await;
    ingest::start(&server.hub, config(&broker, &group, &["market-data.*", "trading.#"], ""));

    let mut got = Vec::new();
    while got.len() < 2 {
        let message = client.next().await;
        got.push(message["channel"].as_str().unwrap().to_owned());
        if message["channel"] == "orders" {
            assert_eq!((message["key"].as_str(), message["type"].as_str()), (Some("o-1"), Some("order")));
        } else {
            assert_eq!(message["data"]["price"], 101.5, "{message}");
        }
    }
    got.sort();
    assert_eq!(got, ["assessments.a-7", "orders"]);
    let dead = broker.read_all(&format!("{group}.dead"), 4).await;
    let reasons: Vec<&str> = dead.iter().map(|(_, h)| h["Tidewire-Dead-Letter-Reason"].as_str()).collect();
    assert_eq!(dead.len(), 4, "{reasons:?}");
    let find = |text: &str| {
        dead.iter()
            .find(|(_, h)| h["Tidewire-Dead-Letter-Reason"].contains(text))
            .unwrap_or_else(|| panic!("no dead letter says {text:?}: {reasons:?}"))
    };
    let (payload, headers) = find("not a JSON object");
    assert_eq!(payload, b"not json");
    assert_eq!(headers["Tidewire-Source-Topic"], "market-data.prices");
    assert!(
        headers["Tidewire-Source-Partition"].parse::<i32>().is_ok() && headers.contains_key("Tidewire-Source-Offset")
    );
    find("no route");
    let (payload, _) = find("bad id");
    assert_eq!(payload, br#"{"assessmentId":"bad id"}"#);
    let (payload, _) = find("at most 4096");
    assert_eq!(payload.len(), big.len(), "the whole message, for whoever replays it");
    // Nothing more arrives: the unrelated topic is not subscribed.
    assert!(client.try_next(Duration::from_millis(500)).await.unwrap().is_none());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let published = metric_sum(&server, "tidewire_ingest_events_total", &["outcome=\"published\""]);
        let lag = metric_sum(&server, "tidewire_ingest_consumer_lag", &["topic=\"market-data.prices\""]);
        if published == Some(2) && lag == Some(0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "published {published:?}, lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric_sum(&server, "tidewire_ingest_events_total", &["outcome=\"dead_lettered\""]), Some(4));
}

/// Sends ticks `from..=to` to `topic`, keyed so they spread over its partitions.
async fn send_ticks(producer: &FutureProducer, topic: &str, from: u32, to: u32) {
    for n in from..=to {
        send(producer, topic, &format!("k{}", n % 16), format!(r#"{{"n":{n}}}"#).as_bytes()).await;
    }
}

fn published_by(server: &TestServer) -> i64 {
    metric_sum(server, "tidewire_ingest_events_total", &["outcome=\"published\""]).unwrap_or(0)
}

#[tokio::test]
async fn two_nodes_in_one_group_share_the_partitions_and_a_node_stopping_mid_stream_loses_nothing() {
    let broker = Broker::start().await;
    let (group, topic) = (unique("shared"), "ticks");
    broker.create_topic(topic, 4).await;
    let prefix = format!("tw-test-kafka-{:08x}", fastrand::u32(..));
    let mut first = redis_node(&prefix).await;
    let second = redis_node(&prefix).await;
    let mut reader = listener(&second, "ticks").await;
    ingest::start(&first.hub, config(&broker, &group, &[topic], ""));
    ingest::start(&second.hub, config(&broker, &group, &[topic], ""));
    // Both members hold partitions before the stream starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held = |s: &TestServer| metric_sum(s, "tidewire_ingest_partitions", &[]).is_some_and(|n| n > 0);
        if held(&first) && held(&second) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the group did not give both members partitions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let producer = broker.producer();
    send_ticks(&producer, topic, 1, 600).await;
    let mut seen = BTreeMap::new();
    collect_numbered(&mut reader, &mut seen, 600).await;
    let (by_first, by_second) = (published_by(&first), published_by(&second));
    assert!(by_first > 0 && by_second > 0, "both members took partitions: {by_first} + {by_second}");

    // The first node stops while messages keep coming: the second takes its partitions
    // from their last commit, and what it reads again is recognised, not republished.
    let more = tokio::spawn(async move {
        send_ticks(&producer, topic, 601, 1200).await;
        producer
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), &mut first.task).await;
    let _producer = more.await.unwrap();
    collect_numbered(&mut reader, &mut seen, 1200).await;

    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=1200).collect::<Vec<_>>(), "every message, once");
    // Both committed before giving partitions up (the leaver on drain, the stayer on the
    // rebalance): nothing was even read twice.
    assert_eq!(published_by(&first) + published_by(&second), 1200, "each message read once");
}

#[tokio::test]
async fn a_node_restarted_mid_stream_resumes_from_its_commit_with_nothing_lost_or_doubled() {
    let broker = Broker::start().await;
    let (group, topic) = (unique("restart"), "ticks");
    broker.create_topic(topic, 2).await;
    let prefix = format!("tw-test-kafka-{:08x}", fastrand::u32(..));
    let watcher = redis_node(&prefix).await;
    let mut reader = listener(&watcher, "ticks").await;
    let mut node = redis_node(&prefix).await;
    ingest::start(&node.hub, config(&broker, &group, &[topic], ""));
    let producer = broker.producer();
    send_ticks(&producer, topic, 1, 300).await;
    let mut seen = BTreeMap::new();
    collect_numbered(&mut reader, &mut seen, 150).await;
    node.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), &mut node.task).await;
    send_ticks(&producer, topic, 301, 500).await;
    let again = redis_node(&prefix).await;
    ingest::start(&again.hub, config(&broker, &group, &[topic], ""));
    collect_numbered(&mut reader, &mut seen, 500).await;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=500).collect::<Vec<_>>(), "every message, once");
    // The stopped node committed what it took before it left: the restarted one read
    // nothing twice.
    assert_eq!(published_by(&node) + published_by(&again), 500, "each message read once");
}

/// A `tidewire serve` process on the machine's Redis with a routing file, killed with
/// SIGKILL when dropped or `kill`ed: the crash a drain never follows.
struct NodeProcess {
    child: Child,
    port: u16,
    routing: PathBuf,
}

impl NodeProcess {
    async fn start(prefix: &str, routing: &str) -> NodeProcess {
        let file = std::env::temp_dir().join(format!("{}.toml", unique("routing")));
        std::fs::write(&file, routing).unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--jwt-secret", SECRET])
            .args(["--redis-url", "redis://127.0.0.1:6379", "--redis-prefix", prefix])
            .arg("--ingest")
            .arg(&file)
            .env("TIDEWIRE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start tidewire");
        let node = NodeProcess { child, port, routing: file };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while node.get("/ready").await.is_none_or(|r| !r.starts_with("HTTP/1.1 200")) {
            assert!(tokio::time::Instant::now() < deadline, "the tidewire process did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    async fn get(&self, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(response)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.routing);
    }
}

#[tokio::test]
async fn a_node_killed_mid_stream_reads_again_what_it_had_not_committed_and_publishes_it_once() {
    let broker = Broker::start().await;
    let (group, topic) = (unique("crash"), "ticks");
    broker.create_topic(topic, 2).await;
    let prefix = format!("tw-test-kafka-{:08x}", fastrand::u32(..));
    let watcher = redis_node(&prefix).await;
    let mut reader = listener(&watcher, "ticks").await;
    // No commit before the crash: everything the first process published is read again.
    let routing = format!(
        "[[kafka]]\nbrokers = [\"{}\"]\ntopics = [\"{topic}\"]\ngroup = \"{group}\"\nstart = \"earliest\"\n\
         commit_interval = \"1h\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"300\"\n[[route]]\nwhen_key = \"ticks\"\nchannel = \"ticks\"\n",
        broker.address()
    );
    let mut first = NodeProcess::start(&prefix, &routing).await;
    let producer = broker.producer();
    send_ticks(&producer, topic, 1, 300).await;
    let mut seen = BTreeMap::new();
    collect_numbered(&mut reader, &mut seen, 300).await;
    assert_eq!(seen.len(), 300);
    first.kill();
    let second = NodeProcess::start(&prefix, &routing).await;
    send_ticks(&producer, topic, 301, 400).await;
    collect_numbered(&mut reader, &mut seen, 400).await;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=400).collect::<Vec<_>>(), "every message, once");
    // The second process did read the first 300 again, and recognised them.
    let metrics = second.get("/metrics").await.unwrap_or_default();
    let duplicates = metrics
        .lines()
        .find(|l| l.starts_with("tidewire_duplicate_publishes_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(duplicates, Some(300.0), "the uncommitted messages were read again and recognised");
}

#[tokio::test]
async fn the_broker_going_away_and_coming_back_is_ridden_out() {
    let mut broker = Broker::start().await;
    let (group, topic) = (unique("outage"), "ticks");
    broker.create_topic(topic, 2).await;
    let server = TestServer::start().await;
    let mut reader = listener(&server, "ticks").await;
    ingest::start(&server.hub, config(&broker, &group, &[topic], ""));
    let producer = broker.producer();
    send_ticks(&producer, topic, 1, 100).await;
    let mut seen = BTreeMap::new();
    collect_numbered(&mut reader, &mut seen, 100).await;
    assert_eq!(seen.len(), 100);
    // Longer than the session timeout (6 s): the group gives the partitions up and the
    // node joins again when the broker is back.
    broker.proxy.cut();
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.proxy.restore().await;
    send_ticks(&producer, topic, 101, 200).await;
    collect_numbered(&mut reader, &mut seen, 200).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>(), "every message");
    assert!(seen.values().all(|n| *n == 1), "and once each: the node kept its idempotency keys");
}

#[tokio::test]
async fn a_message_the_node_refuses_for_now_is_retried_then_dead_lettered_without_blocking_the_rest() {
    let broker = Broker::start().await;
    let group = unique("poison");
    broker.create_topic("ticks", 1).await;
    // One publication per minute on `ticks`: the second message is refused (429, "try
    // again"), three times, then dead-lettered; the one behind it, on another channel,
    // goes out after it.
    let server = TestServer::with(|c| {
        c.publish_rate_limits = vec!["ticks=1/1".parse().unwrap()];
    })
    .await;
    let mut client = listener(&server, "ticks,orders").await;
    let producer = broker.producer();
    send(&producer, "ticks", "a", br#"{"n":1}"#).await;
    send(&producer, "ticks", "a", br#"{"n":2}"#).await;
    send(&producer, "ticks", "a", br#"{"assessmentId":"a-1","n":3}"#).await;
    let mut routes = config(&broker, &group, &["ticks"], "max_attempts = 3");
    routes.route.retain(|r| r.when_key.as_deref() == Some("ticks"));
    routes.route.insert(0, toml::from_str("when_field = \"assessmentId\"\nchannel = \"orders\"").unwrap());
    ingest::start(&server.hub, routes);
    assert_eq!(client.next().await["data"]["n"], 1);
    let after = client.next().await;
    assert_eq!((after["channel"].as_str(), after["data"]["n"].as_u64()), (Some("orders"), Some(3)));
    let dead = broker.read_all(&format!("{group}.dead"), 1).await;
    let reason = &dead.first().expect("a dead letter").1["Tidewire-Dead-Letter-Reason"];
    assert!(reason.contains("after 3 attempts") && reason.contains("RATE_LIMIT_EXCEEDED"), "{reason}");
}

#[test]
fn bad_kafka_entries_are_refused_when_the_file_is_read() {
    let entry = |extra: &str| {
        let config: IngestConfig = toml::from_str(&format!(
            "[[kafka]]\nbrokers = [\"127.0.0.1:9092\"]\ngroup = \"g\"\n{extra}\n[[route]]\nchannel = \"c\"\n"
        ))
        .unwrap();
        config.check()
    };
    assert!(entry("topics = [\"ok\", \"trading.#\"]").is_ok());
    assert!(entry("topics = []").unwrap_err().contains("at least one topic"));
    assert!(entry("topics = [\"a.#.b\"]").unwrap_err().contains("only at the end"));
    assert!(entry("topics = [\"bad topic\"]").unwrap_err().contains("not a topic name"));
    assert!(entry("topics = [\"t\"]\ndead_letter_topic = \"\"").unwrap_err().contains("dead_letter_topic"));
    let unknown = entry("topics = [\"t\"]\n[kafka.properties]\n\"no.such.setting\" = \"1\"").unwrap_err();
    assert!(unknown.contains("properties"), "{unknown}");
    let own = entry("topics = [\"t\"]\n[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"").unwrap_err();
    assert!(own.contains("set by the source itself"), "{own}");
    let loop_back = entry("topics = [\"tidewire.dead\"]").unwrap_err();
    assert!(loop_back.contains("dead_letter_topic"), "{loop_back}");
}
