//! The tokio driver against a real tidewire server on loopback.

#![cfg(not(target_arch = "wasm32"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tidewire_client::core::{ConnectionState, SubscriptionEvent, TokenError};
use tidewire_client::native::{Client, Config, Item};
use tidewire_protocol::NewPublication;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tidewire_server::{Hub, server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "native-secret-of-at-least-32-bytes";

fn token(ttl: u64) -> String {
    mint_hs256(SECRET, &Claims { sub: "native".into(), exp: unix_now() + ttl, ..Claims::default() }).unwrap()
}

fn hub(configure: impl FnOnce(&mut tidewire_server::Config)) -> Hub {
    let mut config = tidewire_server::Config::for_tests(SECRET);
    config.drain_window = Duration::from_millis(100);
    configure(&mut config);
    Hub::new(config).unwrap()
}

/// Serves `hub` on `listener` until the returned sender fires.
fn serve(listener: TcpListener, hub: &Hub) -> (oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, hub.clone(), async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn tick(hub: &Hub, channel: &str, n: u64) -> u64 {
    hub.publish(NewPublication {
        channel: channel.into(),
        kind: "tick".into(),
        data: serde_json::json!(n),
        ..Default::default()
    })
    .await
    .unwrap()
    .seq
}

async fn next_event(subscription: &mut tidewire_client::native::Subscription) -> SubscriptionEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("an event in time")
            .expect("open")
        {
            Item::Event(event) => return event,
            Item::Message(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_on_the_same_port_loses_nothing() {
    // The hub (channels, history) outlives its listener, as it would with a shared broker.
    let hub = hub(|c| {
        c.history_size = 10_000;
        c.max_queued_batches = 100;
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, first) = serve(listener, &hub);

    let client = Client::connect(Config::new(format!("ws://{addr}/ws")).token(token(3600)));
    let mut ticks = client.subscribe("ticks");
    assert_eq!(next_event(&mut ticks).await, SubscriptionEvent::Subscribing);
    assert_eq!(next_event(&mut ticks).await, SubscriptionEvent::Subscribed { recovered: None });

    const TOTAL: u64 = 800;
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                assert_eq!(tick(&hub, "ticks", n).await, n);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let restart = {
        let hub = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let _ = stop.send(());
            first.await.unwrap().unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            let listener = TcpListener::bind(addr).await.expect("the same port again");
            serve(listener, &hub)
        })
    };

    let mut seqs = Vec::new();
    let mut recovered = Vec::new();
    while seqs.last() != Some(&TOTAL) {
        match tokio::time::timeout(Duration::from_secs(20), ticks.next()).await.expect("progress").expect("open") {
            Item::Message(delivery) => {
                assert!(!delivery.snapshot);
                seqs.push(delivery.seq);
            }
            Item::Event(SubscriptionEvent::Subscribed { recovered: r }) => recovered.push(r),
            Item::Event(_) => {}
        }
    }
    publisher.await.unwrap();
    let (_stop_second, _second) = restart.await.unwrap();
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "every seq exactly once, in order");
    assert_eq!(recovered, vec![Some(true)], "one reconnect, recovered");
    assert_eq!(client.state().borrow().state, ConnectionState::Connected);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_means_recovered_false_and_a_new_stream() {
    let first_hub = hub(|_| {});
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, first) = serve(listener, &first_hub);
    let client = Client::connect(Config::new(format!("ws://{addr}/ws")).token(token(3600)));
    let mut ticks = client.subscribe("ticks");
    assert_eq!(next_event(&mut ticks).await, SubscriptionEvent::Subscribing);
    assert_eq!(next_event(&mut ticks).await, SubscriptionEvent::Subscribed { recovered: None });
    for n in 1..=5 {
        tick(&first_hub, "ticks", n).await;
    }
    for n in 1..=5 {
        assert_eq!(ticks.next_message().await.unwrap().seq, n);
    }
    let _ = stop.send(());
    first.await.unwrap().unwrap();

    // A new process: history gone, another epoch.
    let second_hub = hub(|_| {});
    tick(&second_hub, "ticks", 1).await;
    let (_stop, _second) = serve(TcpListener::bind(addr).await.unwrap(), &second_hub);
    let mut events = Vec::new();
    loop {
        let event = next_event(&mut ticks).await;
        events.push(event.clone());
        if matches!(event, SubscriptionEvent::Subscribed { .. }) {
            break;
        }
    }
    assert_eq!(events.last(), Some(&SubscriptionEvent::Subscribed { recovered: Some(false) }));
    tick(&second_hub, "ticks", 2).await;
    assert_eq!(ticks.next_message().await.unwrap().seq, 2, "live again from the new head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_provider_keeps_a_short_lived_session_alive() {
    let hub = hub(|_| {});
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _task) = serve(listener, &hub);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = calls.clone();
    let client = Client::connect(Config::new(format!("ws://{addr}/ws")).token_provider(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, TokenError>(token(3)) }
    }));
    client.connected().await;
    let mut status = client.state();
    // Tokens live 3 s; refreshed in band, the connection outlives several of them.
    let dropped =
        tokio::time::timeout(Duration::from_secs(7), status.wait_for(|s| s.state != ConnectionState::Connected)).await;
    assert!(dropped.is_err(), "the connection never dropped");
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 3, "fetched at connect and before each expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_stops_without_retrying() {
    let hub = hub(|_| {});
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _task) = serve(listener, &hub);
    let client = Client::connect(Config::new(format!("ws://{addr}/ws")).token("not-a-token"));
    let mut status = client.state();
    let stopped = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| s.stopped.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(stopped.state, ConnectionState::Disconnected);
    assert!(
        matches!(stopped.stopped, Some(tidewire_client::core::StopReason::Terminal { code: 4501, .. })),
        "{stopped:?}"
    );
}

