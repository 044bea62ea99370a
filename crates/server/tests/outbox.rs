//! The PostgreSQL outbox source against the machine's PostgreSQL (127.0.0.1:5432,
//! database `test`, trust auth), a table of its own per test.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;
use tidewire_server::ingest::{self, IngestConfig};
use tokio_postgres::NoTls;

const URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn unique(name: &str) -> String {
    format!("tw_{name}_{:08x}", fastrand::u32(..))
}

async fn database() -> tokio_postgres::Client {
    let connect = tokio_postgres::connect(URL, NoTls);
    let (client, connection) = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(pair)) => pair,
        _ => panic!("PostgreSQL is not reachable at {URL}: start it (`service postgresql start`)"),
    };
    tokio::spawn(connection);
    client
}

fn config(table: &str, extra: &str) -> IngestConfig {
    let config: IngestConfig = toml::from_str(&format!(
        r##"
        [[postgres]]
        name = "outbox"
        url = "{URL}"
        table = "{table}"
        poll_interval = "200ms"
        reconnect_delay = "100ms"
        {extra}

        [[route]]
        when_field = "assessmentId"
        channel = "assessments.{{assessmentId}}"

        [[route]]
        when_key = "orders.*"
        channel = "orders"
        key = "{{orderId}}"
        "##
    ))
    .unwrap();
    config.check().unwrap();
    config
}

/// Waits until the source created its table.
async fn table_ready(db: &tokio_postgres::Client, table: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.unwrap();
        if row.get::<_, bool>(0) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the source did not create {table}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

async fn drop_tables(db: &tokio_postgres::Client, table: &str) {
    db.batch_execute(&format!("DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_dead;")).await.unwrap();
}

async fn listener(server: &TestServer, channels: &str) -> Client {
    let mut client = server.connect(Transport::WebSocket, Some(&token("outbox-reader")), channels).await;
    client.next().await;
    for _ in channels.split(',') {
        client.expect_type("subscribed").await;
    }
    client
}

/// An outbox row as a producer writes it: channel, routing key, type, key, op, data.
type OutboxRow<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);

