//! `cargo xtask test`: the whole suite, exactly what CI runs.
//!
//! Steps, in order: the generated TypeScript is current; the code is rustfmt-formatted
//! and clippy finds nothing (`-D warnings`, native and wasm, with the workspace's lints);
//! rustdoc finds no broken link;
//! every Rust test passes (the tidy tests among them; the Kafka tests with the `tansu`
//! broker, built once per machine when missing); the
//! protocol crate builds for `wasm32-unknown-unknown`; the client's npm package and the
//! dashboard build; the TypeScript (bindings, package API, dashboard) compiles under
//! `tsc --strict`; the browser client's tests run in headless Chromium against a real
//! node (the `fixture` example); the dashboard and the operator console pass their end-to-end tests against
//! the demo (`tidewire-desk`); the container's static binary passes its healthcheck; a short soak
//! loses nothing; and every fuzz target runs for a bounded time without a crash.

use crate::process::{self, cargo};
use crate::step;

fn run_suite() -> Result<(), String> {
    let root = crate::root();
    let cargo = cargo();

    crate::ts::run(&["--check".to_owned()])?;
    lint()?;

    step("Rust tests (cargo test --workspace)");
    let tansu = crate::tools::tansu()?;
    let tansu = tansu.to_str().ok_or("the tansu path is not UTF-8")?;
    process::run_with_env(&root, &cargo, &["test", "--workspace", "--locked"], &[("TIDEWIRE_TANSU", tansu)])?;

    step("the protocol crate builds for wasm32-unknown-unknown");
    crate::tools::ensure_wasm_target()?;
    process::run(
        &root,
        &cargo,
        &["build", "--locked", "-p", "tidewire-protocol", "--target", "wasm32-unknown-unknown"],
    )?;

    // The client package and the dashboard: the type check, the browser tests and the
    // end-to-end test all use them.
    crate::web::build()?;

    step("TypeScript type-check (tsc --strict): the bindings and the client package's API");
    let web = root.join("web");
    process::run(&web, "npx", &["--no-install", "tsc", "--strict", "--noEmit", "-p", "tsconfig.json"])?;
    wrong_field_refused(&web)?;

    browser_tests()?;
    dashboard_test()?;
    crate::container::test()?;
    soak()?;
    crate::fuzz::run_targets(&crate::fuzz::TARGETS, crate::fuzz::SUITE_SECONDS)?;

    println!("\nall checks passed");
    Ok(())
}

/// Handlers are typed by channel: a handler reading a field its channel's events lack
/// (`web/types/wrong-field.ts`) must fail to compile, with that field named.
fn wrong_field_refused(web: &std::path::Path) -> Result<(), String> {
    step("TypeScript: a handler reading a field its channel does not carry fails to compile");
    let output = std::process::Command::new("npx")
        .args(["--no-install", "tsc", "--noEmit", "-p", "types/tsconfig.wrong-field.json"])
        .current_dir(web)
        .output()
        .map_err(|e| format!("cannot run tsc: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        return Err("web/types/wrong-field.ts compiled: handlers are not typed by channel".to_owned());
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error TS")).collect();
    match errors.as_slice() {
        [only] if only.contains("TS2339") && only.contains("bidPrice") => {
            println!("    refused as it should be: {only}");
            Ok(())
        }
        _ => Err(format!("web/types/wrong-field.ts failed for other reasons than the wrong field:\n{text}")),
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask test".to_owned());
    }
    run_suite()
}

/// Formatting and clippy, as errors: the rules ARCHITECTURE.md states that a compiler
/// can check (`[workspace.lints]` in Cargo.toml) hold on every commit.
fn lint() -> Result<(), String> {
    let root = crate::root();
    let cargo = cargo();
    step("formatting (cargo fmt --check, workspace and fuzz targets)");
    process::run(&root, &cargo, &["fmt", "--all", "--check"])?;
    process::run(&root.join("crates/fuzz"), &cargo, &["fmt", "--check"])?;
    step("clippy -D warnings (native: every target; wasm: the client)");
    process::run(&root, &cargo, &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
    step("rustdoc -D warnings (module docs link to what exists)");
    process::run_with_env(
        &root,
        &cargo,
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    crate::tools::ensure_wasm_target()?;
    process::run(
        &root,
        &cargo,
        &[
            "clippy",
            "--locked",
            "-p",
            "tidewire-client",
            "--target",
            "wasm32-unknown-unknown",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// The wasm client in headless Chromium (wasm-bindgen-test), against a live node.
fn browser_tests() -> Result<(), String> {
    let root = crate::root();
    let cargo = cargo();
    step("browser tests: the wasm client in headless Chromium against a real node");
    let (_, runner) = crate::tools::wasm_bindgen()?;
    let (_, chromedriver) = crate::tools::chromium()?;
    process::run(&root, &cargo, &["build", "--locked", "-p", "tidewire-server", "--example", "fixture"])?;
    let fixture = crate::fixture::Fixture::start()?;
    println!("    fixture: {} (control {})", fixture.ws, fixture.control);
    process::run_with_env(
        &root,
        &cargo,
        &["test", "--locked", "-p", "tidewire-client", "--target", "wasm32-unknown-unknown", "--test", "browser"],
        &[
            ("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", runner.to_str().unwrap_or_default()),
            ("CHROMEDRIVER", chromedriver.to_str().unwrap_or_default()),
            ("TIDEWIRE_FIXTURE", &fixture.control),
            ("WASM_BINDGEN_TEST_TIMEOUT", "180"),
        ],
    )
}

/// The dashboard end to end in headless Chromium (playwright-core), served by
/// the demo (`tidewire-desk`), including a server restart.
fn dashboard_test() -> Result<(), String> {
    let root = crate::root();
    step("dashboard and operator console end-to-end tests (playwright-core, headless Chromium)");
    process::run(&root, &cargo(), &["build", "--locked", "-p", "tidewire-desk", "--bin", "tidewire-desk"])?;
    let binary = root.join("target/debug/tidewire-desk");
    let screenshot = root.join("target/e2e/dashboard.png");
    let console = root.join("target/e2e/console.png");
    process::run_with_env(
        &root.join("web"),
        "node",
        &["--test", "e2e/"],
        &[
            ("TIDEWIRE_BIN", binary.to_str().unwrap_or_default()),
            ("TIDEWIRE_E2E_SCREENSHOT", screenshot.to_str().unwrap_or_default()),
            ("TIDEWIRE_CONSOLE_SCREENSHOT", console.to_str().unwrap_or_default()),
        ],
    )?;
    println!("    screenshots: {}, {}", screenshot.display(), console.display());
    Ok(())
}

/// A short soak: 20 s of connection and subscription churn with steady subscribers that
/// must lose nothing (`cargo xtask bench soak` runs the ten-minute version).
fn soak() -> Result<(), String> {
    let root = crate::root();
    step("short soak: churn and publishes for 20 s, healthy subscribers lose nothing");
    process::run(
        &root,
        &cargo(),
        &[
            "build",
            "--locked",
            "-p",
            "tidewire-bench",
            "-p",
            "tidewire-server",
            "--bin",
            "tidewire",
            "--bin",
            "tidewire-bench",
        ],
    )?;
    let bench = root.join("target/debug/tidewire-bench");
    // Twenty seconds are too short for a meaningful memory trend; the bound only
    // catches a gross leak.
    process::run(
        &root,
        bench.to_str().unwrap_or_default(),
        &["soak", "--duration", "20s", "--max-trend-kib-per-min", "8192"],
    )
}
