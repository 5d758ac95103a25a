//! `leak-growth`: a count (threads, descriptors, sockets, descendants, tasks) grows steadily
//! across the window.
//!
//! "Steadily" is what separates a leak from warm-up: the Theil–Sen line must climb by at
//! least `growth_min_increase` over at least `growth_min_window`, AND the median of each
//! quarter of the window must be above the one before — one step up (a pool filling once)
//! leaves two neighbouring quarters level, and a burst that returns moves no median at all.

use super::Rule;
use super::trend::steady_growth;
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::{Snapshot, TaskState};

pub struct LeakGrowth;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "leak-growth";

type Metric = (&'static str, &'static str, fn(&Snapshot) -> f64);

const METRICS: &[Metric] = &[
    ("threads", "threads", |s| s.threads.len() as f64),
    ("fds", "open descriptors", |s| s.fds.open as f64),
    ("sockets", "sockets", |s| s.sockets.len() as f64),
    ("children", "descendant processes", |s| {
        s.children.len() as f64
    }),
];

impl Rule for LeakGrowth {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "threads, descriptors, sockets, children or tasks grow steadily across the window"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some(latest) = history.latest() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &(metric, what, value) in METRICS {
            let points = history.series(value);
            if let Some(f) = judge(&points, metric, what, latest.pid, config) {
                out.push(f);
            }
        }
        // Tasks only where a probe reported them, over the samples that have it.
        if latest.probe.is_some() {
            let start = history.oldest().map_or(0, |s| s.taken_at_ms);
            let points: Vec<(f64, f64)> = history
                .iter()
                .filter(|s| s.probe.is_some())
                .map(|s| {
                    (
                        s.taken_at_ms.saturating_sub(start) as f64,
                        // Live ones: a probe also lists recently finished tasks (the Rust
                        // probe keeps the last 64), a ring that fills under steady traffic.
                        s.tasks()
                            .iter()
                            .filter(|t| t.state != TaskState::Done)
                            .count() as f64,
                    )
                })
                .collect();
            if let Some(f) = judge(&points, "tasks", "tasks", latest.pid, config) {
                out.push(f);
            }
        }
        out
    }
}

fn judge(
    points: &[(f64, f64)],
    metric: &str,
    what: &str,
    pid: u32,
    config: &Config,
) -> Option<Finding> {
    let (slope, fitted_increase) = steady_growth(
        points,
        config.growth_min_window.as_secs_f64() * 1000.0,
        config.growth_min_increase,
    )?;
    let span_ms = points.last()?.0 - points.first()?.0;
    let first = points.first()?.1;
    let last = points.last()?.1;
    let per_min = slope * 60_000.0;
    Some(
        Finding::new(
            "leak-growth",
            Severity::Warning,
            format!("pid:{pid}/{metric}"),
            format!(
                "{what} grow steadily: {first:.0} → {last:.0} over {:.0}s ({per_min:+.1}/min)",
                span_ms / 1000.0
            ),
        )
        .with("metric", metric)
        .with("first", first)
        .with("last", last)
        .with("increase", (fitted_increase * 10.0).round() / 10.0)
        .with("slope_per_min", (per_min * 10.0).round() / 10.0)
        .with("window_s", (span_ms / 100.0).round() / 10.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProbeData, Task, Thread};

    fn history_of(threads: &[usize]) -> History {
        let mut h = History::default();
        for (i, &n) in threads.iter().enumerate() {
            h.push(Snapshot {
                taken_at_ms: i as u64 * 1000,
                pid: 9,
                threads: vec![Thread::default(); n],
                ..Default::default()
            });
        }
        h
    }

    #[test]
    fn fires_on_steady_growth_even_with_noise() {
        // +1 thread a second for 20 s, with ±2 of jitter.
        let counts: Vec<usize> = (0..20).map(|i| 10 + i + [0, 2, 0, 1, 0][i % 5]).collect();
        let f = LeakGrowth.check(&history_of(&counts), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject, "pid:9/threads");
        assert_eq!(f[0].evidence["metric"], "threads");
        assert_eq!(f[0].evidence["slope_per_min"], 60.0);
    }

    #[test]
    fn not_fooled_by_a_burst_a_single_step_noise_or_a_short_window() {
        let c = Config::default();
        let mut burst = vec![10usize; 20];
        for v in &mut burst[8..11] {
            *v = 200;
        }
        assert!(
            LeakGrowth.check(&history_of(&burst), &c).is_empty(),
            "burst that returns"
        );
        let step: Vec<usize> = (0..20).map(|i| if i < 10 { 10 } else { 60 }).collect();
        assert!(
            LeakGrowth.check(&history_of(&step), &c).is_empty(),
            "one step (warm-up)"
        );
        let noise: Vec<usize> = (0..30).map(|i| 40 + (i * 7) % 13).collect();
        assert!(
            LeakGrowth.check(&history_of(&noise), &c).is_empty(),
            "noise"
        );
        let short: Vec<usize> = (0..8).map(|i| 10 + i * 5).collect();
        assert!(
            LeakGrowth.check(&history_of(&short), &c).is_empty(),
            "window under 10 s"
        );
        let slow: Vec<usize> = (0..20).map(|i| 10 + i / 4).collect();
        assert!(
            LeakGrowth.check(&history_of(&slow), &c).is_empty(),
            "grew by under 10"
        );
    }

    /// 15 samples a second apart, sample `i` listing `live(i)` live tasks and `done(i)`
    /// finished ones.
    fn history_of_tasks(live: impl Fn(usize) -> usize, done: impl Fn(usize) -> usize) -> History {
        let mut h = History::default();
        for i in 0..15 {
            let mut tasks = vec![Task::default(); live(i)];
            let finished = Task {
                state: TaskState::Done,
                ..Default::default()
            };
            tasks.extend(std::iter::repeat_n(finished, done(i)));
            h.push(Snapshot {
                taken_at_ms: i as u64 * 1000,
                pid: 3,
                probe: Some(ProbeData {
                    tasks,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        h
    }

    #[test]
    fn tasks_count_when_a_probe_reports_them() {
        let h = history_of_tasks(|i| 5 + 3 * i, |_| 0);
        let f = LeakGrowth.check(&h, &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject, "pid:3/tasks");
    }

    #[test]
    fn finished_tasks_filling_the_probe_ring_are_not_growth() {
        // A served request a second: the ring of finished tasks fills, the live count stays.
        let h = history_of_tasks(|_| 4, |i| 4 * i);
        let f = LeakGrowth.check(&h, &Config::default());
        assert!(f.is_empty(), "{f:?}");
    }
}
