//! `tidewire-bench kafka`: the Kafka source from producer to subscribers.
//!
//! A `tansu` broker (memory storage) runs on a loopback port of its own with one topic of
//! P partitions; a node consumes it with a routing file naming that topic; S subscribers
//! read the channel it is routed to; the bench produces R messages per second (a burst
//! every 10 ms), each carrying the microsecond it was produced (`sentAt`), for D
//! seconds. Figures: messages delivered per second to all subscribers, loss, and the
//! end-to-end latency from the producer's call to the subscriber (the producer's
//! batching, the broker, the consumer's fetch, the publish and the fan-out together).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::load::{RunResult, now_micros, progress, token};
use crate::process::{Node, http_get, server_bin};
use crate::stamped::Readers;

#[derive(clap::Args, Clone, Debug)]
pub struct KafkaArgs {
    #[arg(long, short = 's', default_value_t = 100)]
    pub subscribers: usize,
    /// Messages produced per second.
    #[arg(long, short = 'r', default_value_t = 5000)]
    pub rate: u32,
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// The broker's binary (default: `TIDEWIRE_TANSU`, else cargo's bin directory).
    #[arg(long)]
    pub tansu_bin: Option<PathBuf>,
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// librdkafka settings for the node's source, `name=value` (repeatable).
    #[arg(long = "kafka-property")]
    pub kafka_properties: Vec<String>,
    /// Extra flags for the node, e.g. `--max-batch=500`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

const CHANNEL: &str = "kafka-bench";
const TOPIC: &str = "bench.ticks";

/// `name=value` settings as the routing file's `[kafka.properties]` table.
fn properties(given: &[String]) -> Result<String, String> {
    let mut table = String::from("[kafka.properties]\n");
    for setting in given {
        let (name, value) = setting.split_once('=').ok_or_else(|| format!("--kafka-property {setting}: name=value"))?;
        table.push_str(&format!("{name:?} = {value:?}\n"));
    }
    Ok(table)
}

/// The broker, killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_bin(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    let candidate = given.cloned().or_else(|| std::env::var_os("TIDEWIRE_TANSU").map(PathBuf::from)).or_else(|| {
        std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|home| home.join("bin").join("tansu"))
    });
    candidate.filter(|p| p.is_file()).ok_or_else(|| {
        "the Kafka bench needs the broker tansu: `cargo install tansu --version 0.6.0 --locked --features dynostore` \
         (cargo xtask test installs it), or --tansu-bin"
            .to_owned()
    })
}

async fn start_broker(bin: &PathBuf) -> Result<(Broker, String), String> {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("tansu did not listen on {port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((broker, format!("127.0.0.1:{port}")))
}

pub async fn run(args: &KafkaArgs) -> Result<RunResult, String> {
    let (_broker, address) = start_broker(&tansu_bin(args.tansu_bin.as_ref())?).await?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &address);
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let topic = NewTopic::new(TOPIC, args.partitions, TopicReplication::Fixed(1));
    for created in admin.create_topics(&[topic], &AdminOptions::new()).await.map_err(|e| e.to_string())? {
        created.map_err(|(name, code)| format!("cannot create {name}: {code}"))?;
    }
    let routing = std::env::temp_dir().join(format!("tw-bench-kafka-{:08x}.toml", fastrand::u32(..)));
    let file = format!(
        "[[kafka]]\nname = \"bench\"\nbrokers = [\"{address}\"]\ntopics = [\"{TOPIC}\"]\ngroup = \"bench\"\n\
         start = \"earliest\"\n{}\n[[route]]\nwhen_key = \"{TOPIC}\"\nchannel = \"{CHANNEL}\"\ntype = \"tick\"\n",
        properties(&args.kafka_properties)?
    );
    std::fs::write(&routing, file).map_err(|e| e.to_string())?;
    let bin = server_bin(args.server_bin.as_ref())?;
    let mut extra = vec!["--ingest".to_owned(), routing.display().to_string()];
    extra.extend(args.server_args.iter().cloned());
    let node = Node::start(&bin, &extra, None).await;
    let _ = std::fs::remove_file(&routing);
    let node = node?;
    let producer: FutureProducer = config.set("linger.ms", "2").create().map_err(|e| e.to_string())?;
    measure(args, &producer, &node).await
}

/// Waits until the broker took every message in flight.
async fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) -> Result<(), String> {
    for delivery in futures_util::future::join_all(pending.drain(..)).await {
        delivery.map_err(|_| "the producer went away".to_owned())?.map_err(|(e, _)| format!("produce: {e}"))?;
    }
    Ok(())
}

/// The node's count of Kafka messages published.
async fn published(port: u16) -> u64 {
    let text = http_get(port, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("tidewire_ingest_events_total") && l.contains("outcome=\"published\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Holds partitions: the group has assigned them to the node's source.
async fn holds_partitions(port: u16) -> bool {
    let text = http_get(port, "/metrics").await.unwrap_or_default();
    text.lines().any(|l| l.starts_with("tidewire_ingest_partitions{") && !l.ends_with(" 0"))
}

async fn measure(args: &KafkaArgs, producer: &FutureProducer, node: &Node) -> Result<RunResult, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holds_partitions(node.port).await {
        if Instant::now() > deadline {
            return Err("the node's Kafka source was given no partition in 30 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let readers = Readers::connect(node.port, &token("bench-kafka", false), CHANNEL, args.subscribers).await?;
    let cpu_before = node.cpu_seconds();
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut owed, mut sent) = (0.0, 0u64);
    let mut pending = Vec::new();
    while started.elapsed() < args.duration {
        interval.tick().await;
        owed += f64::from(args.rate) * tick.as_secs_f64();
        let count = owed.floor() as u64;
        owed -= count as f64;
        for _ in 0..count {
            sent += 1;
            let payload = format!(r#"{{"n":{sent},"sentAt":{}}}"#, now_micros());
            let key = (sent % 64).to_string();
            let mut record = FutureRecord::to(TOPIC).key(&key).payload(&payload);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => break pending.push(delivery),
                    // The producer's queue is full: wait for what is in flight, then again.
                    Err((_, again)) => {
                        record = again;
                        settle(&mut pending).await?;
                    }
                }
            }
        }
        if pending.len() > 10_000 {
            settle(&mut pending).await?;
        }
        progress(&format!("  {:>4.1}s produced {sent:>9}", started.elapsed().as_secs_f64()));
    }
    settle(&mut pending).await?;
    let _ = producer.flush(Duration::from_secs(10));
    let elapsed = started.elapsed().as_secs_f64();
    let drained = Instant::now() + Duration::from_secs(30);
    while published(node.port).await < sent && Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = published(node.port).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cpu = node.cpu_seconds() - cpu_before;
    let received = readers.finish().await?;
    progress("");
    let notes = format!(
        "{} partitions, {taken} of {sent} published, producer → subscriber latency (tansu, memory storage) {} {}",
        args.partitions,
        args.kafka_properties.join(" "),
        args.server_args.join(" ")
    );
    Ok(received.result("kafka", args.rate, sent, elapsed, cpu, notes))
}