#[tokio::test]
async fn rows_are_published_in_order_by_channel_or_by_route_then_removed_and_bad_rows_dead_lettered() {
    let db = database().await;
    let table = unique("routes");
    let server = TestServer::start().await;
    ingest::start(&server.hub, config(&table, ""));
    table_ready(&db, &table).await;
    let mut orders = listener(&server, "orders,lp-performance,assessments.a-7").await;

    let insert = format!(
        "INSERT INTO {table} (channel, routing_key, type, key, op, data) VALUES ($1, $2, $3, $4, $5, ($6::text)::jsonb)"
    );
    let rows: [OutboxRow; 7] = [
        (Some("lp-performance"), "", Some("lp-metrics"), Some("LMAX"), None, r#"{"lpName":"LMAX","latencyMs":12}"#),
        (None, "orders.created", Some("order"), None, None, r#"{"orderId":"o-1","qty":5}"#),
        (None, "nowhere", None, None, None, r#"{"x":1}"#),
        (Some("bad channel"), "", Some("x"), None, None, "{}"),
        (Some("lp-performance"), "", None, None, None, "{}"),
        (None, "", Some("assessment"), None, None, r#"{"assessmentId":"a-7","score":0.9}"#),
        (Some("lp-performance"), "", Some("lp-metrics"), Some("LMAX"), Some("delete"), "null"),
    ];
    for (channel, routing_key, kind, key, op, data) in rows {
        db.execute(&insert, &[&channel, &routing_key, &kind, &key, &op, &data]).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        let message = orders.next().await;
        got.push((message["channel"].as_str().unwrap().to_owned(), message["type"].as_str().unwrap().to_owned()));
        if message["channel"] == "orders" {
            assert_eq!((message["key"].as_str(), message["data"]["qty"].as_u64()), (Some("o-1"), Some(5)));
        }
        if got.len() == 4 {
            assert_eq!(message["op"], "delete", "the last row deletes the key: {message}");
        }
    }
    let expected: Vec<(String, String)> = [
        ("lp-performance", "lp-metrics"),
        ("orders", "order"),
        ("assessments.a-7", "assessment"),
        ("lp-performance", "lp-metrics"),
    ]
    .iter()
    .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
    .collect();
    assert_eq!(got, expected, "in id order, the bad rows skipped");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count(&db, &table).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "published rows are removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead =
        db.query(&format!("SELECT routing_key, channel, reason FROM {table}_dead ORDER BY id"), &[]).await.unwrap();
    let reasons: Vec<String> = dead.iter().map(|r| r.get::<_, String>(2)).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("no route"), "{reasons:?}");
    assert!(reasons[1].contains("bad channel") || reasons[1].contains("not allowed"), "{reasons:?}");
    assert!(reasons[2].contains("needs a type"), "{reasons:?}");
    drop_tables(&db, &table).await;
}

/// Inserts rows `from..=to` on channel `ticks`, each `{"n": n}`.
async fn insert_ticks(db: &tokio_postgres::Client, table: &str, from: i64, to: i64) {
    let insert = format!(
        "INSERT INTO {table} (channel, type, data) SELECT 'ticks', 'tick', jsonb_build_object('n', n) \
         FROM generate_series($1::bigint, $2::bigint) AS n"
    );
    db.execute(&insert, &[&from, &to]).await.unwrap();
}

#[tokio::test]
async fn two_nodes_share_one_table_and_nothing_is_published_twice_or_lost_across_a_restart() {
    let db = database().await;
    let table = unique("shared");
    let prefix = format!("tw-test-outbox-{:08x}", fastrand::u32(..));
    let extra = "batch = 25";
    // Both nodes share their channels through Redis: a subscriber on the second sees
    // what either published.
    let mut first = redis_node(&prefix).await;
    let second = redis_node(&prefix).await;
    ingest::start(&first.hub, config(&table, extra));
    ingest::start(&second.hub, config(&table, extra));
    table_ready(&db, &table).await;
    let mut reader = listener(&second, "ticks").await;

    insert_ticks(&db, &table, 1, 600).await;
    let mut seen = BTreeMap::new();
    collect_numbered(&mut reader, &mut seen, 200).await;
    // The first node stops part way; the second takes what is left.
    first.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut first.task).await;
    insert_ticks(&db, &table, 601, 1000).await;
    collect_numbered(&mut reader, &mut seen, 1000).await;

    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=1000).collect::<Vec<_>>(), "every row, once");
    assert_eq!(count(&db, &table).await, 0);
    let worked = |server: &TestServer| {
        metric_sum(server, "tidewire_ingest_events_total", &["outcome=\"published\""]).unwrap_or(0)
    };
    let (by_first, by_second) = (worked(&first), worked(&second));
    assert_eq!(by_first + by_second, 1000, "each row published by one node");
    assert!(by_first >= 25 && by_second >= 25, "both nodes took turns: {by_first} + {by_second}");
    drop_tables(&db, &table).await;
}