/// A TCP proxy in the test that can cut or stall every connection passing through it.
struct Proxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (s, g) = (stalled.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                let born = g.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, s.clone(), g.clone(), born));
                tokio::spawn(pump(sr, cw, s.clone(), g.clone(), born));
            }
        });
        Proxy { port, stalled, generation }
    }

    /// Cuts every current connection (new ones pass).
    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stalls every connection: bytes are held, nothing is closed, like a dead route.
    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Lets new connections through again (stalled ones stay dead once cut).
    fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let alive = || generation.load(Ordering::SeqCst) == born;
        let n = tokio::select! {
            n = from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if !alive() { return; }
                continue;
            }
        };
        while stalled.load(Ordering::SeqCst) && alive() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !alive() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn every_seq_once(
    ticks: &mut tidewire_client::native::Subscription,
    total: u64,
) -> (Vec<u64>, Vec<Option<bool>>) {
    let mut seqs = Vec::new();
    let mut recovered = Vec::new();
    while seqs.last() != Some(&total) {
        match tokio::time::timeout(Duration::from_secs(20), ticks.next()).await.expect("progress").expect("open") {
            Item::Message(delivery) => seqs.push(delivery.seq),
            Item::Event(SubscriptionEvent::Subscribed { recovered: r }) => recovered.push(r),
            Item::Event(_) => {}
        }
    }
    (seqs, recovered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_and_a_stalled_link_are_both_survived_without_loss() {
    let hub = hub(|c| c.heartbeat_interval = Duration::from_millis(400));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _task) = serve(listener, &hub);
    let proxy = Proxy::start(addr).await;
    let mut config = Config::new(format!("ws://127.0.0.1:{}/ws", proxy.port)).token(token(3600));
    config.core.heartbeat_grace = Duration::from_millis(400);
    config.core.backoff.max = Duration::from_millis(500);
    let client = Client::connect(config);
    let mut ticks = client.subscribe("ticks");
    assert_eq!(next_event(&mut ticks).await, SubscriptionEvent::Subscribing);
    assert_eq!(next_event(&mut ticks).await, SubscriptionEvent::Subscribed { recovered: None });

    const TOTAL: u64 = 600;
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                tick(&hub, "ticks", n).await;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };
    // A cut: the client sees the connection drop at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    // A stall: nothing arrives and nothing closes; only the heartbeat deadline notices.
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.stall();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    proxy.resume();

    let (seqs, recovered) = every_seq_once(&mut ticks, TOTAL).await;
    publisher.await.unwrap();
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "every seq exactly once, in order");
    assert_eq!(recovered, vec![Some(true), Some(true)], "recovered after the cut and after the stall");
}

