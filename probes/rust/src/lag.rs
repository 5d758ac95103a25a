//! Event-loop lag and stalls.
//!
//! A watchdog OS thread sends a timestamp every `interval` to a ticker task on the runtime;
//! the ticker measures how late it got it (the scheduling delay a real task would see). When
//! a tick stays unconsumed the runtime is blocked *now*: the watchdog notices it without
//! the runtime's help, as it notices a single poll running over the stall threshold.

use crate::registry;
use leakhound_protocol::Stall;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_SAMPLES: usize = 4096;
const HISTORY: usize = 120;
const MAX_STALLS: usize = 16;

/// A poll running over the stall threshold right now.
#[derive(Debug, Clone)]
pub(crate) struct LongPoll {
    pub at_ms: u64,
    pub duration_ms: f64,
    /// The task's spawn site and the thread, the nearest thing to a stack the probe has.
    pub stack: Vec<String>,
}

pub(crate) struct LagState {
    /// (when, lag ms) inside the window, oldest first.
    samples: VecDeque<(Instant, f64)>,
    window: Duration,
    pub stalls: VecDeque<Stall>,
    /// The loop has not taken the pending tick since this instant (blocked now).
    pub blocked_since: Option<(Instant, u64)>,
    /// Polls running over the threshold now, by task id.
    pub long_polls: HashMap<u64, LongPoll>,
    /// Blocking pool has had queued work with no idle thread since this instant.
    pub blocking_saturated_since: Option<Instant>,
    /// Fraction of the last second the workers were busy (0..1), and the totals it was
    /// computed from.
    pub busy_ratio: f64,
    busy_prev: Option<(Instant, Duration)>,
    /// Kernel tid of each worker index, learnt where the ticker runs.
    pub worker_tids: HashMap<usize, u32>,
    /// Each worker's counters and since when they have not moved.
    workers: Vec<WorkerWatch>,
    /// Workers stuck in one poll now (found from runtime metrics alone), by worker index.
    pub stuck_workers: HashMap<usize, LongPoll>,
}

/// A worker's activity counters as last seen, and when they last changed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WorkerWatch {
    park_unpark: u64,
    busy: Duration,
    polls: u64,
    since: Instant,
}

impl LagState {
    pub fn new(window: Duration) -> Self {
        LagState {
            samples: VecDeque::new(),
            window,
            stalls: VecDeque::new(),
            blocked_since: None,
            long_polls: HashMap::new(),
            blocking_saturated_since: None,
            busy_ratio: 0.0,
            busy_prev: None,
            worker_tids: HashMap::new(),
            workers: Vec::new(),
            stuck_workers: HashMap::new(),
        }
    }

    pub fn record(&mut self, at: Instant, lag_ms: f64) {
        self.samples.push_back((at, lag_ms));
        while self.samples.len() > MAX_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| at.duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
    }

    pub fn push_stall(&mut self, stall: Stall) {
        if self.stalls.len() >= MAX_STALLS {
            self.stalls.pop_front();
        }
        self.stalls.push_back(stall);
    }

    /// (p50, p99, max, samples, recent history).
    pub fn summary(&self) -> (f64, f64, f64, u64, Vec<f64>) {
        let mut v: Vec<f64> = self.samples.iter().map(|(_, l)| *l).collect();
        let history: Vec<f64> = v.iter().rev().take(HISTORY).rev().copied().collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        (
            pick(0.5),
            pick(0.99),
            v.last().copied().unwrap_or(0.0),
            v.len() as u64,
            history,
        )
    }
}

pub(crate) struct Shared {
    pub handle: tokio::runtime::Handle,
    pub lag: Mutex<LagState>,
    pub stop: AtomicBool,
    pub interval: Duration,
    pub stall_threshold: Duration,
    pub window: Duration,
    /// As configured on the runtime builder (tokio does not report it); 512 by default.
    pub max_blocking_threads: usize,
}

