//! `cargo xtask <task>`: the single entry point for everything beyond `cargo build`.
//!
//! Each task says what it is doing and installs (or checks for) what it needs, so the
//! README's commands work on a fresh machine. Run `cargo xtask help` for the list.

mod bench;
mod container;
mod fixture;
mod fuzz;
mod process;
mod test;
mod tools;
mod ts;
mod wasm;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <task> [options]

tasks:
  ts [--check]   regenerate ts-bindings/ from the protocol types (--check: fail on drift)
  bench [args]   run the benchmarks (tidewire-bench; default: the suite)
  demo [flags]   build the client package and the dashboard, then run the demo (tidewire-desk)
  wasm           build the browser client's npm package (target/npm/tidewire-client)
  web            build the dashboard into web/dist (after the client package)
  test           run the whole test suite (what CI runs)
  fuzz [T] [S]   run the fuzz targets (or target T) for S seconds each (default 60)
  help           this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "ts" => ts::run(rest),
        "test" => test::run(rest),
        "wasm" => wasm::run(rest),
        "web" => web::run(rest),
        "demo" => web::demo(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown task {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Prints a step header, so long runs say what they are doing.
pub fn step(what: &str) {
    println!("\n==> {what}");
}
