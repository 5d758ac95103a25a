//! Shared by the Rust-probe and console end-to-end tests: finding the example binaries that
//! `cargo build --workspace --all-targets` builds beside `leakhound`, running leakhound.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/NAME`, next to the leakhound binary under test. When a
/// narrow `cargo test --test X` did not build it, build it once here.
pub fn example(package: &str, name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_leakhound"));
    let path = bin
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the example");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Fixture(pub Child);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn leakhound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run leakhound")
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Retries `f` until it returns `Some` or `limit` passes.
pub fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `watch --json` lines: findings (`type: finding`) and the summary.
pub fn watch_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
