//! Several Redis-backed nodes as separate processes: SIGKILL one while publishing, and
//! its clients (the native client, with a list of URLs) move to another node and lose
//! nothing.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidewire_client::core::SubscriptionEvent;
use tidewire_client::native::{Client, Config, Item};

fn redis_url() -> String {
    let url = std::env::var("TIDEWIRE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok();
    assert!(
        reachable,
        "Redis is not reachable at {url}: start one (`redis-server --port 6379`) or set TIDEWIRE_TEST_REDIS_URL"
    );
    url
}

struct NodeProcess {
    child: Child,
    port: u16,
}

impl NodeProcess {
    fn start(url: &str, prefix: &str) -> NodeProcess {
        NodeProcess::start_with(url, prefix, &[], false)
    }

    /// With `logs`, stdout (JSON logs at info) is captured for the test to read.
    fn start_with(url: &str, prefix: &str, extra: &[&str], logs: bool) -> NodeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--jwt-secret", support::SECRET])
            .args(["--redis-url", url, "--redis-prefix", prefix, "--log-format", "json"])
            .args(extra)
            .env("TIDEWIRE_LOG", if logs { "info" } else { "warn" })
            .stdout(if logs { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("start tidewire");
        // Owned at once, so a node that never gets ready is killed when the test fails.
        let node = NodeProcess { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = write!(s, "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
                let mut response = String::new();
                let _ = s.read_to_string(&mut response);
                response.starts_with("HTTP/1.1 200")
            });
            if ready {
                return node;
            }
            assert!(Instant::now() < deadline, "node did not become ready");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process node on the same Redis prefix, ready to publish.
async fn publishing_node(url: &str, prefix: &str) -> support::TestServer {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    let node = support::TestServer::with(move |c| {
        c.redis_url = Some(url);
        c.redis_prefix = prefix;
    })
    .await;
    while !node.hub.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_node_loses_nothing() {
    let url = redis_url();
    let prefix = format!("tw-test-kill-{:08x}", fastrand::u32(..));
    let mut a = NodeProcess::start(&url, &prefix);
    let b = NodeProcess::start(&url, &prefix);
    // The publisher is a third node, in process, on the same Redis prefix.
    let publisher = publishing_node(&url, &prefix).await;

    let client = Client::connect(Config::new(a.url()).urls([a.url(), b.url()]).token(support::token("kill")));
    let mut ticks = client.subscribe("ticks");
    loop {
        if let Some(Item::Event(SubscriptionEvent::Subscribed { .. })) = ticks.next().await {
            break;
        }
    }
    const TOTAL: u64 = 400;
    let hub = publisher.hub.clone();
    let publishing = tokio::spawn(async move {
        for n in 1..=TOTAL {
            let new = tidewire_protocol::NewPublication {
                channel: "ticks".into(),
                kind: "tick".into(),
                data: serde_json::json!(n),
                ..Default::default()
            };
            assert_eq!(hub.publish(new).await.unwrap().seq, n);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.child.kill().expect("SIGKILL node A");
    let _ = a.child.wait();

    let mut seqs = Vec::new();
    let mut recovered = Vec::new();
    while seqs.last() != Some(&TOTAL) {
        match tokio::time::timeout(Duration::from_secs(30), ticks.next()).await.expect("progress").expect("open") {
            Item::Message(delivery) => seqs.push(delivery.seq),
            Item::Event(SubscriptionEvent::Subscribed { recovered: r }) => recovered.push(r),
            Item::Event(_) => {}
        }
    }
    publishing.await.unwrap();
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "every seq exactly once, in order, across the kill");
    assert_eq!(recovered, vec![Some(true)], "the client recovered on the other node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_every_client_reconnects_elsewhere_and_loses_nothing() {
    use std::io::BufRead;
    let url = redis_url();
    let prefix = format!("tw-test-term-{:08x}", fastrand::u32(..));
    let mut a = NodeProcess::start_with(&url, &prefix, &["--drain-window", "1s"], true);
    let b = NodeProcess::start(&url, &prefix);
    let publisher = publishing_node(&url, &prefix).await;

    const CLIENTS: usize = 20;
    const TOTAL: u64 = 500;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut config = Config::new(a.url()).urls([a.url(), b.url()]).token(support::token(&format!("user{i}")));
        config.core.backoff.max = Duration::from_secs(2);
        let client = Client::connect(config);
        let mut ticks = client.subscribe("ticks");
        loop {
            if let Some(Item::Event(SubscriptionEvent::Subscribed { .. })) = ticks.next().await {
                break;
            }
        }
        clients.push((client, ticks));
    }
    let hub = publisher.hub.clone();
    let publishing = tokio::spawn(async move {
        for n in 1..=TOTAL {
            let new = tidewire_protocol::NewPublication {
                channel: "ticks".into(),
                kind: "tick".into(),
                data: serde_json::json!(n),
                ..Default::default()
            };
            hub.publish(new).await.unwrap();
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let terminated = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap().success());

    let mut handles = Vec::new();
    for (client, mut ticks) in clients {
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut recovered_at = None;
            while seqs.last() != Some(&TOTAL) {
                match tokio::time::timeout(Duration::from_secs(30), ticks.next())
                    .await
                    .expect("progress")
                    .expect("open")
                {
                    Item::Message(delivery) => seqs.push(delivery.seq),
                    Item::Event(SubscriptionEvent::Subscribed { recovered }) => {
                        assert_eq!(recovered, Some(true), "recovered on the other node");
                        recovered_at.get_or_insert_with(Instant::now);
                    }
                    Item::Event(_) => {}
                }
            }
            drop(client);
            (seqs, recovered_at)
        }));
    }
    for handle in handles {
        let (seqs, recovered_at) = handle.await.unwrap();
        assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "zero loss, in order");
        let took = recovered_at.expect("reconnected").duration_since(terminated);
        assert!(
            took < Duration::from_secs(1 + 2 + 2),
            "reconnected within the drain window plus the backoff window ({took:?})"
        );
    }
    publishing.await.unwrap();

    // Node A told every client to reconnect (1012) and exited cleanly.
    let status = a.child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends in exit 0");
    let logs = std::io::BufReader::new(a.child.stdout.take().unwrap());
    let restarts = logs
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("client disconnected") && line.contains("\"code\":1012"))
        .count();
    assert_eq!(restarts, CLIENTS, "every client got the service-restart code");
}
