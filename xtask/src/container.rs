//! The container, tested without a Docker engine: the `Dockerfile`'s release target is
//! built here (static musl), checked to be statically linked, started the way the image
//! starts it (configuration from `TIDEWIRE_*` variables only, JSON logs on stdout), and
//! probed with `tidewire healthcheck`, the `HEALTHCHECK` the image uses; then SIGTERM
//! must end it with exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{self, cargo, output};
use crate::step;

const TARGET: &str = "x86_64-unknown-linux-musl";

/// The C compilers of the static build: musl's for the target (`cc`-built crates read
/// `CC_<target>`; librdkafka's own configure script reads `CC`), the host's for build
/// scripts. The `Dockerfile` sets the same.
const MUSL_ENV: &[(&str, &str)] =
    &[("CC_x86_64_unknown_linux_musl", "musl-gcc"), ("CC", "musl-gcc"), ("HOST_CC", "gcc")];

pub fn test() -> Result<(), String> {
    let root = crate::root();
    step("container: the Dockerfile's static release binary and its healthcheck");
    check_dockerfile(&std::fs::read_to_string(root.join("Dockerfile")).map_err(|e| format!("Dockerfile: {e}"))?)?;
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == TARGET) {
        process::run(&root, "rustup", &["target", "add", TARGET])?;
    }
    ensure_musl_gcc()?;
    process::run_with_env(
        &root,
        &cargo(),
        &[
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "-p",
            "tidewire-server",
            "--bin",
            "tidewire",
            "-p",
            "tidewire-desk",
            "--bin",
            "tidewire-desk",
        ],
        MUSL_ENV,
    )?;
    let binary = root.join("target").join(TARGET).join("release").join("tidewire");
    for built in [&binary, &root.join("target").join(TARGET).join("release").join("tidewire-desk")] {
        check_static(built)?;
        println!("    {} is statically linked", built.display());
    }

    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(&binary)
        .env_clear()
        .env("TIDEWIRE_LISTEN", &listen)
        .env("TIDEWIRE_JWT_SECRET", "container-test-secret-of-32-bytes-or-more")
        .env("TIDEWIRE_LOG_FORMAT", "json")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let result = probe(&binary, &listen, &mut child);
    if result.is_err() {
        let _ = child.kill();
    }
    let stdout = child.stdout.take();
    let status = child.wait().map_err(|e| e.to_string())?;
    result?;
    if !status.success() {
        return Err(format!("tidewire exited with {status} after SIGTERM"));
    }
    let lines: Vec<String> =
        stdout.map(|s| BufReader::new(s).lines().map_while(Result::ok).collect()).unwrap_or_default();
    if lines.is_empty() || lines.iter().any(|l| serde_json::from_str::<serde_json::Value>(l).is_err()) {
        return Err(format!("stdout is not JSON log lines: {lines:?}"));
    }
    println!("    healthcheck passed, {} JSON log lines, exit 0 on SIGTERM", lines.len());
    Ok(())
}

/// Fails unless `binary` links nothing dynamically (the image has no libc).
fn check_static(binary: &std::path::Path) -> Result<(), String> {
    let linkage = Command::new("ldd")
        .arg(binary)
        .output()
        .map(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned())
        .unwrap_or_default();
    if linkage.contains("statically linked") || linkage.contains("not a dynamic executable") {
        return Ok(());
    }
    Err(format!("{} is not static: {linkage}", binary.display()))
}

/// The C parts of some dependencies (ring, for the NATS client's TLS) need a musl C
/// compiler: Debian's `musl-tools`, installed through apt-get when run as root.
fn ensure_musl_gcc() -> Result<(), String> {
    if output("musl-gcc", &["--version"]).is_some() || output("which", &["musl-gcc"]).is_some() {
        return Ok(());
    }
    crate::tools::apt_install("musl-gcc", &["musl-tools"])
}

fn probe(binary: &std::path::Path, listen: &str, child: &mut std::process::Child) -> Result<(), String> {
    let url = format!("http://{listen}/health");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = Command::new(binary).args(["healthcheck", "--url", &url]).output().map_err(|e| e.to_string())?;
        if status.status.success() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("healthcheck never passed: {}", String::from_utf8_lossy(&status.stderr)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dead = Command::new(binary)
        .args(["healthcheck", "--url", "http://127.0.0.1:9/health"])
        .output()
        .map_err(|e| e.to_string())?;
    if dead.status.success() {
        return Err("healthcheck passed against a closed port".to_owned());
    }
    process::run(&crate::root(), "kill", &["-TERM", &child.id().to_string()])
}

/// The Dockerfile must keep the promises this test checks.
fn check_dockerfile(dockerfile: &str) -> Result<(), String> {
    let needs = [
        ("--target x86_64-unknown-linux-musl", "builds the static musl binary"),
        ("--bin tidewire-desk", "builds the demo binary"),
        ("/usr/local/bin/tidewire-desk", "ships the demo binary"),
        ("USER nonroot", "runs as non-root"),
        ("EXPOSE 7999", "exposes 7999"),
        (r#"CMD ["/usr/local/bin/tidewire", "healthcheck"]"#, "has a HEALTHCHECK using `tidewire healthcheck`"),
    ];
    for (text, promise) in needs {
        if !dockerfile.contains(text) {
            return Err(format!("the Dockerfile no longer {promise} (expected {text:?})"));
        }
    }
    Ok(())
}
