//! Fixed, realistic data for the dashboard's snapshot tests, its benchmark and docs: a
//! Python service with a stuck task, a blocked loop, a starved pool, CLOSE_WAIT sockets and
//! a zombie child. Not used by the tool itself.

use crate::findings::{Finding, Severity};
use crate::model::*;
use crate::tui::event::Update;
use std::collections::BTreeMap;

/// The fixed clock the fixtures are consistent with (ms since the epoch).
pub const NOW_MS: u64 = 1_800_000_000_000;

pub fn now() -> u64 {
    NOW_MS
}

fn task(
    id: &str,
    name: &str,
    state: TaskState,
    since_s: u64,
    chain: &[&str],
    parent: Option<&str>,
) -> Task {
    Task {
        id: id.into(),
        name: name.into(),
        state,
        kind: name.into(),
        await_chain: chain.iter().map(|s| s.to_string()).collect(),
        spawn_location: Some("app.py:88".into()),
        age_ms: since_s * 1000 + 4_000,
        since_progress_ms: since_s * 1000,
        polls: Some(3 + since_s),
        loop_id: Some("main".into()),
        parent: parent.map(str::to_string),
        ..Default::default()
    }
}

/// A snapshot of pid 4242 taken `seq` seconds after the fixture starts; the fd count grows
/// by 4 per second so trends and forecasts have something to show.
pub fn snapshot(seq: u64) -> Snapshot {
    let taken_at_ms = NOW_MS - 6_500 + seq * 1_000;
    let mut by_kind = BTreeMap::new();
    by_kind.insert(FdKind::File, 120 + seq * 4);
    by_kind.insert(FdKind::Socket, 96);
    by_kind.insert(FdKind::Pipe, 6);
    by_kind.insert(FdKind::Epoll, 1);
    let open: u64 = by_kind.values().sum();
    let threads = vec![
        thread(
            4242,
            "python3",
            ProcState::Sleeping,
            5_400 + seq * 400,
            Some("do_epoll_wait"),
            Some("MainThread"),
            Some(false),
        ),
        thread(
            4247,
            "asyncio_0",
            ProcState::Running,
            2_100 + seq * 990,
            None,
            Some("asyncio_0"),
            Some(true),
        ),
        thread(
            4248,
            "asyncio_1",
            ProcState::Running,
            2_000 + seq * 1000,
            None,
            Some("asyncio_1"),
            Some(true),
        ),
        thread(
            4250,
            "poller",
            ProcState::Sleeping,
            10,
            Some("hrtimer_nanosleep"),
            Some("poller"),
            Some(false),
        ),
    ];
    let children = vec![
        Child {
            pid: 4301,
            ppid: 4242,
            state: ProcState::Sleeping,
            cmd: "python3 -m worker --id 1".into(),
            age_ms: 61_000,
            depth: 1,
            has_probe: true,
        },
        Child {
            pid: 4302,
            ppid: 4242,
            state: ProcState::Zombie,
            cmd: "[sh]".into(),
            age_ms: 30_000,
            depth: 1,
            has_probe: false,
        },
        Child {
            pid: 4310,
            ppid: 4301,
            state: ProcState::Sleeping,
            cmd: "sleep 600".into(),
            age_ms: 59_000,
            depth: 2,
            has_probe: false,
        },
    ];
    let mut sockets = vec![Socket {
        proto: Proto::Tcp,
        local: "127.0.0.1:8080".into(),
        remote: "0.0.0.0:0".into(),
        state: "LISTEN".into(),
        inode: 9000,
        fd: Some(5),
        rx_queue: 0,
        tx_queue: 0,
    }];
    for i in 0..6u32 {
        sockets.push(Socket {
            proto: Proto::Tcp,
            local: "127.0.0.1:8080".into(),
            remote: format!("127.0.0.1:{}", 51000 + i),
            state: if i < 4 { "CLOSE_WAIT" } else { "ESTABLISHED" }.into(),
            inode: 9001 + i as u64,
            fd: Some(10 + i as i32),
            rx_queue: 0,
            tx_queue: 0,
        });
    }
    sockets.push(Socket {
        proto: Proto::Unix,
        local: "/run/user/1000/leakhound/4242.sock".into(),
        remote: String::new(),
        state: "LISTEN".into(),
        inode: 9100,
        fd: Some(7),
        rx_queue: 0,
        tx_queue: 0,
    });
    let tasks = vec![
        task(
            "Task-1",
            "main",
            TaskState::Idle,
            0,
            &["app.py:120 in main", "asyncio/tasks.py:639 in gather"],
            None,
        ),
        task(
            "Task-2",
            "serve",
            TaskState::Idle,
            1,
            &[
                "app.py:60 in serve",
                "asyncio/base_events.py:1632 in serve_forever",
            ],
            Some("Task-1"),
        ),
        task(
            "Task-3",
            "wait_for_config",
            TaskState::Idle,
            48 + seq,
            &[
                "app.py:33 in wait_for_config",
                "asyncio/locks.py:213 in wait",
            ],
            Some("Task-1"),
        ),
        task(
            "Task-4",
            "fetch",
            TaskState::Running,
            0,
            &["app.py:41 in fetch"],
            Some("Task-2"),
        ),
        task(
            "Task-5",
            "fetch",
            TaskState::Scheduled,
            0,
            &["app.py:41 in fetch"],
            Some("Task-2"),
        ),
        task(
            "Task-6",
            "crunch",
            TaskState::Idle,
            12,
            &["app.py:72 in crunch", "asyncio/futures.py:287 in __await__"],
            Some("Task-2"),
        ),
    ];
    let probe = ProbeData {
        runtime: "python".into(),
        runtime_version: "3.11.7".into(),
        probe_version: "0.1.0".into(),
        now_ms: taken_at_ms,
        loops: vec![EventLoop {
            id: "main".into(),
            tid: 4242,
            running: true,
            lag: LagStats {
                p50_ms: 2.0,
                p99_ms: 310.0,
                max_ms: 1_020.0,
                samples: 95,
                window_ms: 10_000,
            },
            lag_history_ms: (0..40)
                .map(|i| {
                    if i % 9 == 4 {
                        300.0 + i as f64
                    } else {
                        1.0 + (i % 3) as f64
                    }
                })
                .collect(),
            stalls: vec![Stall {
                at_ms: taken_at_ms - 2_000,
                duration_ms: 1_020.0,
                stack: vec![
                    "app.py:120 in main".into(),
                    "app.py:75 in crunch".into(),
                    "time.sleep".into(),
                ],
                task: Some("Task-6".into()),
            }],
            runtime: None,
        }],
        tasks,
        threads: vec![],
        pools: vec![Pool {
            id: "pool-1".into(),
            kind: "thread_pool".into(),
            name: "default_executor".into(),
            max_workers: 2,
            live_workers: 2,
            busy_workers: 2,
            queued: 14,
            saturated_ms: 8_000,
            queue_wait_p99_ms: Some(4_100.0),
            submitted: 40,
            completed: 24,
            open: true,
            created_at: Some("app.py:20".into()),
        }],
        children: vec![],
        events: vec![],
        missing: vec![],
        dropped: Dropped {
            events: 0,
            tasks: 0,
        },
    };
    Snapshot {
        taken_at_ms,
        pid: 4242,
        source: "procfs+probe(python)".into(),
        process: Some(Process {
            pid: 4242,
            ppid: 1,
            name: "python3".into(),
            cmd: "python3 app.py --port 8080".into(),
            state: ProcState::Sleeping,
            start_time_ms: NOW_MS - 125_000,
            rss_bytes: 48 * 1024 * 1024,
            cpu_time_ms: 9_500 + seq * 2_000,
            uid: 1000,
        }),
        threads,
        children,
        fds: FdSummary {
            open,
            soft_limit: Some(256),
            hard_limit: Some(4096),
            by_kind,
        },
        fd_list: None,
        sockets,
        probe: Some(probe),
        notes: vec![],
        workers: vec![],
        ended: vec![],
    }
}