impl Shared {
    pub fn lag(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Spawns the ticker on the runtime and returns the watchdog thread.
pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(1);
    let ticker_shared = shared.clone();
    registry::hide_spawns_from(file!());
    shared.handle.spawn(async move {
        while let Some(sent) = rx.recv().await {
            let now = Instant::now();
            let lag = now.saturating_duration_since(sent);
            // A task dump paused the runtime meanwhile: this lag is the probe's own.
            let sent_ns = registry::now_ns().saturating_sub(lag.as_nanos() as u64);
            if crate::dump::paused_since(sent_ns) {
                ticker_shared.lag().blocked_since = None;
                continue;
            }
            let mut st = ticker_shared.lag();
            if let Some(w) = tokio::runtime::worker_index() {
                st.worker_tids
                    .insert(w, rustix::thread::gettid().as_raw_nonzero().get() as u32);
            }
            st.record(now, ms(lag));
            if let Some((since, at_ms)) = st.blocked_since.take() {
                let duration = ms(now.saturating_duration_since(since));
                st.push_stall(Stall {
                    at_ms,
                    duration_ms: duration,
                    stack: Vec::new(),
                    task: None,
                });
            } else if lag >= ticker_shared.stall_threshold {
                st.push_stall(Stall {
                    at_ms: epoch_ms(),
                    duration_ms: ms(lag),
                    stack: Vec::new(),
                    task: None,
                });
            }
        }
    });
    std::thread::Builder::new()
        .name("leakhound-watch".into())
        .spawn(move || watchdog(shared, tx))
}

fn watchdog(shared: Arc<Shared>, tx: tokio::sync::mpsc::Sender<Instant>) {
    let mut pending: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(shared.interval);
        let now = Instant::now();
        match tx.try_send(now) {
            Ok(()) => pending = Some(now),
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                // The previous tick is still unread: the runtime has not scheduled its ticker.
                if let Some(sent) = pending {
                    let late = now.saturating_duration_since(sent);
                    if late >= shared.stall_threshold {
                        let mut st = shared.lag();
                        if st.blocked_since.is_none() {
                            st.blocked_since = Some((sent, epoch_ms() - late.as_millis() as u64));
                        }
                    }
                }
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
        }
        watch_long_polls(&shared);
        if !registry::HOOKS_INSTALLED.load(Ordering::Relaxed) {
            watch_workers(&shared, now);
        }
        watch_busy(&shared, now);
        watch_blocking_pool(&shared, now);
        crate::dump::watch(&shared.handle, now);
        crate::semaphore::watch(now);
    }
}

/// Records every poll that runs over the stall threshold, as a stall naming its task. Its
/// "stack" is the one thing known about where it runs: the task's spawn site and the thread.
fn watch_long_polls(shared: &Shared) {
    let now_ns = registry::now_ns();
    let threshold = shared.stall_threshold.as_nanos() as u64;
    let running = registry::polls_now();
    let mut st = shared.lag();
    let mut still: HashMap<u64, LongPoll> = HashMap::new();
    for (task, since, tid) in running {
        let took = now_ns.saturating_sub(since);
        // The dump task's own poll, and polls stretched by a dump's pause, are the probe's.
        if took < threshold || crate::dump::paused_since(since) {
            continue;
        }
        let (at_ms, stack) = match st.long_polls.get(&task) {
            Some(p) => (p.at_ms, p.stack.clone()),
            None => {
                let site = registry::location_of(task)
                    .map(|l| {
                        vec![format!(
                            "{}:{} in task {task} (its spawn site; the poll runs on tid {tid})",
                            l.file(),
                            l.line()
                        )]
                    })
                    .unwrap_or_default();
                (epoch_ms().saturating_sub(took / 1_000_000), site)
            }
        };
        still.insert(
            task,
            LongPoll {
                at_ms,
                duration_ms: took as f64 / 1e6,
                stack,
            },
        );
    }
    let ended: Vec<(u64, LongPoll)> = st
        .long_polls
        .iter()
        .filter(|(id, _)| !still.contains_key(id))
        .map(|(id, p)| (*id, p.clone()))
        .collect();
    for (task, p) in ended {
        st.push_stall(Stall {
            at_ms: p.at_ms,
            duration_ms: p.duration_ms,
            stack: p.stack,
            task: Some(task.to_string()),
        });
    }
    st.long_polls = still;
}