#[tokio::test]
async fn a_row_the_node_cannot_take_is_retried_then_dead_lettered_without_blocking_the_rest() {
    let db = database().await;
    let table = unique("poison");
    // One publication per minute on `limited`: the second row there is refused (429,
    // "try again"), three times, then dead-lettered; the rows behind it go out.
    let server = TestServer::with(|c| {
        c.publish_rate_limits = vec!["limited=1/1".parse().unwrap()];
    })
    .await;
    ingest::start(&server.hub, config(&table, "max_attempts = 3"));
    table_ready(&db, &table).await;
    let mut client = listener(&server, "limited,after").await;
    db.batch_execute(&format!(
        "INSERT INTO {table} (channel, type, data) VALUES
           ('limited', 'x', '{{\"n\":1}}'), ('limited', 'x', '{{\"n\":2}}'), ('after', 'x', '{{\"n\":3}}')"
    ))
    .await
    .unwrap();
    assert_eq!(client.next().await["data"]["n"], 1);
    let after = client.next().await;
    assert_eq!((after["channel"].as_str(), after["data"]["n"].as_u64()), (Some("after"), Some(3)));
    // Published before its transaction (which also moved the poison row) commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count(&db, &format!("{table}_dead")).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the poison row was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = db.query_one(&format!("SELECT attempts, reason FROM {table}_dead"), &[]).await.unwrap();
    let reason: String = dead.get(1);
    assert!(reason.contains("after 3 attempts") && reason.contains("RATE_LIMIT_EXCEEDED"), "{reason}");
    assert_eq!(count(&db, &table).await, 0);
    drop_tables(&db, &table).await;
}

#[test]
fn table_names_are_checked_when_the_file_is_read() {
    let bad: Result<IngestConfig, _> =
        toml::from_str(&format!("[[postgres]]\nurl = \"{URL}\"\ntable = \"outbox; drop table x\"\n"));
    assert!(bad.unwrap().check().unwrap_err().contains("lowercase identifier"));
}

/// A PostgreSQL of the test's own (so it can be stopped), on a free port, run as the
/// `postgres` user (initdb refuses root).
struct OwnPostgres {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

fn postgres_bin(name: &str) -> std::path::PathBuf {
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries must be installed for this test (Debian package postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql/*/bin (Debian package postgresql)"))
}

fn as_postgres(program: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(unique("pgdata"));
        std::fs::create_dir_all(&dir).unwrap();
        let chown = std::process::Command::new("chown").args(["postgres:postgres"]).arg(&dir).status();
        assert!(chown.is_ok_and(|s| s.success()), "cannot hand {} to the postgres user (run as root)", dir.display());
        let initdb = as_postgres(&postgres_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("runuser and initdb run this test's PostgreSQL");
        assert!(initdb.success(), "initdb failed");
        let mut own = OwnPostgres { port, dir, child: None };
        own.restart();
        own
    }

    fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    fn restart(&mut self) {
        let child = as_postgres(&postgres_bin("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("runuser starts this test's PostgreSQL");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "own PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it at once (the server's fast shutdown: clients are cut off).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_postgres(&postgres_bin("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "own PostgreSQL did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect_to(url: &str) -> tokio_postgres::Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((client, connection)) = tokio_postgres::connect(url, NoTls).await {
            tokio::spawn(connection);
            return client;
        }
        assert!(tokio::time::Instant::now() < deadline, "cannot connect to {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_database_restart_is_ridden_out_and_nothing_is_lost_or_doubled() {
    let mut own = OwnPostgres::start();
    let table = unique("restart");
    let server = TestServer::start().await;
    let config: IngestConfig = toml::from_str(&format!(
        "[[postgres]]\nurl = \"{}\"\ntable = \"{table}\"\npoll_interval = \"200ms\"\nreconnect_delay = \"100ms\"\n\
         max_reconnect_wait = \"500ms\"\n",
        own.url()
    ))
    .unwrap();
    ingest::start(&server.hub, config);
    let db = connect_to(&own.url()).await;
    table_ready(&db, &table).await;
    let mut reader = listener(&server, "ticks").await;
    insert_ticks(&db, &table, 1, 100).await;
    let mut seen = BTreeMap::new();
    collect_numbered(&mut reader, &mut seen, 100).await;
    drop(db);
    own.stop();
    own.restart();
    let db = connect_to(&own.url()).await;
    insert_ticks(&db, &table, 101, 200).await;
    collect_numbered(&mut reader, &mut seen, 200).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>(), "every row");
    assert!(seen.values().all(|&n| n == 1), "none twice");
    assert_eq!(count(&db, &table).await, 0);
}
