//! The `tidewire` binary as an operator runs it: `token`, `serve` with JSON logs,
//! `healthcheck` against the live server, and SIGTERM → clients closed with 1012, exit 0.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Client;

const BIN: &str = env!("CARGO_BIN_EXE_tidewire");

/// A port nothing listens on, never the same twice in this process: the tests run in
/// parallel, and two of them handed the same just-freed port would start their servers
/// on it (one fails to bind, and its test talks to the other's server).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Running {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &listen,
            "--jwt-secret",
            "bin-secret-of-at-least-thirty-two-bytes",
            "--log-format",
            "json",
            "--drain-window",
            "300ms",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tidewire");
    let running = Running { child, port };
    running.wait_listening();
    running
}

impl Running {
    /// Waits until the server accepts connections.
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tidewire did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn mint(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["token", "--jwt-secret", "bin-secret-of-at-least-thirty-two-bytes"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn token_subcommand_mints_what_the_server_accepts() {
    let token = mint(&["--sub", "alice", "--channels", "routing-metrics,lp-*", "--publish", "alerts", "--ttl", "1h"]);
    let mut config = tidewire_server::Config::for_tests("bin-secret-of-at-least-thirty-two-bytes");
    config.jwt_secret = Some("bin-secret-of-at-least-thirty-two-bytes".into());
    let verifier = tidewire_server::auth::Verifier::from_config(&config).unwrap();
    let grant = verifier.verify(&token).unwrap();
    assert_eq!(grant.user, "alice");
    assert_eq!(grant.subscribe_access("lp-performance"), tidewire_protocol::channel::Access::Allowed);
    assert_eq!(grant.subscribe_access("alerts"), tidewire_protocol::channel::Access::Forbidden);
    assert_eq!(grant.publish_access("alerts"), tidewire_protocol::channel::Access::Allowed);
    let left = grant.expires_at - tidewire_server::auth::unix_now();
    assert!((3590..=3600).contains(&left));

    let missing = Command::new(BIN).args(["token", "--sub", "a"]).env_remove("TIDEWIRE_JWT_SECRET").output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--jwt-secret"));
}

#[test]
fn healthcheck_against_a_live_server_and_a_dead_port() {
    let server = start(&[]);
    let url = format!("http://127.0.0.1:{}/health", server.port);
    let ok = Command::new(BIN).args(["healthcheck", "--url", &url]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"status\":\"ok\""));
    let dead = format!("http://127.0.0.1:{}/health", free_port());
    let failed = Command::new(BIN).args(["healthcheck", "--url", &dead]).output().unwrap();
    assert!(!failed.status.success());
}

#[test]
fn sigterm_drains_clients_with_1012_and_exits_0() {
    let mut server = start(&[]);
    let token = mint(&["--sub", "u"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("ws://127.0.0.1:{}/ws?token={token}&channels=alerts", server.port);
    let mut clients = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut client = Client::connect(&url).await;
            client.expect_type("subscribed").await;
            clients.push(client);
        }
        clients
    });
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    runtime.block_on(async {
        for client in &mut clients {
            assert_eq!(client.closed().await.code, 1012);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tidewire did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");

    // JSON logs on stdout, with connects, disconnects and the drain, and no token.
    let stdout = server.child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout).lines().map_while(Result::ok).collect();
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed.get("level").is_some());
        assert!(!line.contains(&token), "a token leaked into the logs");
    }
    let text = lines.join("\n");
    for event in ["tidewire listening", "client connected", "shutting down", "client disconnected", "drained"] {
        assert!(text.contains(event), "no {event:?} in the logs:\n{text}");
    }
}

/// The (soft, hard) open-file limits of a process, from /proc.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| if w == "unlimited" { Some(u64::MAX) } else { w.parse().ok() })
        .collect();
    (numbers[0], numbers[1])
}

/// Every connection is a file: a server started under a low soft limit (1024 is a
/// common default) raises it to the hard limit rather than refusing connections early.
#[cfg(target_os = "linux")]
#[test]
fn serve_raises_the_open_file_limit_to_the_hard_limit() {
    let (_, hard) = open_file_limits(std::process::id());
    assert!(hard > 256, "this test needs a hard open-file limit above 256 (it is {hard})");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new("sh")
        .args([
            "-c",
            r#"ulimit -Sn 256 && exec "$0" serve --listen "$1" --jwt-secret bin-secret-of-at-least-thirty-two-bytes"#,
            BIN,
            &listen,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidewire through sh");
    let running = Running { child, port };
    running.wait_listening();
    assert_eq!(open_file_limits(running.child.id()), (hard, hard));
}