/// Without task hooks (`#[tokio::main]`), a worker stuck in one poll is seen from runtime
/// metrics: it is not parked (its park/unpark count is even) and neither that count, nor its
/// busy time, nor (with `tokio_unstable`) its poll count has moved for the stall threshold.
/// Tokio publishes busy time and poll counts when a worker parks and every 61 polls, so a
/// worker making progress moves one of them well within a threshold of 100 ms.
fn watch_workers(shared: &Shared, now: Instant) {
    let m = shared.handle.metrics();
    let workers = m.num_workers();
    let mut st = shared.lag();
    let mut ended = Vec::new();
    for w in 0..workers {
        #[cfg(tokio_unstable)]
        let polls = m.worker_poll_count(w);
        #[cfg(not(tokio_unstable))]
        let polls = 0;
        let seen = WorkerWatch {
            park_unpark: m.worker_park_unpark_count(w),
            busy: m.worker_total_busy_duration(w),
            polls,
            since: now,
        };
        if st.workers.len() <= w {
            st.workers.push(seen);
            continue;
        }
        let prev = st.workers[w];
        let moved =
            (prev.park_unpark, prev.busy, prev.polls) != (seen.park_unpark, seen.busy, seen.polls);
        if moved {
            st.workers[w] = seen;
            if let Some(p) = st.stuck_workers.remove(&w) {
                ended.push(p);
            }
            continue;
        }
        let took = now.saturating_duration_since(prev.since);
        let parked = seen.park_unpark % 2 == 1;
        if parked || took < shared.stall_threshold {
            continue;
        }
        let known = st.worker_tids.get(&w).copied();
        let others: Vec<u32> = st
            .worker_tids
            .iter()
            .filter(|(i, _)| **i != w)
            .map(|(_, t)| *t)
            .collect();
        let stuck = st.stuck_workers.entry(w).or_insert_with(|| {
            let tids = known.map_or_else(|| busy_worker_threads(&others, workers), |t| vec![t]);
            let tid = match tids.as_slice() {
                [t] => format!("tid {t}"),
                [] => "tid unknown".into(),
                many if many.len() > 4 => format!("tid unknown, {} candidates", many.len()),
                many => format!(
                    "tid one of {}",
                    many.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
            };
            LongPoll {
                at_ms: epoch_ms().saturating_sub(took.as_millis() as u64),
                duration_ms: 0.0,
                stack: vec![format!(
                    "tokio worker {w} ({tid}) stuck in one poll; the task is unknown under #[tokio::main] (#[leakhound_probe::main] names it)"
                )],
            }
        });
        stuck.duration_ms = ms(took);
    }
    for p in ended {
        st.push_stall(Stall {
            at_ms: p.at_ms,
            duration_ms: p.duration_ms,
            stack: p.stack,
            task: None,
        });
    }
}

/// Threads that may be the stuck worker when the ticker never ran on it, from
/// `/proc/self/task`: see [`worker_candidates`].
fn busy_worker_threads(known: &[u32], workers: usize) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let idle = [
        libc::SYS_futex,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait,
    ];
    let named: Vec<WorkerThread> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|t| {
            std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                .is_ok_and(|c| c.trim_end() == "tokio-rt-worker")
        })
        .map(|tid| {
            let call = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                .unwrap_or_default();
            let nr = call
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<i64>().ok());
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            WorkerThread {
                tid,
                started: start_time(&stat).unwrap_or(u64::MAX),
                idle: nr.is_some_and(|n| idle.contains(&n)),
            }
        })
        .collect();
    worker_candidates(named, workers, known)
}

/// A thread named like a tokio worker (`tokio-rt-worker`: the blocking pool's threads are
/// named so too).
#[derive(Debug, Clone, Copy)]
struct WorkerThread {
    tid: u32,
    /// Start time, clock ticks after boot (`/proc/…/stat` field 22).
    started: u64,
    /// Waiting where an idle worker or blocking-pool thread waits (futex, epoll).
    idle: bool,
}

/// Field 22 of a `/proc/…/stat` line (after the command, which may hold spaces and `)`).
fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The tids that may be the stuck worker, given every thread named like a tokio worker,
/// the runtime's worker count and the `known` tids of its other workers. Tokio starts its
/// workers when the runtime is built, before any blocking-pool thread, and they never exit:
/// the first `workers` threads started are the workers whenever the known ones are among
/// them (else another runtime's threads came first, and start order says nothing). Then the
/// one of those whose tid is not known is the stuck worker, even waiting on a lock; with
/// several unknown, or start order not to be trusted, the candidates are those not known and
/// not idle.
fn worker_candidates(mut named: Vec<WorkerThread>, workers: usize, known: &[u32]) -> Vec<u32> {
    named.sort_by_key(|t| (t.started, t.tid));
    let first = &named[..workers.min(named.len())];
    let ordered = !known.is_empty() && known.iter().all(|k| first.iter().any(|t| t.tid == *k));
    let pool = if ordered { first } else { &named[..] };
    let unknown: Vec<&WorkerThread> = pool.iter().filter(|t| !known.contains(&t.tid)).collect();
    if let ([only], true) = (unknown.as_slice(), ordered) {
        return vec![only.tid];
    }
    let mut out: Vec<u32> = unknown.iter().filter(|t| !t.idle).map(|t| t.tid).collect();
    out.sort_unstable();
    out
}

