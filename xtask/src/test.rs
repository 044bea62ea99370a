//! `cargo xtask test`: the whole suite, exactly what CI runs.
//!
//! Steps, in order: the generated TypeScript is current; every Rust test passes; the
//! protocol crate builds for `wasm32-unknown-unknown`; the TypeScript example that
//! handles every message type compiles under `tsc --strict`.

use crate::process::{self, cargo, output};
use crate::step;

fn run_suite() -> Result<(), String> {
    let root = crate::root();
    let cargo = cargo();

    crate::ts::run(&["--check".to_owned()])?;

    step("Rust tests (cargo test --workspace)");
    process::run(&root, &cargo, &["test", "--workspace", "--locked"])?;

    step("the protocol crate builds for wasm32-unknown-unknown");
    ensure_wasm_target()?;
    process::run(&root, &cargo, &["build", "--locked", "-p", "tidewire-protocol", "--target", "wasm32-unknown-unknown"])?;

    step("TypeScript bindings type-check (tsc --strict)");
    let web = root.join("web");
    ensure_npm_packages(&web)?;
    process::run(&web, "npx", &["--no-install", "tsc", "--strict", "--noEmit", "-p", "tsconfig.json"])?;

    println!("\nall checks passed");
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask test".to_owned());
    }
    run_suite()
}

/// Adds the wasm target through rustup when it is missing.
pub fn ensure_wasm_target() -> Result<(), String> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed.lines().any(|line| line.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    println!("    installing the wasm32-unknown-unknown target");
    process::run(&crate::root(), "rustup", &["target", "add", "wasm32-unknown-unknown"])
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
    process::run(web, "npm", &["ci", "--no-audit", "--no-fund"])
}
