//! A real console-subscriber service (examples/console_app.rs), read through its
//! tokio-console endpoint: tasks by their tokio task id, the lost waker, the starved
//! semaphore, the join with /proc, and the findings `watch` prints.

mod rust_support;

use rust_support::{Fixture, example, free_port, leakhound, until, watch_lines};
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn start(port: u16) -> Fixture {
    let bin = example("leakhound", "console_app");
    Fixture(
        Command::new(bin)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start console_app"),
    )
}

fn snapshot(url: &str) -> Option<Value> {
    let out = leakhound(&["snapshot", url, "--json"]);
    // 0 clean, 1 with findings; 2 (not up yet) is retried.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    // Wait until the service has spawned its tasks.
    let named = v["probe"]["tasks"]
        .as_array()?
        .iter()
        .filter(|t| t["name"].as_str().is_some_and(|n| !n.is_empty()))
        .count();
    // Resource updates (the semaphore's waiters) arrive in later increments than the tasks:
    // wait for them too, so the assertions judge a settled view, not the first update.
    let waiters_seen = v["probe"]["pools"]
        .as_array()?
        .iter()
        .any(|p| p["kind"] == "semaphore" && p["queued"].as_u64().is_some_and(|q| q > 0));
    (named >= 4 && waiters_seen).then_some(v)
}

fn task_named<'a>(snap: &'a Value, name: &str) -> &'a Value {
    snap["probe"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {}", snap["probe"]["tasks"]))
}

#[test]
fn snapshot_reads_tasks_by_tokio_id_joined_with_proc() {
    let port = free_port();
    let mut app = start(port);
    let url = format!("http://127.0.0.1:{port}");
    let snap = until(Duration::from_secs(15), || snapshot(&url)).expect("console endpoint up");

    assert_eq!(snap["source"], "procfs+console");
    assert_eq!(
        snap["pid"],
        app.0.id(),
        "joined with the process owning the port"
    );
    assert_eq!(snap["probe"]["runtime"], "tokio-console");
    let lost = task_named(&snap, "lost-waker");
    assert_eq!(lost["lost_waker"], true, "{lost}");
    let stuck = task_named(&snap, "stuck-on-channel");
    assert_eq!(stuck["lost_waker"], false, "it holds a waker: {stuck}");
    assert!(
        stuck["spawn_location"]
            .as_str()
            .unwrap()
            .starts_with("examples/console_app.rs:")
    );
    let sem = snap["probe"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "semaphore")
        .expect("the semaphore as a pool");
    assert_eq!(sem["queued"], 2, "{sem}");
    assert_eq!(
        sem["busy_workers"], sem["max_workers"],
        "no permit free: {sem}"
    );

    // The log line of the stuck task names the same task id the console reports.
    let _ = app.0.kill();
    let _ = app.0.wait();
    let mut log = String::new();
    app.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("never comes"))
        .unwrap_or_else(|| panic!("log line missing: {log}"));
    assert!(
        line.contains(&format!("task={} ", stuck["id"].as_str().unwrap())),
        "{line} vs task {}",
        stuck["id"]
    );
    let tid: u32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tid="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        snap["threads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tid"] == tid),
        "tid {tid} is one of the process's threads"
    );
}

#[test]
fn unreachable_endpoint_is_a_one_line_error() {
    let port = free_port();
    let out = leakhound(&["snapshot", &format!("http://127.0.0.1:{port}"), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("console-subscriber"), "{err}");
}

#[test]
fn source_reconnects_after_the_service_restarts() {
    use leakhound::source::{SampleOptions, Target, open};
    let port = free_port();
    let app = start(port);
    let url = format!("http://127.0.0.1:{port}");
    until(Duration::from_secs(15), || snapshot(&url)).expect("console endpoint up");
    let mut source = open(&url.parse::<Target>().unwrap()).expect("open console source");
    let first = source.sample(SampleOptions::default()).unwrap();
    let old_pid = first.pid;
    assert!(
        first.notes.iter().any(|n| n.contains("connection 1")),
        "{:?}",
        first.notes
    );
    drop(app);
    let down = until(Duration::from_secs(5), || {
        let s = source.sample(SampleOptions::default()).ok()?;
        s.notes
            .iter()
            .any(|n| n.contains("disconnected"))
            .then_some(s)
    });
    assert!(down.is_some(), "the source notices the service went away");
    let app = start(port);
    let back = until(Duration::from_secs(15), || {
        let s = source.sample(SampleOptions::default()).ok()?;
        // The restarted service's tasks arrive over its first updates.
        (s.notes.iter().any(|n| n.contains("connection 2"))
            && s.pid == app.0.id()
            && s.tasks().iter().any(|t| t.lost_waker))
        .then_some(s)
    })
    .expect("reconnected to the restarted service and joined with its new pid");
    assert_ne!(back.pid, old_pid);
}
#[test]
fn watch_reports_findings_and_reconnects_after_a_restart() {
    let port = free_port();
    let app = start(port);
    let url = format!("http://127.0.0.1:{port}");
    until(Duration::from_secs(15), || snapshot(&url)).expect("console endpoint up");
    // Restart the service halfway through the watch: the source must come back to it.
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(app);
        std::thread::sleep(Duration::from_millis(300));
        start(port)
    });
    let out = leakhound(&[
        "watch",
        &url,
        "--json",
        "--for",
        "5s",
        "--interval",
        "250ms",
        "-T",
        "stuck-task.after=1s",
    ]);
    let _app = restarter.join().unwrap();
    let lines = watch_lines(&out.stdout);
    let summary = lines.last().expect("summary line");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert!(summary["samples"].as_u64().unwrap() >= 8, "{summary}");
    let findings: Vec<&Value> = lines.iter().filter(|l| l["type"] == "finding").collect();
    assert!(
        findings
            .iter()
            .any(|f| f["rule"] == "stuck-task" && f["evidence"]["lost_waker"] == true),
        "lost waker found: {findings:?}"
    );
    assert!(
        !findings
            .iter()
            .any(|f| f["rule"] == "stuck-task" && f["evidence"]["kind"] == "blocking"),
        "the runtime's block_on future waits by design: {findings:?}"
    );
}
