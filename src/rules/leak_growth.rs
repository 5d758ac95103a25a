//! `leak-growth`: a count (threads, descriptors, sockets, descendants, tasks) grows steadily
//! across the window.
//!
//! "Steadily" is what separates a leak from warm-up and from churn (see
//! [`steady_growth`]): the Theil–Sen line must climb by at least `growth_min_increase` over at
//! least `growth_min_window`, the median of each quarter of the window must be above the one
//! before — one step up (a pool filling once) leaves two neighbouring quarters level, and a
//! burst that returns moves no median at all — and the rise must be one that churn does not
//! make (Mann–Kendall), counting a run of equal samples as one observation: a healthy server
//! under load holds its connections for seconds and then trades them in waves, and a few of
//! those levels in rising order used to read as a leak.

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
    ("threads", "threads", threads_counting_pools_once),
    ("fds", "open descriptors", |s| s.fds.open as f64),
    ("sockets", "sockets", |s| s.sockets.len() as f64),
    ("children", "descendant processes", |s| {
        s.children.len() as f64
    }),
];

/// Threads, with each pool's workers (as the probe names them) counted as one: a bounded
/// pool warms up under load one thread at a time, as steadily as a leak (anyio's workers, an
/// executor filling to its max over a minute), while a leak of pools (an executor made per
/// request and never shut down) still grows by one per pool.
fn threads_counting_pools_once(s: &Snapshot) -> f64 {
    let Some(probe) = &s.probe else {
        return s.threads.len() as f64;
    };
    let live: std::collections::HashSet<u32> = s.threads.iter().map(|t| t.tid).collect();
    let mut pools = std::collections::HashSet::new();
    let mut pooled = 0usize;
    for t in &probe.threads {
        if let Some(pool) = &t.pool
            && live.contains(&t.native_id)
        {
            pooled += 1;
            pools.insert(pool.as_str());
        }
    }
    // Saturating: a probe listing one tid twice must not underflow.
    (s.threads.len().saturating_sub(pooled) + pools.len()) as f64
}

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

    /// A sample of `plain` threads outside pools and, per pool, its workers (tids from 1000).
    fn with_pools(i: u64, plain: usize, pools: &[(&str, usize)]) -> Snapshot {
        let mut threads: Vec<Thread> = (0..plain as u32)
            .map(|tid| Thread {
                tid: tid + 1,
                ..Default::default()
            })
            .collect();
        let mut probe_threads = Vec::new();
        let mut next = 1000u32;
        for (pool, workers) in pools {
            for _ in 0..*workers {
                threads.push(Thread {
                    tid: next,
                    ..Default::default()
                });
                probe_threads.push(crate::model::ProbeThread {
                    native_id: next,
                    pool: Some(pool.to_string()),
                    ..Default::default()
                });
                next += 1;
            }
        }
        Snapshot {
            taken_at_ms: i * 1000,
            pid: 9,
            threads,
            probe: Some(ProbeData {
                threads: probe_threads,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pool_warming_up_is_not_growth_but_a_pool_made_per_request_is() {
        // anyio's workers and an executor fill one thread at a time under load, as steadily
        // as a leak (16 -> 28 threads over 18 s failed a healthy-service test).
        let mut warm = History::default();
        for i in 0..20u64 {
            let n = 2 + i as usize;
            warm.push(with_pools(
                i,
                6,
                &[("anyio_worker_threads", n), ("exec-1", n / 2)],
            ));
        }
        assert!(LeakGrowth.check(&warm, &Config::default()).is_empty());
        // An executor made per request and never shut down: one more pool each second.
        let mut leak = History::default();
        for i in 0..20u64 {
            let names: Vec<String> = (0..=i).map(|k| format!("exec-{k}")).collect();
            let pools: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 2)).collect();
            leak.push(with_pools(i, 6, &pools));
        }
        let f = LeakGrowth.check(&leak, &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject, "pid:9/threads");
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

    /// A count sampled every 250 ms (`watch --interval 250ms`, as the frameworks tests run
    /// it) and judged once a second, on the history so far, as `watch` judges: the second at
    /// which leak-growth first fired, and its finding.
    fn first_fired(counts: &[u64]) -> Option<(usize, Finding)> {
        let mut h = History::default();
        for (i, &n) in counts.iter().enumerate() {
            h.push(Snapshot {
                taken_at_ms: i as u64 * 250,
                pid: 9,
                fds: crate::model::FdSummary {
                    open: n,
                    ..Default::default()
                },
                ..Default::default()
            });
            if i % 4 == 3
                && let Some(f) = LeakGrowth.check(&h, &Config::default()).pop()
            {
                return Some((i / 4, f));
            }
        }
        None
    }

    /// `(value, samples)` runs, spelled out.
    fn runs(runs: &[(u64, usize)]) -> Vec<u64> {
        runs.iter()
            .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
            .collect()
    }

    /// What a healthy server's counts do under HTTP load: a level between `lo` and `hi` held
    /// for 0.5–3 s (kept-alive connections, pooled threads), then another, with no trend.
    /// Deterministic (xorshift from `seed`), so a failure replays.
    fn churn(seed: u64, samples: usize, lo: u64, hi: u64) -> Vec<u64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::with_capacity(samples);
        while out.len() < samples {
            let level = lo + next() % (hi - lo + 1);
            let held = 2 + (next() % 11) as usize;
            out.extend(std::iter::repeat_n(level, held));
        }
        out.truncate(samples);
        out
    }

    #[test]
    fn a_recorded_healthy_aiohttp_service_under_load_never_fires() {
        // The socket count of the aiohttp twin of probes/python/tests/test_frameworks.py
        // under its 20-client load, recorded (`leakhound record --interval 250ms`) for 20 s:
        // stale at 6 until the first table read, then connections traded in waves. Judged
        // as its descriptor count (the rule reads every count alike), it fired 14 s in.
        let recorded = runs(&[
            (6, 19),
            (26, 1),
            (22, 15),
            (33, 20),
            (29, 1),
            (24, 1),
            (22, 15),
            (21, 6),
            (22, 2),
        ]);
        assert_eq!(first_fired(&recorded).map(|(s, f)| (s, f.message)), None);
    }

    #[test]
    fn a_quiet_stretch_then_busy_tests_is_no_climb() {
        // The descriptors of pytest running the probe's own suite (`leakhound record
        // --interval 500ms`, each sample written twice here for the 250 ms judge): 15-17 for
        // 25 s, then servers started and closed test by test. Counting each run of equal
        // samples once made the flat start one point and the busy tests a climb ("11 -> 67
        // over 39s"); the quarters in time see it level.
        let recorded = runs(&[
            (11, 2),
            (13, 2),
            (15, 2),
            (17, 36),
            (15, 2),
            (17, 18),
            (15, 2),
            (17, 36),
            (15, 2),
            (16, 2),
            (40, 16),
            (38, 20),
            (37, 2),
            (36, 2),
            (17, 4),
            (15, 2),
            (17, 2),
            (63, 2),
            (67, 18),
            (53, 14),
            (49, 2),
            (46, 6),
            (45, 2),
            (48, 14),
            (49, 6),
            (46, 8),
            (47, 2),
            (48, 8),
            (15, 2),
            (26, 58),
            (15, 16),
            (13, 4),
            (15, 24),
            (16, 2),
            (15, 62),
            (19, 6),
            (15, 20),
            (23, 14),
            (16, 2),
            (14, 4),
            (24, 20),
            (23, 2),
            (24, 34),
            (14, 4),
            (24, 40),
            (14, 2),
            (20, 16),
            (16, 64),
            (18, 2),
        ]);
        assert_eq!(first_fired(&recorded).map(|(s, f)| (s, f.message)), None);
    }

    #[test]
    fn churn_without_a_trend_never_fires_over_40_s() {
        for seed in 1..=100 {
            let counts = churn(seed, 160, 10, 40);
            if let Some((second, f)) = first_fired(&counts) {
                panic!("seed {seed}: fired at {second}s on churn: {}", f.message);
            }
        }
    }

    #[test]
    fn a_slow_steady_leak_under_churn_fires() {
        // One descriptor leaked every 1.5 s (+40/min) beneath connections that come and go by
        // up to 15 at a time: it outgrows the churn within a minute, whatever the churn did.
        // The slope read when it fires carries some churn: the right order, not 40.0.
        let mut seconds = Vec::new();
        for seed in 1..=30 {
            let counts: Vec<u64> = churn(seed, 240, 0, 15)
                .into_iter()
                .enumerate()
                .map(|(i, c)| 20 + c + i as u64 / 6)
                .collect();
            let Some((second, f)) = first_fired(&counts) else {
                panic!("seed {seed}: a leak of 40/min under churn never fired in 60 s");
            };
            seconds.push(second);
            assert_eq!(f.subject, "pid:9/fds");
            let per_min = f.evidence["slope_per_min"].as_f64().unwrap();
            assert!(
                (20.0..=120.0).contains(&per_min),
                "seed {seed}: {per_min}/min"
            );
        }
        seconds.sort_unstable();
        // Measured: half of them by 20 s (the rule before churn was told apart: 21 s).
        assert!(seconds[15] <= 25, "fired at {seconds:?} s");
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
