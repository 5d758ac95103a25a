//! `stuck-task`: a live task has made no progress (same await point, not polled) for too
//! long, or (Rust) has lost its waker and can never run again, or (Python) was garbage-collected
//! while still pending.

use super::Rule;
use super::group;
use super::probe_common::{events_of, innermost, latest_probe, secs};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::{ProbeEvent, ProbeEventKind, Task, TaskState, own_frame};

pub struct StuckTask;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "stuck-task";

impl Rule for StuckTask {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "a live task has made no progress for too long, or has lost its waker"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some((_, probe)) = latest_probe(history) else {
            return Vec::new();
        };
        let destroyed = events_of(history, ProbeEventKind::TaskDestroyedPending)
            .into_iter()
            .map(|e| destroyed_pending(ID, e));
        let after = config.stuck_task_after.as_millis() as u64;
        let stuck = probe
            .tasks
            .iter()
            .filter(|t| t.state != TaskState::Done)
            .filter(|t| t.lost_waker || (t.parked.is_none() && t.since_progress_ms >= after))
            .map(|t| {
                let point = t
                    .await_chain
                    .last()
                    .map_or("unknown await point", |s| s.as_str());
                // Name the program's own line first: that is where a person looks.
                let own = own_frame(&t.await_chain);
                let shown = match own {
                    Some(own) if own != point => {
                        format!(
                            "{own} (in {})",
                            point.rsplit(" in ").next().unwrap_or(point)
                        )
                    }
                    _ => point.to_string(),
                };
                let (severity, message) = if t.lost_waker {
                    (
                        Severity::Error,
                        format!(
                            "{} lost its waker: nothing can wake it again; last at {shown}",
                            task_words(t)
                        ),
                    )
                } else {
                    (
                        Severity::Warning,
                        format!(
                            "{} has made no progress for {:.0}s, waiting at {shown}",
                            task_words(t),
                            t.since_progress_ms as f64 / 1000.0
                        ),
                    )
                };
                // Tasks of one bug wait at one place: their await point, or where they were
                // spawned when the runtime cannot say where they wait (tokio without dumps).
                let site = match (t.await_chain.is_empty(), &t.spawn_location) {
                    (true, Some(spawned)) => format!("spawned at {spawned}"),
                    _ => shown,
                };
                let key = format!(
                    "{}|{}|{site}",
                    t.lost_waker,
                    t.loop_id.as_deref().unwrap_or("")
                );
                let finding = Finding::new(ID, severity, format!("task:{}", t.id), message)
                    .with("task", t.id.clone())
                    .with("name", t.name.clone())
                    .with("kind", t.kind.clone())
                    .with("state", serde_json::to_value(t.state).unwrap_or_default())
                    .with("await_point", point)
                    .with("own_frame", own)
                    .with("await_chain", t.await_chain.clone())
                    .with("age_s", secs(t.age_ms))
                    .with("since_progress_s", secs(t.since_progress_ms))
                    .with("spawn_location", t.spawn_location.clone())
                    .with("lost_waker", t.lost_waker)
                    .with("waiting_on", t.waiting_on.clone())
                    .with("loop", t.loop_id.clone())
                    .with("site", site);
                (key, finding)
            });
        group::collapse(stuck, merge_stuck)
            .into_iter()
            .chain(destroyed)
            .collect()
    }
}

