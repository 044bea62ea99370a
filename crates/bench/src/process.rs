//! tidewire processes under test, and what the kernel says about them (CPU, memory).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "tidewire-bench-secret-of-32-bytes-or-more";

/// A running `tidewire serve`.
pub struct Node {
    child: Child,
    pub port: u16,
}

impl Node {
    /// A node with connection limits out of the way of the load.
    pub async fn start(bin: &PathBuf, extra: &[String], redis: Option<(&str, &str)>) -> Result<Node, String> {
        let generous = [
            "--max-connections",
            "1000000",
            "--max-connections-per-user",
            "1000000",
            "--max-connections-per-ip",
            "1000000",
        ];
        let generous = generous.iter().map(|a| (*a).to_owned());
        Node::spawn(bin, &generous.chain(extra.iter().cloned()).collect::<Vec<_>>(), redis).await
    }

    /// A node with every default limit (what the attack runs meet).
    pub async fn start_with_defaults(
        bin: &PathBuf,
        extra: &[String],
        redis: Option<(&str, &str)>,
    ) -> Result<Node, String> {
        Node::spawn(bin, extra, redis).await
    }

    async fn spawn(bin: &PathBuf, extra: &[String], redis: Option<(&str, &str)>) -> Result<Node, String> {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--jwt-secret", SECRET])
            .args(["--log-format", "json"])
            .env("TIDEWIRE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((url, prefix)) = redis {
            command.args(["--redis-url", url, "--redis-prefix", prefix]);
        }
        command.args(extra);
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let node = Node { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(response) = http_get(port, "/ready").await {
                if response.starts_with("HTTP/1.1 200") {
                    return Ok(node);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("tidewire on port {port} did not become ready"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> f64 {
        let (user, system) = cpu_times(&format!("/proc/{}/stat", self.pid()));
        user + system
    }

    /// CPU seconds spent in the kernel (system time).
    pub fn kernel_cpu_seconds(&self) -> f64 {
        cpu_times(&format!("/proc/{}/stat", self.pid())).1
    }

    /// (current, peak) resident memory in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user, system) of a process, from its `/proc/…/stat`.
fn cpu_times(stat_path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) / clock_ticks(), ticks(12) / clock_ticks())
}

/// The load generator's own CPU seconds.
pub fn own_cpu_seconds() -> f64 {
    let (user, system) = cpu_times("/proc/self/stat");
    user + system
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The `tidewire` binary: given, or next to this executable.
pub fn server_bin(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = here.with_file_name("tidewire");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("no tidewire binary at {} (build it, or pass --server-bin)", bin.display()))
    }
}

/// A minimal HTTP/1.1 GET on a fresh connection.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