/// The workers' busy ratio over the last second, from `worker_total_busy_duration` deltas.
fn watch_busy(shared: &Shared, now: Instant) {
    let m = shared.handle.metrics();
    let workers = m.num_workers();
    let busy: Duration = (0..workers).map(|w| m.worker_total_busy_duration(w)).sum();
    let mut st = shared.lag();
    match st.busy_prev {
        Some((at, prev)) if now.duration_since(at) >= Duration::from_secs(1) => {
            let span = now.duration_since(at).as_secs_f64() * workers.max(1) as f64;
            st.busy_ratio = (busy.saturating_sub(prev).as_secs_f64() / span).clamp(0.0, 1.0);
            st.busy_prev = Some((now, busy));
        }
        Some(_) => {}
        None => st.busy_prev = Some((now, busy)),
    }
}

#[cfg_attr(not(tokio_unstable), allow(unused_variables))]
fn watch_blocking_pool(shared: &Shared, now: Instant) {
    #[cfg(tokio_unstable)]
    {
        let m = shared.handle.metrics();
        let saturated = m.blocking_queue_depth() > 0 && m.num_idle_blocking_threads() == 0;
        let mut st = shared.lag();
        match (saturated, st.blocking_saturated_since) {
            (true, None) => st.blocking_saturated_since = Some(now),
            (false, Some(_)) => st.blocking_saturated_since = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_drops_old_samples_and_ranks() {
        let mut st = LagState::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..100 {
            st.record(t0 + Duration::from_millis(i * 10), i as f64);
        }
        let (p50, p99, max, n, hist) = st.summary();
        assert_eq!(n, 100);
        assert_eq!(max, 99.0);
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!(p99 >= 97.0);
        assert_eq!(hist.len(), 100);
        st.record(t0 + Duration::from_secs(30), 1.0);
        assert_eq!(st.summary().3, 1, "samples older than the window fall out");
    }

    fn thread(tid: u32, started: u64, idle: bool) -> WorkerThread {
        WorkerThread { tid, started, idle }
    }

    #[test]
    fn the_stuck_worker_is_the_early_thread_whose_tid_is_not_known() {
        // Workers 100 and 101 started with the runtime; 102-104 are the blocking pool, busy
        // (not idle) like the stuck worker, which waits on a lock (looks idle).
        let threads = vec![
            thread(103, 50, false),
            thread(101, 10, true),
            thread(100, 10, false),
            thread(102, 40, false),
            thread(104, 50, false),
        ];
        assert_eq!(worker_candidates(threads.clone(), 2, &[100]), vec![101]);
        assert_eq!(worker_candidates(threads.clone(), 2, &[101]), vec![100]);
        // A known tid that is not among the first started: another runtime came first, so
        // start order is not trusted, and the busy threads are all candidates.
        assert_eq!(
            worker_candidates(threads.clone(), 2, &[103]),
            vec![100, 102, 104]
        );
        // Nothing known: the same.
        assert_eq!(
            worker_candidates(threads.clone(), 2, &[]),
            vec![100, 102, 103, 104]
        );
        // Two workers unknown among four: the busy ones of those.
        let mut four = threads;
        four.push(thread(99, 10, false));
        assert_eq!(worker_candidates(four, 4, &[100, 101]), vec![99, 102]);
    }

    #[test]
    fn start_time_is_field_22_even_with_spaces_in_the_command() {
        let stat =
            "4711 (tokio rt) worker)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 123456 99";
        assert_eq!(start_time(stat), Some(123456));
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn stalls_are_bounded() {
        let mut st = LagState::new(Duration::from_secs(10));
        for i in 0..100 {
            st.push_stall(Stall {
                at_ms: i,
                ..Default::default()
            });
        }
        assert_eq!(st.stalls.len(), MAX_STALLS);
        assert_eq!(st.stalls.back().unwrap().at_ms, 99);
    }
}
