//! Fuzzing with cargo-fuzz (libFuzzer, nightly): `cargo xtask fuzz [TARGET] [SECONDS]`,
//! and a bounded run of every target inside `cargo xtask test`.
//!
//! Targets live in `crates/fuzz` (outside the workspace). Each starts from the seeds
//! committed in `crates/fuzz/seeds/<target>` and writes what it discovers to
//! `target/fuzz/corpus/<target>`. A crash fails the run and leaves its input in
//! `crates/fuzz/artifacts/<target>`; such an input becomes a regression test next to
//! the code it broke.

use std::path::PathBuf;

use crate::process::{self, cargo, output};
use crate::step;

pub const TARGETS: [&str; 5] = ["decode_frame", "decode_command", "channel_rules", "claims", "merge_patch"];

/// Seconds per target inside `cargo xtask test`.
pub const SUITE_SECONDS: u32 = 30;

pub fn run(args: &[String]) -> Result<(), String> {
    let (targets, seconds): (Vec<&str>, u32) = match args {
        [] => (TARGETS.to_vec(), 60),
        [target] => (vec![target.as_str()], 60),
        [target, seconds] => {
            (vec![target.as_str()], seconds.parse().map_err(|_| "SECONDS must be a number".to_owned())?)
        }
        _ => return Err("usage: cargo xtask fuzz [TARGET] [SECONDS]".to_owned()),
    };
    for target in &targets {
        if !TARGETS.contains(target) {
            return Err(format!("unknown fuzz target {target:?}; targets: {}", TARGETS.join(", ")));
        }
    }
    run_targets(&targets, seconds)
}

pub fn run_targets(targets: &[&str], seconds: u32) -> Result<(), String> {
    let root = crate::root();
    ensure_nightly()?;
    let cargo_fuzz = ensure_cargo_fuzz()?;
    for target in targets {
        step(&format!("fuzzing {target} for {seconds} s"));
        let scratch = root.join("target/fuzz/corpus").join(target);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let seeds = root.join("crates/fuzz/seeds").join(target);
        let max_time = format!("-max_total_time={seconds}");
        process::run_with_env(
            &root,
            cargo_fuzz.to_str().unwrap_or("cargo-fuzz"),
            &[
                "fuzz",
                "run",
                target,
                "--fuzz-dir",
                "crates/fuzz",
                "--",
                &max_time,
                "-print_final_stats=1",
                scratch.to_str().unwrap_or_default(),
                seeds.to_str().unwrap_or_default(),
            ],
            &[("RUSTUP_TOOLCHAIN", "nightly")],
        )
        .map_err(|e| {
            format!("{e}\nfuzz target {target} failed: the crashing input is in crates/fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

fn ensure_nightly() -> Result<(), String> {
    let toolchains = output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        return Ok(());
    }
    println!("    installing the nightly toolchain (for cargo-fuzz)");
    process::run(&crate::root(), "rustup", &["toolchain", "install", "nightly", "--profile", "minimal"])
}

fn ensure_cargo_fuzz() -> Result<PathBuf, String> {
    let bin = crate::tools::tools_dir().join("bin").join("cargo-fuzz");
    if !bin.exists() {
        println!("    building cargo-fuzz into target/tools (once)");
        let root = crate::tools::tools_dir();
        process::run(
            &crate::root(),
            &cargo(),
            &["install", "cargo-fuzz", "--root", root.to_str().unwrap_or("target/tools")],
        )?;
    }
    Ok(bin)
}
