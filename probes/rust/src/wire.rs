//! The `leakhound/1` messages this probe sends (see probes/PROTOCOL.md), filled from the
//! registry and the lag monitor. The types are `leakhound-protocol`'s, the ones leakhound
//! reads, so the two cannot drift; this crate does not depend on leakhound itself.

use crate::lag::{Shared, epoch_ms};
use crate::registry;
pub(crate) use leakhound_protocol::{
    Dropped, EventLoop, LagStats, Pool, ProbeData, RuntimeMetrics, Stall, Task, TaskState,
};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Tasks sent in one reply at most; the rest are counted in `dropped.tasks`.
const MAX_TASKS: usize = 20_000;

pub(crate) const LOOP_ID: &str = "tokio";

fn loc(l: &std::panic::Location<'_>) -> String {
    format!("{}:{}:{}", l.file(), l.line(), l.column())
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn ns_to_ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The live tasks (and the newest finished ones) as the protocol shows them.
pub(crate) fn tasks() -> (Vec<Task>, u64) {
    let now = registry::now_ns();
    let running: std::collections::HashMap<u64, u64> = registry::polls_now()
        .into_iter()
        .map(|(id, since, _)| (id, since))
        .collect();
    let (live, finished) = registry::collect();
    let extras = crate::spawn::of(live.iter().filter(|(_, e)| e.extra).map(|(id, _)| *id));
    let lost = lost_wakers(&live, &running, &extras);
    let shown = crate::dump::progress_view();
    let mut out = Vec::with_capacity(live.len() + finished.len());
    for (id, mut e) in live {
        (e.polls, e.last_poll_end_ns) = shown(id, e.polls, e.last_poll_end_ns);
        let polling = running.contains_key(&id);
        let waiting = if polling {
            None
        } else {
            crate::dump::waiting(id, e.polls)
        }
        .unwrap_or_default();
        let progress = if e.last_poll_end_ns == 0 {
            e.spawned_ns
        } else {
            e.last_poll_end_ns
        };
        out.push(Task {
            id: id.to_string(),
            name: extras
                .get(&id)
                .and_then(|x| x.name.as_deref())
                .unwrap_or_default()
                .to_string(),
            state: if polling {
                TaskState::Running
            } else {
                TaskState::Idle
            },
            kind: "task".into(),
            spawn_location: Some(loc(e.location)),
            age_ms: ns_to_ms(now.saturating_sub(e.spawned_ns)),
            // A task in a poll is making progress unless the poll itself is long (a stall).
            since_progress_ms: if polling {
                0
            } else {
                ns_to_ms(now.saturating_sub(progress))
            },
            polls: Some(e.polls),
            busy_ms: Some(ns_to_ms(e.busy_ns)),
            lost_waker: lost.contains(&id),
            loop_id: Some(LOOP_ID.into()),
            await_chain: waiting.chain,
            parked: waiting.parked.map(String::from),
            ..Task::default()
        });
    }
    for f in finished {
        out.push(Task {
            id: f.id.to_string(),
            name: f.name.as_deref().unwrap_or_default().to_string(),
            state: TaskState::Done,
            kind: "task".into(),
            spawn_location: Some(loc(f.entry.location)),
            age_ms: ns_to_ms(f.ended_ns.saturating_sub(f.entry.spawned_ns)),
            since_progress_ms: 0,
            polls: Some(f.entry.polls),
            busy_ms: Some(ns_to_ms(f.entry.busy_ns)),
            lost_waker: false,
            loop_id: Some(LOOP_ID.into()),
            ..Task::default()
        });
    }
    let dropped = out.len().saturating_sub(MAX_TASKS) as u64;
    out.truncate(MAX_TASKS);
    (out, dropped)
}

/// Tasks spawned through [`crate::spawn`] that are pending with no waker left and were not
/// woken. A task seen that way between its poll's start and the hook's mark would look lost
/// for an instant, so each is checked again: still not polling, no poll since.
fn lost_wakers(
    live: &[(u64, registry::Entry)],
    running: &std::collections::HashMap<u64, u64>,
    extras: &std::collections::HashMap<u64, crate::spawn::Extra>,
) -> std::collections::HashSet<u64> {
    let seen: Vec<(u64, u64)> = live
        .iter()
        .filter(|(id, _)| !running.contains_key(id))
        .filter(|(id, _)| extras.get(id).is_some_and(|x| x.lost_waker()))
        .map(|(id, e)| (*id, e.polls))
        .collect();
    if seen.is_empty() {
        return Default::default();
    }
    let running_now: std::collections::HashSet<u64> =
        registry::polls_now().into_iter().map(|p| p.0).collect();
    seen.into_iter()
        .filter(|(id, polls)| {
            !running_now.contains(id)
                && registry::progress_of(*id).is_some_and(|(p, _)| p == *polls)
                && extras[id].lost_waker()
        })
        .map(|(id, _)| id)
        .collect()
}

/// What this build cannot see, each with how to turn it on.
pub(crate) fn missing() -> Vec<String> {
    let mut m = Vec::new();
    if !cfg!(tokio_unstable) {
        m.push(
            "tasks: tokio's task hooks need RUSTFLAGS=\"--cfg tokio_unstable\" (or [build] rustflags in .cargo/config.toml), then #[leakhound_probe::main] instead of #[tokio::main]".into(),
        );
        m.push(
            "blocking pool: threads, idle threads and queue depth need RUSTFLAGS=\"--cfg tokio_unstable\"".into(),
        );
    } else if !registry::HOOKS_INSTALLED.load(Ordering::Relaxed) {
        m.push(
            "tasks: #[tokio::main] cannot install task hooks; write #[leakhound_probe::main] instead (same arguments) for every task with its spawn site, stuck tasks, and the task behind a stall".into(),
        );
    }
    m.push(
        "lost-waker: seen only for tasks spawned with leakhound_probe::spawn / spawn_named (tokio's task hooks do not track wakers); for the rest attach to a console-subscriber endpoint (http://HOST:PORT)".into(),
    );
    m.push("stacks: native thread stacks are not collected by the Rust probe".into());
    if !cfg!(all(tokio_unstable, feature = "taskdump")) {
        m.push(
            "await points: stuck tasks' await chains need leakhound-probe's default feature \"taskdump\" and RUSTFLAGS=\"--cfg tokio_unstable\" (Linux)".into(),
        );
    } else if *crate::dump::DISABLED {
        m.push(
            "await points: stuck tasks' await chains come from tokio task dumps: set LEAKHOUND_TASKDUMP=1 (off by default: tokio 1.54.1 can livelock a worker in a dump)".into(),
        );
    }
    m.extend(crate::names::missing());
    m.extend(crate::fmt::missing());
    m
}

pub(crate) fn snapshot(shared: &Shared) -> ProbeData {
    let now = Instant::now();
    let m = shared.handle.metrics();
    let workers = m.num_workers();

    #[cfg(tokio_unstable)]
    let (bt, bi, bq) = (
        Some(m.num_blocking_threads() as u64),
        Some(m.num_idle_blocking_threads() as u64),
        Some(m.blocking_queue_depth() as u64),
    );
    #[cfg(not(tokio_unstable))]
    let (bt, bi, bq): (Option<u64>, Option<u64>, Option<u64>) = (None, None, None);

    let st = shared.lag();
    let (p50, p99, max, samples, history) = st.summary();
    let mut stalls: Vec<Stall> = st.stalls.iter().cloned().collect();
    // Stalls still going on right now are reported with their duration so far.
    if let Some((since, at_ms)) = st.blocked_since {
        stalls.push(Stall {
            at_ms,
            duration_ms: now.saturating_duration_since(since).as_secs_f64() * 1000.0,
            stack: Vec::new(),
            task: None,
        });
    }
    for p in st.stuck_workers.values() {
        stalls.push(Stall {
            at_ms: p.at_ms,
            duration_ms: p.duration_ms,
            stack: p.stack.clone(),
            task: None,
        });
    }
    for (task, p) in &st.long_polls {
        stalls.push(Stall {
            at_ms: p.at_ms,
            duration_ms: p.duration_ms,
            stack: p.stack.clone(),
            task: Some(task.to_string()),
        });
    }
    let blocking_saturated = st.blocking_saturated_since;
    let busy_ratio = st.busy_ratio;
    let window_ms = shared.window.as_millis() as u64;
    drop(st);

    let mut pools = crate::semaphore::pools();
    if let (Some(threads), Some(idle), Some(queued)) = (bt, bi, bq) {
        pools.push(Pool {
            id: "blocking_pool".into(),
            kind: "blocking_pool".into(),
            name: "tokio blocking pool".into(),
            max_workers: shared.max_blocking_threads as u64,
            live_workers: threads,
            busy_workers: threads.saturating_sub(idle),
            queued,
            saturated_ms: blocking_saturated.map_or(0, |t| millis(now.duration_since(t))),
            queue_wait_p99_ms: None,
            submitted: 0,
            completed: 0,
            open: true,
            created_at: None,
        });
    }
    let (tasks, dropped_tasks) = tasks();
    let flavor = match shared.handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    ProbeData {
        runtime: "tokio".into(),
        runtime_version: format!("tokio ({flavor})"),
        probe_version: env!("CARGO_PKG_VERSION").into(),
        now_ms: epoch_ms(),
        loops: vec![EventLoop {
            id: LOOP_ID.into(),
            tid: 0,
            running: !shared.stop.load(Ordering::Relaxed),
            lag: LagStats {
                p50_ms: p50,
                p99_ms: p99,
                max_ms: max,
                samples,
                window_ms,
            },
            lag_history_ms: history,
            stalls,
            runtime: Some(RuntimeMetrics {
                workers: workers as u64,
                alive_tasks: m.num_alive_tasks() as u64,
                global_queue_depth: m.global_queue_depth() as u64,
                busy_ratio,
                blocking_threads: bt,
                idle_blocking_threads: bi,
                blocking_queue_depth: bq,
            }),
        }],
        tasks,
        pools,
        missing: missing(),
        dropped: Dropped {
            events: 0,
            tasks: dropped_tasks,
        },
        ..ProbeData::default()
    }
}
