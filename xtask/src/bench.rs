//! `cargo xtask bench [tidewire-bench args]`: release builds of `tidewire` and
//! `tidewire-bench`, then the benchmark (the default suite when no arguments are given).
//! See `docs/performance.md` for what it measures and the figures on record.

use crate::process::{self, cargo};
use crate::step;

pub fn run(args: &[String]) -> Result<(), String> {
    let root = crate::root();
    step("release builds of tidewire and tidewire-bench");
    process::run(
        &root,
        &cargo(),
        &["build", "--release", "--locked", "-p", "tidewire-server", "-p", "tidewire-bench", "--bins"],
    )?;
    let bench = root.join("target/release/tidewire-bench");
    let mut arguments: Vec<&str> = args.iter().map(String::as_str).collect();
    if arguments.is_empty() {
        arguments.push("suite");
    }
    step(&format!("tidewire-bench {}", arguments.join(" ")));
    process::run(&root, bench.to_str().unwrap_or_default(), &arguments)
}
