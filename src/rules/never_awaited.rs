//! `never-awaited`: work that was created and never ran. Python: a coroutine collected
//! without being awaited (with its creation site). Rust: a spawned task never polled.

use super::Rule;
use super::group;
use super::probe_common::{events_by_site, innermost, latest_probe, secs};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::{ProbeEventKind, TaskState};

pub struct NeverAwaited;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "never-awaited";

impl Rule for NeverAwaited {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "a coroutine was never awaited (Python), or a spawned task never polled (Rust)"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let mut out: Vec<Finding> = events_by_site(history, ProbeEventKind::NeverAwaited)
            .into_iter()
            .map(|e| {
                let site = innermost(&e.site);
                Finding::new(
                    ID,
                    Severity::Warning,
                    format!("coroutine:{} at {site}", e.subject),
                    format!(
                        "coroutine '{}' was never awaited ({}x), at {site}: its work never ran",
                        e.subject, e.count
                    ),
                )
                .with("coroutine", e.subject.clone())
                .with("count", e.count)
                .with("created_at", site)
                .with("site", e.site.clone())
            })
            .collect();
        let Some((_, probe)) = latest_probe(history) else {
            return out;
        };
        let after = config.never_polled_after.as_millis() as u64;
        // Tasks of one bug are spawned at one place: one finding per spawn site.
        let never_polled = probe
            .tasks
            .iter()
            .filter(|t| t.polls == Some(0) && t.state != TaskState::Done && t.age_ms >= after)
            .map(|t| {
                let site = t.spawn_location.as_deref().unwrap_or("unknown spawn site");
                let finding = Finding::new(
                    ID,
                    Severity::Warning,
                    format!("task:{}", t.id),
                    format!(
                        "task {} was spawned at {site} {:.0}s ago and never polled",
                        t.id,
                        t.age_ms as f64 / 1000.0
                    ),
                )
                .with("task", t.id.clone())
                .with("kind", t.kind.clone())
                .with("spawn_location", t.spawn_location.clone())
                .with("age_s", secs(t.age_ms));
                (site.to_string(), finding)
            });
        out.extend(group::collapse(never_polled, merge_never_polled));
        out
    }
}

/// Many tasks spawned at one place and never polled: one finding, `40 tasks spawned at
/// src/main.rs:40:5 were never polled (the youngest 11s ago)`, whose subject is the place.
fn merge_never_polled(site: &str, members: &[Finding]) -> Finding {
    let first = &members[0];
    let youngest_s = members
        .iter()
        .filter_map(|f| f.evidence["age_s"].as_f64())
        .fold(f64::INFINITY, f64::min);
    Finding::new(
        ID,
        first.severity,
        format!("tasks:spawned at {site}"),
        format!(
            "{} tasks spawned at {site} were never polled (the youngest {youngest_s:.0}s ago)",
            group::thousands(members.len())
        ),
    )
    .with("kind", first.evidence["kind"].clone())
    .with("spawn_location", first.evidence["spawn_location"].clone())
    .with("age_s", youngest_s)
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{ProbeData, ProbeEvent, Task};

    fn unawaited(count: u64) -> ProbeEvent {
        ProbeEvent {
            seq: 1,
            kind: ProbeEventKind::NeverAwaited,
            subject: "send_email".into(),
            site: vec!["app.py:20 in main".into(), "app.py:9 in handler".into()],
            count,
            ..ProbeEvent::default()
        }
    }

    #[test]
    fn fires_with_creation_site_and_count() {
        let data = ProbeData {
            events: vec![unawaited(3)],
            ..ProbeData::default()
        };
        let f = NeverAwaited.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "coroutine:send_email at app.py:9 in handler");
        assert_eq!(f[0].evidence["created_at"], "app.py:9 in handler");
        assert_eq!(f[0].evidence["count"], 3);
    }

    #[test]
    fn one_line_reached_from_several_callers_is_one_finding_with_the_counts_summed() {
        let from = |caller: &str, count| ProbeEvent {
            site: vec![caller.into(), "app.py:9 in handler".into()],
            ..unawaited(count)
        };
        let data = ProbeData {
            events: vec![from("app.py:20 in main", 3), from("app.py:31 in cron", 4)],
            ..ProbeData::default()
        };
        let f = NeverAwaited.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].evidence["count"], 7);
        assert!(f[0].message.contains("(7x)"), "{}", f[0].message);
    }

    #[test]
    fn other_events_and_polled_tasks_do_not_fire() {
        let data = ProbeData {
            events: vec![ProbeEvent {
                kind: ProbeEventKind::UnclosedResource,
                ..unawaited(1)
            }],
            tasks: vec![
                Task {
                    id: "7".into(),
                    polls: Some(4),
                    age_ms: 60_000,
                    ..Task::default()
                },
                Task {
                    id: "8".into(),
                    polls: None,
                    age_ms: 60_000,
                    ..Task::default()
                },
                Task {
                    id: "9".into(),
                    polls: Some(0),
                    age_ms: 2_000,
                    ..Task::default()
                },
            ],
            ..ProbeData::default()
        };
        assert!(
            NeverAwaited
                .check(&history(vec![(0, data)]), &Config::default())
                .is_empty()
        );
    }

    #[test]
    fn rust_task_never_polled_fires_after_threshold() {
        let data = ProbeData {
            tasks: vec![Task {
                id: "12".into(),
                polls: Some(0),
                age_ms: 11_000,
                spawn_location: Some("src/main.rs:40:5".into()),
                ..Task::default()
            }],
            ..ProbeData::default()
        };
        let f = NeverAwaited.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "task:12");
        assert_eq!(f[0].evidence["spawn_location"], "src/main.rs:40:5");
    }
}

/// The shapes the Rust probe and the console source send for tokio (see probes/rust).
#[cfg(test)]
mod tokio_shapes {
    use super::super::probe_common::testing::{history, tokio, tokio_task};
    use super::*;

    #[test]
    fn a_tokio_task_never_polled_past_the_threshold() {
        let never = tokio_task("7", 0, 11_000, 11_000);
        let young = tokio_task("8", 0, 500, 500);
        let polled = tokio_task("9", 1, 11_000, 11_000);
        let h = history(vec![(0, tokio(vec![never, young, polled], vec![], vec![]))]);
        let f = NeverAwaited.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "task:7");
        assert_eq!(f[0].evidence["spawn_location"], "src/main.rs:10:5");
    }

    #[test]
    fn tasks_never_polled_at_one_spawn_site_are_one_finding_with_a_count() {
        let mut tasks: Vec<_> = (0..40)
            .map(|i| tokio_task(&format!("{}", 100 + i), 0, 11_000 + i * 100, 11_000))
            .collect();
        let mut elsewhere = tokio_task("7", 0, 20_000, 20_000);
        elsewhere.spawn_location = Some("src/jobs.rs:3:9".into());
        tasks.push(elsewhere);
        let h = history(vec![(0, tokio(tasks, vec![], vec![]))]);
        let f = NeverAwaited.check(&h, &Config::default());
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].subject, "tasks:spawned at src/main.rs:10:5");
        assert_eq!(f[0].evidence["count"], 40);
        assert_eq!(
            f[0].message,
            "40 tasks spawned at src/main.rs:10:5 were never polled (the youngest 11s ago)"
        );
        assert_eq!(f[0].evidence["examples"][0], "task:100");
        assert_eq!(f[0].evidence["examples"].as_array().unwrap().len(), 5);
        // A lone task elsewhere keeps its own finding.
        assert_eq!(f[1].subject, "task:7");
    }
}
