//! `cargo xtask web` builds the dashboard into `web/dist` (after the client package);
//! `cargo xtask demo` builds everything and runs the demo (`tidewire-desk`).

use std::path::PathBuf;

use crate::process::{self, cargo};
use crate::step;

/// Builds the wasm package, installs web/'s npm packages, and bundles the dashboard.
pub fn build() -> Result<PathBuf, String> {
    crate::wasm::build_package()?;
    let web = crate::root().join("web");
    crate::tools::ensure_npm_packages(&web)?;
    step("bundling the dashboard (esbuild) into web/dist");
    process::run(&web, "node", &["build.mjs"])?;
    Ok(web.join("dist"))
}

pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask web".to_owned());
    }
    build().map(|_| ())
}

/// `cargo xtask demo [tidewire-desk flags…]`: build and run the demo.
pub fn demo(args: &[String]) -> Result<(), String> {
    let dist = build()?;
    step("running the demo, tidewire-desk (Ctrl-C to stop)");
    let mut command: Vec<String> =
        ["run", "--release", "--locked", "-p", "tidewire-desk", "--bin", "tidewire-desk", "--", "--web-dir"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    command.push(dist.to_string_lossy().into_owned());
    command.extend(args.iter().cloned());
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    process::run(&crate::root(), &cargo(), &command)
}
