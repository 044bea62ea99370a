//! The house rules that ARCHITECTURE.md states, checked by machine.
//!
//! Each test reads the workspace as it is (its manifests through `cargo metadata`, its
//! sources from disk) and fails with the file and the rule broken. A rule that changes
//! changes here and in ARCHITECTURE.md together.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// A workspace package's dependencies as (name, kind) with kind "normal", "dev" or "build".
fn dependencies(metadata: &Value, package: &str) -> Vec<(String, String)> {
    let packages = metadata["packages"].as_array().expect("packages");
    let package = packages.iter().find(|p| p["name"] == package).unwrap_or_else(|| panic!("no package {package}"));
    package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| {
            let name = d["name"].as_str().unwrap_or_default().to_owned();
            let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
            (name, kind)
        })
        .collect()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The sources of the project's own crates (the fuzz targets included).
fn project_sources() -> Vec<PathBuf> {
    let root = root();
    let mut files = rust_files(&root.join("crates"));
    files.extend(rust_files(&root.join("xtask")));
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

#[test]
fn the_protocol_crate_depends_on_serde_serde_json_and_thiserror_only() {
    // It builds for the browser and is shared by everything: nothing with IO, a runtime
    // or a platform in it. ts-rs is optional, behind the `ts` feature xtask turns on.
    let allowed = BTreeSet::from(["serde", "serde_json", "thiserror", "ts-rs"]);
    let found: Vec<String> = dependencies(&metadata(), "tidewire-protocol")
        .into_iter()
        .filter(|(name, kind)| kind == "normal" && !allowed.contains(name.as_str()))
        .map(|(name, _)| name)
        .collect();
    assert!(found.is_empty(), "tidewire-protocol must not depend on {found:?}");
}

#[test]
fn the_server_and_the_client_meet_only_in_tests() {
    // The client's tests run against a real server, and the server's failover test drives
    // the native client against node processes it kills; neither library needs the other.
    let metadata = metadata();
    for (package, other) in [("tidewire-server", "tidewire-client"), ("tidewire-client", "tidewire-server")] {
        for (name, kind) in dependencies(&metadata, package) {
            assert!(!(name == other && kind != "dev"), "{package} depends on {other} as a {kind} dependency");
        }
    }
}

#[test]
fn the_gateway_and_the_protocol_know_no_application() {
    // A catalogue of typed messages (the desk's, or an embedder's) builds on them, never
    // the other way round, not even in tests.
    let metadata = metadata();
    for package in ["tidewire-protocol", "tidewire-server"] {
        for (name, kind) in dependencies(&metadata, package) {
            assert_ne!(name, "tidewire-desk", "{package} depends on tidewire-desk ({kind})");
        }
    }
}

#[test]
fn every_crate_keeps_the_workspace_lints() {
    let root = root();
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/").flatten() {
        let manifest = entry.path().join("Cargo.toml");
        // The fuzz targets are outside the workspace (nightly, libFuzzer).
        if manifest.exists() && entry.file_name() != "fuzz" {
            manifests.push(manifest);
        }
    }
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{} does not opt into [workspace.lints]",
            relative(&manifest)
        );
    }
}

#[test]
fn every_source_file_says_why_it_exists() {
    for file in project_sources() {
        let text = std::fs::read_to_string(&file).expect("source");
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("//!"), "{} does not start with a module doc (`//!`)", relative(&file));
    }
}

/// One concept per file: a library source over this many lines holds more than one.
const MAX_SOURCE_LINES: usize = 800;

#[test]
fn no_library_source_file_grows_past_its_concept() {
    let root = root();
    let mut long = Vec::new();
    for crate_dir in ["protocol", "server", "desk", "client", "bench"] {
        for file in rust_files(&root.join("crates").join(crate_dir).join("src")) {
            let lines = std::fs::read_to_string(&file).expect("source").lines().count();
            if lines > MAX_SOURCE_LINES {
                long.push(format!("{} ({lines} lines)", relative(&file)));
            }
        }
    }
    assert!(long.is_empty(), "split these by concept (at most {MAX_SOURCE_LINES} lines): {long:?}");
}

/// The widest line rustfmt leaves (rustfmt.toml's `max_width`); it does not break string
/// literals and comments, so this holds them to it too.
const MAX_LINE_CHARS: usize = 120;

#[test]
fn no_line_is_wider_than_rustfmt_allows() {
    let mut wide = Vec::new();
    for file in project_sources() {
        let text = std::fs::read_to_string(&file).expect("source");
        for (n, line) in text.lines().enumerate() {
            if line.chars().count() > MAX_LINE_CHARS {
                wide.push(format!("{}:{}", relative(&file), n + 1));
            }
        }
    }
    assert!(wide.is_empty(), "lines over {MAX_LINE_CHARS} characters: {wide:?}");
}

#[test]
fn generated_typescript_is_never_edited_by_hand() {
    // `cargo xtask ts --check` compares the contents; this keeps the marker that tells
    // a reader (and a reviewer) so.
    let dir = root().join("ts-bindings");
    for entry in std::fs::read_dir(&dir).expect("ts-bindings/").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "ts") {
            let text = std::fs::read_to_string(&path).expect("binding");
            let generated = text.starts_with("// This file was generated by [ts-rs]")
                || text.starts_with("// Generated by `cargo xtask ts`");
            assert!(generated, "{} lacks the generated-file header", relative(&path));
        }
    }
}