#[allow(clippy::too_many_arguments)]
fn thread(
    tid: u32,
    name: &str,
    state: ProcState,
    cpu: u64,
    wchan: Option<&str>,
    rn: Option<&str>,
    daemon: Option<bool>,
) -> Thread {
    Thread {
        tid,
        name: name.into(),
        state,
        cpu_time_ms: cpu,
        wchan: wchan.map(str::to_string),
        runtime_name: rn.map(str::to_string),
        daemon,
        stack: if tid == 4242 {
            vec!["app.py:120 in main".into(), "app.py:75 in crunch".into()]
        } else {
            vec![]
        },
        py_stack: None,
    }
}

/// Findings as the rules would give them for [`snapshot`] (the dashboard only renders).
pub fn findings() -> Vec<Finding> {
    let mut f = vec![
        Finding::new(
            "fd-exhaustion",
            Severity::Error,
            "pid:4242",
            "247 of 256 descriptors open (96%); at +4/s the limit is reached in ~2s",
        )
        .with("open", 247)
        .with("soft_limit", 256)
        .with("rate_per_s", 4.0),
        Finding::new(
            "stuck-task",
            Severity::Warning,
            "task:Task-3",
            "task wait_for_config has made no progress for 58s at app.py:33 in wait_for_config",
        )
        .with("since_progress_ms", 58_000)
        .with(
            "await_chain",
            vec![
                "app.py:33 in wait_for_config",
                "asyncio/locks.py:213 in wait",
            ],
        ),
        Finding::new(
            "loop-blocked",
            Severity::Error,
            "loop:main",
            "event loop blocked for 1020ms (p99 310ms) in crunch",
        )
        .with("max_ms", 1_020.0)
        .with(
            "stack",
            vec!["app.py:120 in main", "app.py:75 in crunch", "time.sleep"],
        ),
        Finding::new(
            "pool-starvation",
            Severity::Warning,
            "pool:default_executor",
            "2/2 workers busy with 14 queued for 8.0s (queue wait p99 4.1s)",
        )
        .with("queued", 14)
        .with("busy_workers", 2),
        Finding::new(
            "close-wait",
            Severity::Warning,
            "pid:4242",
            "4 sockets in CLOSE_WAIT: the peer closed and this side never did",
        )
        .with("count", 4),
        Finding::new(
            "zombie-child",
            Severity::Warning,
            "pid:4302",
            "child 4302 ([sh]) exited 30s ago and was never reaped",
        )
        .with("ppid", 4242),
        Finding::new(
            "never-awaited",
            Severity::Warning,
            "coroutine:app.py:52 notify",
            "coroutine 'notify' was never awaited (3 times)",
        )
        .with("site", vec!["app.py:52 in handle", "app.py:50 in notify"]),
        Finding::new(
            "unclosed-resource",
            Severity::Info,
            "socket:app.py:97",
            "unclosed socket created at app.py:97",
        )
        .with("site", vec!["app.py:97 in connect"]),
    ];
    crate::findings::sort_findings(&mut f);
    f
}

