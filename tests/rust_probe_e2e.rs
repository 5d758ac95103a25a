//! The Rust probe end to end: probes/rust/examples/problems.rs runs with one problem on,
//! `leakhound watch PID --json` must fire the matching rule (and nothing on a clean run);
//! the ids in its log lines are the ones `leakhound snapshot PID --json` shows.

mod rust_support;

use rust_support::{Fixture, example, leakhound, until, watch_lines};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Problem {
    app: Fixture,
    _dir: tempfile::TempDir,
    /// Log lines as they come.
    lines: mpsc::Receiver<String>,
}

fn start(mode: &str) -> Problem {
    let dir = tempfile::tempdir().unwrap();
    // tempfile makes it 0755; the probe listens only in a private (0700) folder.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut child = Command::new(example("leakhound-probe", "problems"))
        .arg(mode)
        .env("LEAKHOUND_SOCKET_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start problems");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let sock = dir.path().join(format!("{}.sock", child.id()));
    let app = Fixture(child);
    until(Duration::from_secs(10), || sock.exists().then_some(())).expect("probe socket");
    Problem {
        app,
        _dir: dir,
        lines,
    }
}

impl Problem {
    fn pid(&self) -> String {
        self.app.0.id().to_string()
    }

    fn line_containing(&self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// The findings `watch` fires over a few seconds with short thresholds.
    fn findings(&self) -> Vec<Value> {
        let out = leakhound(&[
            "watch",
            &self.pid(),
            "--json",
            "--for",
            "3500ms",
            "--interval",
            "250ms",
            "-T",
            "stuck-task.after=1s",
            "-T",
            "never-awaited.unpolled-after=1s",
            "-T",
            "pool-starvation.saturated-for=500ms",
        ]);
        let lines = watch_lines(&out.stdout);
        let summary = lines.last().expect("summary");
        assert_eq!(summary["type"], "summary", "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
        lines
            .into_iter()
            .filter(|l| l["type"] == "finding")
            .collect()
    }
}

/// `task=N` from a log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn fired<'a>(findings: &'a [Value], rule: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["rule"] == rule).collect()
}

#[test]
fn clean_run_fires_nothing() {
    let p = start("clean");
    let findings = p.findings();
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn stuck_task_is_named_by_the_id_in_its_log_line() {
    let p = start("stuck");
    let line = p.line_containing("stuck task");
    let task = field(&line, "task=");
    let findings = p.findings();
    let stuck = fired(&findings, "stuck-task");
    assert!(
        stuck.iter().any(|f| f["subject"] == format!("task:{task}")),
        "task {task} from `{line}` in {findings:#?}"
    );
    assert!(fired(&findings, "loop-blocked").is_empty(), "{findings:#?}");
}

#[test]
fn never_polled_task_fires_never_awaited() {
    let p = start("never-polled");
    let line = p.line_containing("nobody drives");
    let subject = field(&line, "spawned=");
    let findings = p.findings();
    let f = fired(&findings, "never-awaited");
    assert!(
        f.iter().any(|f| f["subject"] == subject
            && f["evidence"]["spawn_location"]
                .as_str()
                .unwrap()
                .contains("problems.rs")),
        "{findings:#?}"
    );
}

#[test]
fn blocking_call_in_async_fires_loop_blocked_naming_the_task() {
    let p = start("blocking");
    let line = p.line_containing("blocking task");
    let task = field(&line, "task=");
    let findings = p.findings();
    let f = fired(&findings, "loop-blocked");
    assert!(
        f.iter().any(|f| f["evidence"]["stall_task"] == task
            && f["evidence"]["stall_ms"].as_f64().unwrap() >= 100.0
            && f["evidence"]["blocking_frame"]
                .as_str()
                .is_some_and(|s| s.contains("problems.rs") && s.contains(&format!("task {task}")))),
        "stall in task {task}: {findings:#?}"
    );
}

#[test]
fn saturated_blocking_pool_fires_pool_starvation() {
    let p = start("pool");
    let findings = p.findings();
    let f = fired(&findings, "pool-starvation");
    assert!(
        f.iter().any(|f| f["subject"] == "pool:blocking_pool"
            && f["evidence"]["queued"] == 4
            && f["evidence"]["busy_workers"] == 2),
        "{findings:#?}"
    );
}

#[test]
fn starved_semaphore_fires_pool_starvation() {
    let p = start("semaphore");
    let findings = p.findings();
    let f = fired(&findings, "pool-starvation");
    assert!(
        f.iter().any(
            |f| f["subject"] == "pool:semaphore:db-connections" && f["evidence"]["queued"] == 3
        ),
        "{findings:#?}"
    );
}

#[test]
fn log_ids_match_the_snapshot() {
    let p = start("stuck");
    let line = p.line_containing("stuck task");
    let (tid, task) = (field(&line, "tid="), field(&line, "task="));
    let out = leakhound(&["snapshot", &p.pid(), "--json"]);
    // 0 or 1 (findings): the stuck task may have fired by now.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = &snap["probe"];
    assert_eq!(probe["runtime"], "tokio", "{}", snap["notes"]);
    let t = probe["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == task)
        .unwrap_or_else(|| panic!("task {task} not in {}", probe["tasks"]));
    assert!(
        t["spawn_location"]
            .as_str()
            .unwrap()
            .contains("problems.rs")
    );
    let threads = snap["threads"].as_array().unwrap();
    let worker = threads
        .iter()
        .find(|t| t["tid"].as_u64() == tid.parse().ok())
        .unwrap_or_else(|| panic!("tid {tid} not among {threads:?}"));
    assert_eq!(worker["name"], "tokio-rt-worker");
}