/// Many tasks stuck at one place: one finding, `1,392 tasks waiting at app.py:31 in
/// wait_for_payment (in Event.wait) with no progress for 12s or more`. Its subject is the
/// place, so the finding stays the same one while the count changes.
fn merge_stuck(_key: &str, members: &[Finding]) -> Finding {
    let first = &members[0];
    let site = first.evidence["site"]
        .as_str()
        .unwrap_or("unknown await point");
    let count = group::thousands(members.len());
    let lost = first.evidence["lost_waker"] == true;
    let quiet_s = members
        .iter()
        .filter_map(|f| f.evidence["since_progress_s"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let message = if lost {
        format!("{count} tasks lost their waker: nothing can wake them again; last at {site}")
    } else {
        format!("{count} tasks have made no progress for {quiet_s:.0}s or more, waiting at {site}")
    };
    let mut merged = Finding::new(ID, first.severity, format!("tasks:{site}"), message);
    for key in [
        "kind",
        "await_point",
        "own_frame",
        "await_chain",
        "spawn_location",
        "lost_waker",
        "loop",
        "site",
    ] {
        if let Some(v) = first.evidence.get(key) {
            merged = merged.with(key, v.clone());
        }
    }
    let names: Vec<serde_json::Value> = members
        .iter()
        .take(group::EXAMPLES)
        .map(|f| f.evidence["name"].clone())
        .collect();
    merged
        .with("names", names)
        .with("since_progress_s", quiet_s)
}

/// asyncio holds tasks only weakly: a pending task nothing else refers to is garbage, and
/// when the collector frees it, it is gone for good, without an error ("Task was destroyed but
/// it is pending!" on stderr at most). Like a lost waker, nothing can ever finish it.
fn destroyed_pending(rule: &str, e: &ProbeEvent) -> Finding {
    // The probe's message ends with ": <task name>".
    let task = e
        .message
        .rsplit_once(": ")
        .map_or("?", |(_, name)| name.trim());
    let point = innermost(&e.site);
    let own = own_frame(&e.site);
    let shown = match own {
        Some(own) => own,
        // The probe looks at tasks once a second; this one was freed before it looked.
        None if e.site.is_empty() => "an unknown place (freed before the probe first saw it)",
        None => point,
    };
    Finding::new(
        rule,
        Severity::Error,
        format!("coroutine:{} at {point}", e.subject),
        format!(
            "task {task} ({}) was garbage-collected while still pending ({}x), waiting at {shown}: \
             nothing kept a reference to it, so it never finished; keep a reference to the task \
             (asyncio holds tasks only weakly) and make sure what it awaits completes, or cancel it",
            e.subject, e.count
        ),
    )
    .with("task_name", task)
    .with("coroutine", e.subject.clone())
    .with("await_point", point)
    .with("own_frame", own)
    .with("await_chain", e.site.clone())
    .with("count", e.count)
    .destroyed_pending()
}

/// `task 5 (cache-refresh)`; the label left out where it says no more than the id (a Python
/// task named after its coroutine, a tokio task without a name: "task 3 (task)").
fn task_words(t: &Task) -> String {
    match t.label() {
        "" | "task" => format!("task {}", t.id),
        label if label == t.id => format!("task {}", t.id),
        label => format!("task {} ({label})", t.id),
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{ProbeData, Task};

    fn task(id: &str, since_ms: u64, state: TaskState, lost_waker: bool) -> Task {
        Task {
            id: id.into(),
            name: id.into(),
            kind: "forever".into(),
            state,
            await_chain: vec![
                "app.py:3 in forever".into(),
                "/usr/lib/python3.11/asyncio/locks.py:213 in Event.wait".into(),
            ],
            age_ms: since_ms + 500,
            since_progress_ms: since_ms,
            lost_waker,
            ..Task::default()
        }
    }

    fn tasks(tasks: Vec<Task>) -> ProbeData {
        ProbeData {
            tasks,
            ..ProbeData::default()
        }
    }

    #[test]
    fn fires_on_a_task_without_progress_past_the_threshold() {
        let h = history(vec![(
            0,
            tasks(vec![task("waiter", 12_000, TaskState::Idle, false)]),
        )]);
        let f = StuckTask.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "task:waiter");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            f[0].evidence["await_point"],
            "/usr/lib/python3.11/asyncio/locks.py:213 in Event.wait"
        );
        assert_eq!(f[0].evidence["since_progress_s"], 12.0);
        assert!(f[0].message.contains("no progress for 12s"));
        assert!(
            f[0].message
                .contains("waiting at app.py:3 in forever (in Event.wait)"),
            "{}",
            f[0].message
        );
        assert_eq!(f[0].evidence["own_frame"], "app.py:3 in forever");
    }

    #[test]
    fn quiet_for_progressing_done_or_young_tasks() {
        let h = history(vec![(
            0,
            tasks(vec![
                task("busy", 200, TaskState::Idle, false),
                task("finished", 60_000, TaskState::Done, false),
                task("young", 9_000, TaskState::Idle, false),
            ]),
        )]);
        assert!(StuckTask.check(&h, &Config::default()).is_empty());
    }

    #[test]
    fn parked_tasks_are_not_stuck_unless_their_waker_is_lost() {
        let mut sleeper = task("sleeper", 60_000, TaskState::Idle, false);
        sleeper.parked = Some("timer".into());
        let mut lost = task("lost", 60_000, TaskState::Idle, true);
        lost.parked = Some("timer".into());
        let h = history(vec![(0, tasks(vec![sleeper, lost]))]);
        let f = StuckTask.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "task:lost");
    }

    #[test]
    fn a_lost_waker_is_an_error_at_once() {
        let h = history(vec![(
            0,
            tasks(vec![task("17", 50, TaskState::Idle, true)]),
        )]);
        let f = StuckTask.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].evidence["lost_waker"], true);
    }

    #[test]
    fn a_task_collected_while_pending_is_an_error() {
        let data = ProbeData {
            events: vec![crate::model::ProbeEvent {
                kind: ProbeEventKind::TaskDestroyedPending,
                subject: "wait_forever".into(),
                site: vec![
                    "app.py:7 in wait_forever".into(),
                    "/usr/lib/python3.11/asyncio/locks.py:213 in Event.wait".into(),
                ],
                message: "Task was destroyed but it is pending!: waits-forever".into(),
                count: 2,
                ..Default::default()
            }],
            ..ProbeData::default()
        };
        let f = StuckTask.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(
            f[0].subject,
            "coroutine:wait_forever at /usr/lib/python3.11/asyncio/locks.py:213 in Event.wait"
        );
        assert_eq!(f[0].evidence["task_name"], "waits-forever");
        assert!(
            f[0].message.starts_with(
                "task waits-forever (wait_forever) was garbage-collected while still pending (2x), \
                 waiting at app.py:7 in wait_forever"
            ),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn tasks_stuck_at_one_place_are_one_finding_with_a_count() {
        let mut many: Vec<Task> = (0..1392)
            .map(|i| task(&format!("pay-{i}"), 20_000 + i, TaskState::Idle, false))
            .collect();
        let mut elsewhere = task("other", 30_000, TaskState::Idle, false);
        elsewhere.await_chain = vec!["worker.py:9 in drain".into()];
        many.push(elsewhere);
        let f = StuckTask.check(&history(vec![(0, tasks(many))]), &Config::default());
        assert_eq!(f.len(), 2, "{f:#?}");
        let grouped = &f[0];
        assert_eq!(grouped.subject, "tasks:app.py:3 in forever (in Event.wait)");
        assert_eq!(grouped.evidence["count"], 1392);
        assert_eq!(
            grouped.message,
            "1,392 tasks have made no progress for 20s or more, waiting at app.py:3 in forever \
             (in Event.wait)"
        );
        assert_eq!(
            grouped.evidence["examples"],
            serde_json::json!([
                "task:pay-0",
                "task:pay-1",
                "task:pay-2",
                "task:pay-3",
                "task:pay-4"
            ])
        );
        // A lone task elsewhere keeps its own finding, as before.
        assert_eq!(f[1].subject, "task:other");
        // The grouped subject does not move with the count.
        let fewer: Vec<Task> = (0..3)
            .map(|i| task(&format!("pay-{i}"), 20_000, TaskState::Idle, false))
            .collect();
        let g = StuckTask.check(&history(vec![(0, tasks(fewer))]), &Config::default());
        assert_eq!(g[0].subject, grouped.subject);
        assert_eq!(g[0].evidence["count"], 3);
    }

    #[test]
    fn threshold_is_configurable() {
        let h = history(vec![(
            0,
            tasks(vec![task("w", 2_500, TaskState::Idle, false)]),
        )]);
        let mut c = Config::default();
        assert!(StuckTask.check(&h, &c).is_empty());
        c.set("stuck-task.after=2s").unwrap();
        assert_eq!(StuckTask.check(&h, &c).len(), 1);
    }
}

/// The shapes the Rust probe and the console source send for tokio (see probes/rust).
#[cfg(test)]
mod tokio_shapes {
    use super::super::probe_common::testing::{history, tokio, tokio_task};
    use super::*;

    #[test]
    fn tokio_tasks_with_no_await_point_group_by_spawn_site() {
        let quiet: Vec<_> = (0..3)
            .map(|i| tokio_task(&format!("{}", 50 + i), 1, 12_000, 12_000))
            .collect();
        let h = history(vec![(0, tokio(quiet, vec![], vec![]))]);
        let f = StuckTask.check(&h, &Config::default());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].subject, "tasks:spawned at src/main.rs:10:5");
        assert_eq!(f[0].evidence["count"], 3);
    }

    #[test]
    fn lost_waker_fires_at_once_and_a_quiet_tokio_task_after_the_threshold() {
        let mut lost = tokio_task("41", 3, 200, 200);
        lost.lost_waker = true;
        let quiet = tokio_task("42", 1, 12_000, 12_000);
        let fresh = tokio_task("43", 1, 12_000, 50);
        let h = history(vec![(0, tokio(vec![lost, quiet, fresh], vec![], vec![]))]);
        let f = StuckTask.check(&h, &Config::default());
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["task:41", "task:42"]);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].evidence["spawn_location"], "src/main.rs:10:5");
    }

    #[test]
    fn a_named_tokio_task_is_called_by_its_name() {
        let mut named = tokio_task("41", 3, 12_000, 12_000);
        named.name = "db-writer".into();
        named.spawn_location = Some("src/db.rs:7:9".into());
        let mut lost = tokio_task("42", 3, 200, 200);
        lost.name = "drops-its-waker".into();
        lost.lost_waker = true;
        let unnamed = tokio_task("43", 1, 12_000, 12_000);
        let h = history(vec![(0, tokio(vec![named, lost, unnamed], vec![], vec![]))]);
        let f = StuckTask.check(&h, &Config::default());
        let message = |subject: &str| {
            let f = f.iter().find(|f| f.subject == subject).expect(subject);
            (f.message.clone(), f.evidence["name"].clone())
        };
        let (m, name) = message("task:41");
        assert!(
            m.starts_with("task 41 (db-writer) has made no progress"),
            "{m}"
        );
        assert_eq!(name, "db-writer");
        let (m, _) = message("task:42");
        assert!(
            m.starts_with("task 42 (drops-its-waker) lost its waker"),
            "{m}"
        );
        let (m, _) = message("task:43");
        assert!(m.starts_with("task 43 has made no progress"), "{m}");
    }
}
