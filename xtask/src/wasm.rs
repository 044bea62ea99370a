//! `cargo xtask wasm`: the browser client as an npm package.
//!
//! Builds `tidewire-client` for `wasm32-unknown-unknown` with the size-first
//! `wasm-release` profile, runs wasm-bindgen (the pinned CLI) for `--target web` (the
//! package root) and `--target bundler` (`bundler/`), copies the generated protocol
//! types next to the `.d.ts` that refers to them, writes `package.json`, and reports
//! the gzipped size of the `.wasm` plus `.js`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::process::{self, cargo};
use crate::step;

pub const PACKAGE: &str = "tidewire-client";

/// The most the package (wasm + JS, each gzipped) may weigh; the build fails above it.
/// Lower it when the package shrinks, so a regression cannot hide under old slack. Raised
/// from 110 KiB by the 1 KiB resampled subscriptions (`minInterval`) cost, and from 111
/// KiB by the 4.9 KiB field deltas cost (rebuilding whole values from merge patches on
/// JSON text, without a JSON tree; `twiggy diff` of the two builds names what), and from
/// 116 KiB by the HTTP fallback's 6.5 KiB (the transport order in the core, the event
/// stream parser, the fetch transport and its JavaScript snippet, counted since).
pub const PACKAGE_BUDGET_BYTES: u64 = 123 * 1024;

/// Where the package is written.
pub fn package_dir() -> PathBuf {
    crate::root().join("target").join("npm").join(PACKAGE)
}

pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask wasm".to_owned());
    }
    build_package().map(|_| ())
}

/// Builds the package; returns its directory.
pub fn build_package() -> Result<PathBuf, String> {
    let root = crate::root();
    crate::tools::ensure_wasm_target()?;
    step("building tidewire-client for wasm32 (profile wasm-release)");
    process::run(
        &root,
        &cargo(),
        &[
            "build",
            "--locked",
            "-p",
            "tidewire-client",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "wasm-release",
        ],
    )?;
    let wasm = root.join("target/wasm32-unknown-unknown/wasm-release/tidewire_client.wasm");
    let (bindgen, _) = crate::tools::wasm_bindgen()?;
    let out = package_dir();
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    step("wasm-bindgen (web and bundler targets)");
    let bindgen = bindgen.to_str().unwrap_or("wasm-bindgen").to_owned();
    let wasm_path = wasm.to_str().unwrap_or_default();
    for (target, dir) in [("web", out.clone()), ("bundler", out.join("bundler"))] {
        process::run(
            &root,
            &bindgen,
            &[
                "--target",
                target,
                "--typescript",
                "--remove-name-section",
                "--remove-producers-section",
                "--out-name",
                "tidewire_client",
                "--out-dir",
                dir.to_str().unwrap_or_default(),
                wasm_path,
            ],
        )?;
        copy_types(&root.join("ts-bindings"), &dir.join("types"))?;
    }
    fs::write(out.join("package.json"), package_json()?).map_err(|e| format!("cannot write package.json: {e}"))?;
    let wasm_size = gzipped(&out.join("tidewire_client_bg.wasm"))?;
    // The JavaScript is the glue plus the snippets it imports (the HTTP transport).
    let mut js_size = gzipped(&out.join("tidewire_client.js"))?;
    for snippet in files_under(&out.join("snippets"))? {
        if snippet.extension().is_some_and(|e| e == "js") {
            js_size += gzipped(&snippet)?;
        }
    }
    let kib = |bytes: u64| bytes as f64 / 1024.0;
    let total = wasm_size + js_size;
    println!(
        "    package: {}\n    gzipped: {:.1} KiB wasm + {:.1} KiB js = {:.1} KiB (budget {:.1} KiB)",
        out.display(),
        kib(wasm_size),
        kib(js_size),
        kib(total),
        kib(PACKAGE_BUDGET_BYTES)
    );
    if total > PACKAGE_BUDGET_BYTES {
        return Err(format!(
            "the client package weighs {:.1} KiB gzipped, over its budget of {:.1} KiB (xtask/src/wasm.rs)",
            kib(total),
            kib(PACKAGE_BUDGET_BYTES)
        ));
    }
    Ok(out)
}

fn copy_types(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "ts") {
            let target = to.join(path.file_name().unwrap_or_default());
            fs::copy(&path, &target).map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn package_json() -> Result<String, String> {
    let manifest = fs::read_to_string(crate::root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    let version = manifest
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.trim().strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_owned())
        .ok_or("no version in [workspace.package]")?;
    let package = serde_json::json!({
        "name": PACKAGE,
        "version": version,
        "description": "tidewire browser client: typed, batched, authenticated real-time channels \
                        over WebSocket (wasm)",
        "license": "MIT OR Apache-2.0",
        "type": "module",
        "main": "./tidewire_client.js",
        "types": "./tidewire_client.d.ts",
        "exports": {
            ".": { "types": "./tidewire_client.d.ts", "default": "./tidewire_client.js" },
            "./bundler": { "types": "./bundler/tidewire_client.d.ts", "default": "./bundler/tidewire_client.js" },
            "./types/*": "./types/*"
        },
        "files": ["tidewire_client*", "types/", "bundler/", "snippets/"],
        "sideEffects": ["./bundler/tidewire_client.js", "./snippets/*"]
    });
    serde_json::to_string_pretty(&package).map(|s| s + "\n").map_err(|e| e.to_string())
}

/// Every file below `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return Ok(files) };
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Size of a file after gzip -9.
fn gzipped(path: &Path) -> Result<u64, String> {
    let out = std::process::Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!("gzip failed on {}", path.display()));
    }
    Ok(out.stdout.len() as u64)
}
