//! A real HTTP service (probes/rust/examples/http_service.rs, axum) under real HTTP load:
//! a stuck task, a blocking handler and a saturated blocking pool, on the three runtimes a
//! tokio service may have — `#[tokio::main]` + `init()`, `#[leakhound_probe::main]`, hand-built
//! with the hooks — read by `leakhound watch PID --json` and `leakhound snapshot PID --json`;
//! its clean twin under the same load fires nothing; and one app read by both the console
//! source (console-subscriber) and the probe, side by side.

mod rust_support;

use rust_support::{
    HttpLoad, Served, Service, field, fired, free_port, leakhound, until, watch_findings,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// The load: a health check every 50 ms, the report (300 ms of work) every second, an import
/// (5 ms on the blocking pool) every 500 ms.
const LOAD: [(&str, Duration); 3] = [
    ("/", Duration::from_millis(50)),
    ("/report", Duration::from_secs(1)),
    ("/import", Duration::from_millis(500)),
];

/// The service, its address, and the load on it.
fn start(args: &[&str]) -> (Service, HttpLoad) {
    let service = Service::start("http_service", args, &[]);
    let ready = service.line_containing("http_service ready");
    // Log ids with no setup in the program (or its own fmt layer, hand-built).
    for key in ["tid=", "task="] {
        field(&ready, key);
    }
    let addr = field(&ready, "addr=").to_string();
    let load = HttpLoad::start(&addr, &LOAD);
    (service, load)
}

/// The task id of the stuck `cache-refresh` task, from its log line.
fn cache_refresh(s: &Service) -> String {
    let line = s.line_containing("cache-refresh: waiting");
    let task = field(&line, "task=");
    assert!(
        task.parse::<u64>().is_ok(),
        "a tokio task id in `{line}` (hooks or not, the log knows the task)"
    );
    task.to_string()
}

/// The set of `key` values (`tid=`, `task=`) over the log lines of the report handler.
fn report_ids(s: &Service, key: &str) -> BTreeSet<String> {
    let ids: BTreeSet<String> = s
        .lines_containing("report: building")
        .iter()
        .map(|l| field(l, key).to_string())
        .collect();
    assert!(!ids.is_empty(), "the load reached /report");
    ids
}

fn served(load: HttpLoad, path: &str) -> Served {
    load.stop()
        .into_iter()
        .find(|s| s.path == path)
        .expect("a client for the path")
}

#[test]
fn tokio_main_with_init_sees_the_blocked_worker_and_the_starved_pool() {
    let (s, load) = start(&["problems", "--runtime", "tokio-main"]);
    cache_refresh(&s);
    let findings = s.findings();
    assert!(
        fired(&findings, "loop-blocked").iter().any(|f| {
            f["evidence"]["stall_ms"].as_f64().unwrap() >= 100.0
                && f["evidence"]["blocking_frame"]
                    .as_str()
                    .is_some_and(|s| s.contains("stuck in one poll"))
        }),
        "{findings:#?}"
    );
    // The stalled worker is named by its tid, the one in the handler's log line. (The probe
    // learns a worker's tid where its ticker runs; for a worker it has not run on yet, the tid
    // comes from thread start order, since tokio starts its workers before any blocking-pool
    // thread. Only when that order is not to be trusted, the learnt tids not all among the
    // first started, does a stall read "tid unknown, N candidates": the saturated pool's
    // threads carry the workers' name.)
    let named = until(Duration::from_secs(10), || {
        let tids = report_ids(&s, "tid=");
        let snap = s.snapshot();
        let stalls = snap["probe"]["loops"][0]["stalls"].as_array()?.clone();
        stalls
            .iter()
            .find(|st| {
                st["duration_ms"].as_f64().unwrap() >= 100.0
                    && tids.iter().any(|t| {
                        // A lag stall (the ticker late) has no stack: not this one.
                        st["stack"][0]
                            .as_str()
                            .is_some_and(|s| s.contains(&format!("(tid {t})")))
                    })
            })
            .cloned()
    });
    assert!(named.is_some(), "no stall names a report worker's tid");
    let pool = fired(&findings, "pool-starvation");
    assert!(
        pool.iter().any(|f| f["subject"] == "pool:blocking_pool"
            && f["evidence"]["queued"].as_u64().unwrap() >= 4
            && f["evidence"]["busy_workers"] == 512),
        "{findings:#?}"
    );
    // Without hooks the stuck task is not seen, and missing[] says what the attribute adds.
    assert!(fired(&findings, "stuck-task").is_empty(), "{findings:#?}");
    let missing = s.snapshot()["probe"]["missing"].to_string();
    assert!(missing.contains("#[leakhound_probe::main]"), "{missing}");
    // The clients saw the starved pool too: no import was answered.
    let import = served(load, "/import");
    assert_eq!(import.ok, 0, "{import:?}");
    assert!(import.failed > 0, "{import:?}");
}

/// With task hooks (the attribute, or a hand-built runtime): all three problems, the stuck
/// task at its await `file:line` with its spawn site, the stall named by its task.
fn all_three(runtime: &str) {
    let (s, load) = start(&["problems", "--runtime", runtime]);
    let stuck = cache_refresh(&s);
    let chain = s.await_chain(&stuck);
    assert!(
        chain.iter().any(|f| f.contains("http_service.rs:")),
        "{chain:?}"
    );
    let findings = s.findings();
    let tasks = report_ids(&s, "task=");
    let found = fired(&findings, "stuck-task");
    let f = found
        .iter()
        .find(|f| f["subject"] == format!("task:{stuck}"))
        .unwrap_or_else(|| panic!("{runtime}: stuck task {stuck}: {findings:#?}"));
    let ev = &f["evidence"];
    assert!(
        ev["own_frame"].as_str().is_some_and(|s| {
            s.contains("http_service.rs:") && s.contains("awaits tokio::sync::oneshot::Receiver")
        }),
        "{runtime}: {f:#}"
    );
    assert!(
        ev["spawn_location"]
            .as_str()
            .is_some_and(|s| s.contains("http_service.rs:")),
        "{runtime}: {f:#}"
    );
    // Spawned with leakhound_probe::spawn_named: the probe knows its name.
    assert_eq!(ev["name"], "cache-refresh", "{runtime}: {f:#}");
    assert!(
        fired(&findings, "loop-blocked")
            .iter()
            .any(|f| f["evidence"]["stall_task"]
                .as_str()
                .is_some_and(|t| tasks.contains(t))),
        "{runtime}: a stall in one of the report tasks {tasks:?}: {findings:#?}"
    );
    assert!(
        fired(&findings, "pool-starvation")
            .iter()
            .any(|f| f["subject"] == "pool:blocking_pool"
                && f["evidence"]["queued"].as_u64().unwrap() >= 4
                && f["evidence"]["busy_workers"] == 2),
        "{runtime}: {findings:#?}"
    );
    let import = served(load, "/import");
    assert_eq!(import.ok, 0, "{runtime}: {import:?}");
}

#[test]
fn the_attribute_alone_sees_all_three() {
    all_three("attribute");
}

#[test]
fn a_hand_built_runtime_with_the_hooks_sees_all_three() {
    all_three("hand");
}

/// The clean twin is watched with `loop-blocked.lag` at 250 ms rather than 100: on a shared
/// 2-core machine at load 14 the probe's ticker was once taken 186 ms late in a 20 s run of a
/// service doing nothing wrong (the OS did not run the worker). The blocking handler holds
/// its worker 300 ms, over either threshold.
const CLEAN_LAG: &str = "loop-blocked.lag=250ms";

#[test]
fn clean_twin_fires_nothing_under_load_for_20s_on_any_runtime() {
    let runs: Vec<_> = ["tokio-main", "attribute", "hand"]
        .into_iter()
        .map(|runtime| {
            std::thread::spawn(move || {
                let (s, load) = start(&["clean", "--runtime", runtime]);
                let findings = watch_findings(&s.pid(), "20s", &["-T", CLEAN_LAG]);
                (runtime, findings, load.stop())
            })
        })
        .collect();
    for run in runs {
        let (runtime, findings, served) = run.join().unwrap();
        println!("{runtime}: {served:?}");
        assert!(findings.is_empty(), "{runtime}: {findings:#?}");
        // The same load as the problems get, all of it answered.
        for s in &served {
            assert!(s.ok > 0 && s.failed == 0, "{runtime}: {served:?}");
        }
    }
}

/// One finding, as a table cell: its rule and what it says of the problem.
fn cell(f: Option<&&Value>) -> String {
    let Some(f) = f else {
        return "-".into();
    };
    let ev = &f["evidence"];
    let detail = match f["rule"].as_str().unwrap_or("") {
        "stuck-task" if ev["lost_waker"] == true => "lost its waker".to_string(),
        "stuck-task" => format!(
            "{} at {}",
            ev["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("(no name)"),
            ev["own_frame"]
                .as_str()
                .map(|s| s.split(" in ").next().unwrap_or(s))
                .unwrap_or("unknown await point")
        ),
        "loop-blocked" => format!(
            "stall {:.0} ms in task {}",
            ev["stall_ms"].as_f64().unwrap_or(0.0),
            ev["stall_task"].as_str().unwrap_or("?")
        ),
        "pool-starvation" => format!(
            "{}/{} busy, {} queued",
            ev["busy_workers"], ev["max_workers"], ev["queued"]
        ),
        _ => f["message"].as_str().unwrap_or("").to_string(),
    };
    format!(
        "{} {}: {detail}",
        f["severity"].as_str().unwrap_or(""),
        f["rule"].as_str().unwrap_or("")
    )
}

#[test]
fn console_and_probe_on_one_app() {
    let console_port = free_port().to_string();
    let (s, load) = start(&["problems", "--runtime", "hand", "--console", &console_port]);
    let url = format!("http://127.0.0.1:{console_port}");
    let stuck = cache_refresh(&s);
    let lost = field(&s.line_containing("lost-waker: spawned"), "spawned=task:").to_string();
    // Both views ready: the console has sent its tasks, the probe has dumped the stuck one.
    until(Duration::from_secs(15), || {
        let out = leakhound(&["snapshot", &url, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["probe"]["tasks"]
            .as_array()?
            .iter()
            .any(|t| t["id"] == stuck.as_str())
            .then_some(())
    })
    .expect("the console endpoint lists the stuck task");
    s.await_chain(&stuck);
    // The same 4 s, watched both ways at once.
    let console = {
        let url = url.clone();
        std::thread::spawn(move || watch_findings(&url, "4s", &[]))
    };
    let probe = watch_findings(&s.pid(), "4s", &[]);
    let console = console.join().unwrap();
    let tasks = report_ids(&s, "task=");
    drop(load);

    let stuck_on = |fs: &[Value], id: &str| -> Option<usize> {
        fs.iter()
            .position(|f| f["rule"] == "stuck-task" && f["subject"] == format!("task:{id}"))
    };
    let blocked = |fs: &[Value]| fs.iter().position(|f| f["rule"] == "loop-blocked");
    let pool = |fs: &[Value]| {
        fs.iter()
            .position(|f| f["rule"] == "pool-starvation" && f["subject"] == "pool:blocking_pool")
    };
    let rows = [
        (
            "stuck task (oneshot never sent)",
            stuck_on(&console, &stuck),
            stuck_on(&probe, &stuck),
        ),
        (
            "blocking handler GET /report",
            blocked(&console),
            blocked(&probe),
        ),
        ("saturated blocking pool", pool(&console), pool(&probe)),
        (
            "lost waker",
            stuck_on(&console, &lost),
            stuck_on(&probe, &lost),
        ),
    ];
    println!("\n{:<34} | {:<58} | probe", "problem", "console source");
    for (problem, c, p) in &rows {
        println!(
            "{problem:<34} | {:<58} | {}",
            cell(c.map(|i| &console[i]).as_ref()),
            cell(p.map(|i| &probe[i]).as_ref())
        );
    }
    let at = |fs: &[Value], i: Option<usize>, what: &str| -> Value {
        fs[i.unwrap_or_else(|| panic!("{what}: {fs:#?}"))]["evidence"].clone()
    };
    // The probe: the stuck task at its await file:line, the stall named by its task, the pool.
    let ev = at(&probe, rows[0].2, "probe: stuck task");
    assert!(
        ev["own_frame"]
            .as_str()
            .is_some_and(|s| s.contains("http_service.rs:")),
        "{ev:#}"
    );
    let ev = at(&probe, rows[1].2, "probe: loop-blocked");
    assert!(
        ev["stall_task"].as_str().is_some_and(|t| tasks.contains(t)),
        "{tasks:?} {ev:#}"
    );
    at(&probe, rows[2].2, "probe: pool-starvation");
    // The console: the same stuck task, by name but with no await point (console-api has
    // none); the lost waker; no blocking pool (console-api has no pools but semaphores). A
    // stall it sees only when a sample lands while the poll runs: then it names a report task.
    let ev = at(&console, rows[0].1, "console: stuck task");
    assert_eq!(ev["name"], "cache-refresh", "{ev:#}");
    assert!(ev["own_frame"].is_null(), "{ev:#}");
    let ev = at(&console, rows[3].1, "console: lost waker");
    assert_eq!(ev["lost_waker"], true, "{ev:#}");
    assert!(rows[2].1.is_none(), "console: {console:#?}");
    if let Some(i) = rows[1].1 {
        let ev = &console[i]["evidence"];
        assert!(
            ev["stall_task"].as_str().is_some_and(|t| tasks.contains(t)),
            "{tasks:?} {ev:#}"
        );
    }
}
