//! The Rust probe end to end: probes/rust/examples/problems.rs runs with one problem on,
//! `leakhound watch PID --json` must fire the matching rule (and nothing on a clean run);
//! the ids in its log lines are the ones `leakhound snapshot PID --json` shows. Each runtime
//! a service may have: hand-built with the hooks (`hand`), `#[leakhound_probe::main]`
//! (`attribute`), and `#[tokio::main]` + `init()` (`tokio-main`).

mod rust_support;

use rust_support::{Service, field, fired};

const RUNTIMES: [&str; 3] = ["hand", "attribute", "tokio-main"];

fn start(mode: &str) -> Service {
    start_on(mode, "hand")
}

fn start_on(mode: &str, runtime: &str) -> Service {
    Service::start("problems", &[mode, "--runtime", runtime], &[])
}

#[test]
fn clean_run_fires_nothing_on_any_runtime() {
    for runtime in RUNTIMES {
        let p = start_on("clean", runtime);
        let findings = p.findings();
        assert!(findings.is_empty(), "{runtime}: {findings:#?}");
    }
}

#[test]
fn tokio_main_with_init_sees_the_blocked_worker_and_the_starved_pool() {
    let p = start_on("all", "tokio-main");
    // Log lines carry ids with no subscriber set up by the program.
    let line = p.line_containing("blocking task");
    let (tid, _task) = (field(&line, "tid="), field(&line, "task="));
    let findings = p.findings();
    let blocked = fired(&findings, "loop-blocked");
    assert!(
        blocked
            .iter()
            .any(|f| f["evidence"]["stall_ms"].as_f64().unwrap() >= 100.0
                && f["evidence"]["blocking_frame"]
                    .as_str()
                    .is_some_and(|s| s.contains("stuck in one poll"))),
        "{findings:#?}"
    );
    let pool = fired(&findings, "pool-starvation");
    assert!(
        pool.iter().any(|f| f["subject"] == "pool:blocking_pool"
            && f["evidence"]["queued"] == 4
            && f["evidence"]["busy_workers"] == 512),
        "{findings:#?}"
    );
    // The worker that logged the line and then slept in the same poll is named by its tid.
    let probe = &p.snapshot()["probe"];
    let stalls = probe["loops"][0]["stalls"].as_array().unwrap();
    assert!(
        stalls
            .iter()
            .any(|s| s["duration_ms"].as_f64().unwrap() >= 400.0
                && s["stack"][0]
                    .as_str()
                    .unwrap()
                    .contains(&format!("(tid {tid})"))),
        "tid {tid} in {stalls:#?}"
    );
    // Without hooks there are no tasks, and missing[] says what the attribute adds.
    assert!(fired(&findings, "stuck-task").is_empty(), "{findings:#?}");
    let missing = probe["missing"].to_string();
    assert!(missing.contains("#[leakhound_probe::main]"), "{missing}");
}

#[test]
fn the_attribute_alone_sees_the_stuck_task_the_blocking_task_and_the_starved_pool() {
    let p = start_on("all", "attribute");
    let stuck = field(&p.line_containing("stuck task"), "task=").to_string();
    let blocking = field(&p.line_containing("blocking task"), "task=").to_string();
    // A task dump is taken once the task has been idle about a second: its await chain is in
    // the snapshot's task list soon after.
    let chain = p.await_chain(&stuck);
    assert!(
        chain.iter().any(|f| f.contains("problems.rs:")),
        "{chain:?}"
    );
    let findings = p.findings();
    // The stuck task waits at its own `rx.await` line, from a task dump.
    assert!(
        fired(&findings, "stuck-task")
            .iter()
            .any(|f| f["subject"] == format!("task:{stuck}")
                && f["evidence"]["name"] == "waits-for-config"
                && f["evidence"]["own_frame"].as_str().is_some_and(|s| {
                    s.contains("problems.rs:")
                        && s.contains("awaits tokio::sync::oneshot::Receiver")
                })),
        "stuck task {stuck}: {findings:#?}"
    );
    assert!(
        fired(&findings, "loop-blocked")
            .iter()
            .any(|f| f["evidence"]["stall_task"] == blocking.as_str()),
        "blocking task {blocking}: {findings:#?}"
    );
    assert!(
        fired(&findings, "pool-starvation")
            .iter()
            .any(|f| f["subject"] == "pool:blocking_pool"
                && f["evidence"]["queued"] == 4
                && f["evidence"]["busy_workers"] == 2),
        "{findings:#?}"
    );
}

#[test]
fn semaphore_and_never_polled_are_seen_on_every_runtime() {
    for runtime in RUNTIMES {
        let p = start_on("semaphore", runtime);
        let findings = p.findings();
        assert!(
            fired(&findings, "pool-starvation")
                .iter()
                .any(|f| f["subject"] == "pool:semaphore:db-connections"
                    && f["evidence"]["queued"] == 3),
            "{runtime}: {findings:#?}"
        );
        drop(p);
        let p = start_on("never-polled", runtime);
        let subject = field(&p.line_containing("nobody drives"), "spawned=").to_string();
        let findings = p.findings();
        assert!(
            fired(&findings, "never-awaited")
                .iter()
                .any(|f| f["subject"] == subject.as_str()),
            "{runtime}: {findings:#?}"
        );
    }
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
fn a_task_that_keeps_no_waker_is_a_lost_waker_with_its_name() {
    let p = start("lost-waker");
    let task = field(&p.line_containing("lost-waker task"), "task=").to_string();
    let snap = p.snapshot();
    let t = snap["probe"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == task.as_str())
        .unwrap_or_else(|| panic!("task {task} in {snap}"))
        .clone();
    assert_eq!(t["name"], "drops-its-waker", "{t}");
    assert_eq!(t["lost_waker"], true, "{t}");
    let findings = p.findings();
    assert!(
        fired(&findings, "stuck-task")
            .iter()
            .any(|f| f["subject"] == format!("task:{task}")
                && f["severity"] == "error"
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("(drops-its-waker) lost its waker"))),
        "task {task}: {findings:#?}"
    );
    // The healthy workers (plain tokio::spawn) and the stuck-free rest are not lost.
    assert!(
        snap["probe"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["lost_waker"] == true)
            .all(|t| t["id"] == task.as_str()),
        "{snap}"
    );
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
    let snap = p.snapshot();
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
