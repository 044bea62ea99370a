//! The outside tools the tasks need, installed on demand.
//!
//! - The wasm-bindgen CLI (and its test runner) must be exactly the version of the
//!   `wasm-bindgen` crate in `Cargo.lock`; it is built from crates.io into
//!   `target/tools` once, never installed globally.
//! - Chromium and ChromeDriver come from the system's packages (`apt-get`, as root).
//! - `tansu`, the Kafka-protocol broker the Kafka source's tests start, is built from
//!   crates.io once per machine into cargo's own bin directory (outside the checkout, so
//!   a fresh clone does not build it again: it takes minutes).

use std::path::{Path, PathBuf};

use crate::process::{self, cargo, output};

/// The `wasm-bindgen` version pinned in `Cargo.lock`.
pub fn wasm_bindgen_version() -> Result<String, String> {
    let lock = std::fs::read_to_string(crate::root().join("Cargo.lock"))
        .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(version) = lines.next().and_then(|l| l.trim().strip_prefix("version = \""))
        {
            return Ok(version.trim_end_matches('"').to_owned());
        }
    }
    Err("wasm-bindgen is not in Cargo.lock".to_owned())
}

/// Where project-local tools live.
pub fn tools_dir() -> PathBuf {
    crate::root().join("target").join("tools")
}

/// Paths of `wasm-bindgen` and `wasm-bindgen-test-runner`, built if missing or stale.
pub fn wasm_bindgen() -> Result<(PathBuf, PathBuf), String> {
    let version = wasm_bindgen_version()?;
    let bin = tools_dir().join("bin");
    let cli = bin.join("wasm-bindgen");
    let runner = bin.join("wasm-bindgen-test-runner");
    let installed = output(cli.to_str().unwrap_or_default(), &["--version"]).unwrap_or_default();
    if installed.split_whitespace().nth(1) != Some(version.as_str()) || !runner.exists() {
        println!("    building wasm-bindgen-cli {version} into target/tools (once)");
        let root = tools_dir();
        process::run(
            &crate::root(),
            &cargo(),
            &[
                "install",
                "wasm-bindgen-cli",
                "--version",
                &version,
                "--root",
                root.to_str().unwrap_or("target/tools"),
                "--force",
            ],
        )?;
    }
    Ok((cli, runner))
}

/// The tansu version the Kafka tests were written against.
const TANSU_VERSION: &str = "0.6.0";

/// The `tansu` broker: `TIDEWIRE_TANSU` if set, else cargo's bin directory, built there
/// (with the memory storage the tests use) when missing or of another version.
pub fn tansu() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TIDEWIRE_TANSU") {
        return Ok(path.into());
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let binary = cargo_home.join("bin").join("tansu");
    let installed = output(binary.to_str().unwrap_or_default(), &["--version"]).unwrap_or_default();
    if !installed.split_whitespace().any(|word| word == TANSU_VERSION) {
        println!(
            "    building the Kafka-protocol broker tansu {TANSU_VERSION} into {} (once per machine)",
            binary.display()
        );
        process::run(
            &crate::root(),
            &cargo(),
            &["install", "tansu", "--version", TANSU_VERSION, "--locked", "--features", "dynostore", "--force"],
        )?;
    }
    Ok(binary)
}

/// Installs Debian packages with apt-get when run as root; otherwise says which to
/// install, naming the `missing` tool.
pub fn apt_install(missing: &str, packages: &[&str]) -> Result<(), String> {
    let list = packages.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(" and ");
    if output("id", &["-u"]).map(|u| u.trim() == "0") != Some(true) {
        return Err(format!("{missing} is missing: install the package(s) {list} (as root), then run again"));
    }
    println!("    installing {} (apt-get)", packages.join(" and "));
    process::run(&crate::root(), "apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend_from_slice(packages);
    process::run_with_env(&crate::root(), "apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

/// Chromium and ChromeDriver, installed from the system's packages when missing.
pub fn chromium() -> Result<(PathBuf, PathBuf), String> {
    let browser = Path::new("/usr/bin/chromium");
    let driver = Path::new("/usr/bin/chromedriver");
    if browser.exists() && driver.exists() {
        return Ok((browser.to_path_buf(), driver.to_path_buf()));
    }
    apt_install("Chromium", &["chromium", "chromium-driver"])?;
    if browser.exists() && driver.exists() {
        Ok((browser.to_path_buf(), driver.to_path_buf()))
    } else {
        Err("apt-get ran, but /usr/bin/chromium or /usr/bin/chromedriver is still missing".to_owned())
    }
}

/// Adds the wasm target through rustup when it is missing.
pub fn ensure_wasm_target() -> Result<(), String> {
    let installed = crate::process::output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed.lines().any(|line| line.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    println!("    installing the wasm32-unknown-unknown target");
    crate::process::run(&crate::root(), "rustup", &["target", "add", "wasm32-unknown-unknown"])
}

/// Installs `web/`'s npm packages from the lockfile when they are missing or stale.
pub fn ensure_npm_packages(web: &std::path::Path) -> Result<(), String> {
    let lock = web.join("package-lock.json");
    let stamp = web.join("node_modules").join(".package-lock.json");
    let fresh = match (std::fs::metadata(&lock), std::fs::metadata(&stamp)) {
        (Ok(lock), Ok(stamp)) => match (lock.modified(), stamp.modified()) {
            (Ok(lock), Ok(stamp)) => stamp >= lock,
            _ => false,
        },
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    println!("    installing npm packages for web/ (npm ci)");
    crate::process::run(web, "npm", &["ci", "--no-audit", "--no-fund"])
}