pub fn update(seq: u64) -> Box<Update> {
    Box::new(Update {
        snapshot: snapshot(seq),
        findings: findings(),
        source: "pid 4242 (procfs+probe python)".into(),
        replay: None,
        skipped: 0,
        resolved: vec![],
    })
}

/// A snapshot at the benchmark's scale: `tasks` live tasks and `sockets` sockets.
pub fn large_snapshot(tasks: usize, sockets: usize) -> Snapshot {
    let mut s = snapshot(0);
    let probe = s.probe.as_mut().expect("fixture has a probe");
    probe.tasks = (0..tasks)
        .map(|i| Task {
            id: i.to_string(),
            name: format!("conn-handler-{}", i % 977),
            state: if i % 10 == 0 {
                TaskState::Running
            } else {
                TaskState::Idle
            },
            kind: "task".into(),
            await_chain: vec![format!("src/server.rs:{} in handle", 100 + i % 50)],
            spawn_location: Some("src/server.rs:42".into()),
            age_ms: (i as u64 * 37) % 600_000,
            since_progress_ms: (i as u64 * 7919) % 120_000,
            polls: Some(i as u64 % 1000),
            parent: (i > 0).then(|| (i / 10).to_string()),
            ..Default::default()
        })
        .collect();
    s.sockets = (0..sockets)
        .map(|i| Socket {
            proto: Proto::Tcp,
            local: "127.0.0.1:8080".into(),
            remote: format!("127.0.0.1:{}", 20000 + i),
            state: if i % 20 == 0 {
                "CLOSE_WAIT"
            } else {
                "ESTABLISHED"
            }
            .into(),
            inode: 100_000 + i as u64,
            fd: Some(10 + i as i32),
            rx_queue: 0,
            tx_queue: 0,
        })
        .collect();
    s.fds.open = sockets as u64 + 40;
    s.fds.soft_limit = Some(65_536);
    s
}