/// Publishes `total` through a client connected to a server whose command limit is
/// `rate`/s with a bucket of `burst`, and checks that every one arrives: the client paces
/// to what the server announced, so the limiter refuses none.
async fn paced_publishes_all_arrive(rate: u32, burst: u32, total: u64) {
    let hub = hub(|c| {
        c.commands_per_second = rate;
        c.command_burst = burst;
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _task) = serve(listener, &hub);
    let url = format!("ws://{addr}/ws");
    let watcher = Client::connect(Config::new(url.clone()).token(token(60)));
    let mut ticks = watcher.subscribe("paced");
    while !matches!(next_event(&mut ticks).await, SubscriptionEvent::Subscribed { .. }) {}
    let publisher_token = mint_hs256(
        SECRET,
        &Claims { sub: "pub".into(), exp: unix_now() + 60, publish: Some(vec!["paced".into()]), ..Claims::default() },
    )
    .unwrap();
    let publisher = Client::connect(Config::new(url).token(publisher_token));
    let mut errors = publisher.errors();
    publisher.connected().await;
    for n in 0..total {
        publisher.publish(NewPublication {
            channel: "paced".into(),
            kind: "tick".into(),
            data: serde_json::json!(n),
            ..Default::default()
        });
    }
    let (seqs, _) = every_seq_once(&mut ticks, total).await;
    assert_eq!(seqs.len() as u64, total);
    assert!(errors.try_recv().is_err(), "no publish was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_beyond_the_server_command_rate_wait_instead_of_being_refused() {
    paced_publishes_all_arrive(50, 10, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_across_cut_links_arrive_exactly_once() {
    let hub = hub(|c| c.heartbeat_interval = Duration::from_millis(400));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _task) = serve(listener, &hub);
    // The watcher reads straight from the server; the publisher goes through a proxy that
    // cuts its link while publishes and their answers are on the wire.
    let watcher = Client::connect(Config::new(format!("ws://{addr}/ws")).token(token(3600)));
    let mut orders = watcher.subscribe("orders");
    while !matches!(next_event(&mut orders).await, SubscriptionEvent::Subscribed { .. }) {}
    let proxy = Proxy::start(addr).await;
    let publisher_token = mint_hs256(
        SECRET,
        &Claims {
            sub: "pub".into(),
            exp: unix_now() + 3600,
            publish: Some(vec!["orders".into()]),
            ..Claims::default()
        },
    )
    .unwrap();
    let mut config = Config::new(format!("ws://127.0.0.1:{}/ws", proxy.port)).token(publisher_token);
    config.core.backoff.max = Duration::from_millis(300);
    let publisher = Arc::new(Client::connect(config));
    publisher.connected().await;
    const TOTAL: u64 = 500;
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for n in 0..TOTAL {
                publisher.publish(NewPublication {
                    channel: "orders".into(),
                    kind: "order".into(),
                    data: serde_json::json!(n),
                    ..Default::default()
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        proxy.cut();
    }
    publishing.await.unwrap();
    let mut seen = Vec::new();
    while (seen.len() as u64) < TOTAL {
        match tokio::time::timeout(Duration::from_secs(20), orders.next())
            .await
            .expect("every order arrives")
            .expect("open")
        {
            Item::Message(delivery) => {
                seen.push(serde_json::from_str::<serde_json::Value>(&delivery.json).unwrap()["data"].as_u64().unwrap())
            }
            Item::Event(_) => {}
        }
    }
    // Anything sent twice would follow within moments.
    if let Ok(Some(Item::Message(extra))) = tokio::time::timeout(Duration::from_millis(500), orders.next()).await {
        panic!("a publish arrived twice: {}", extra.json);
    }
    assert_eq!(seen, (0..TOTAL).collect::<Vec<_>>(), "every publish exactly once, in order, across four cut links");
}
