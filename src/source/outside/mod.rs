//! The outside view of a running CPython, for a process started without the probe: every
//! Python thread's stack read from the interpreter's memory (py-spy as a library), which
//! thread holds the GIL, and an event-loop judge that samples the loop thread's stack at tens
//! of Hz and reports a callback that holds the loop as a stall (`ProbeData` with runtime
//! `python-outside`), so `loop-blocked` fires without the probe, uvloop included.
//!
//! Read-only: the loop sampler never stops the target (non-blocking reads); a one-shot
//! `snapshot --stacks` stops it for one read (measured, shown in the notes) unless
//! `--nonblocking` is given.

pub mod lock;
pub mod loop_watch;
pub mod run_once;
pub mod stacks;

use crate::model::{ProbeData, Snapshot};
use crate::source::{SampleOptions, Source, SourceError, now_ms};
use loop_watch::Watch;
use stacks::PyReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The loop sampler's default rate; `LEAKHOUND_PY_SAMPLE_HZ` overrides it (1..=1000). 20 Hz
/// is enough: an asyncio iteration is timed exactly from its start (`_run_once`'s `end_time`,
/// read alone between full reads), so a stall's length is known within an interval; uvloop
/// is judged by the callback on top at each sample. Its cost is measured in
/// benches/python_outside.md.
pub const DEFAULT_HZ: u64 = 20;
/// A thread whose stack has not changed for this long is shown as parked in its frame.
pub const PARKED_AFTER_MS: u64 = 5_000;
/// The runtime name of the outside view's `ProbeData`.
pub const RUNTIME: &str = "python-outside";

/// What only the in-process probe sees; the outside view says so in `missing[]`.
pub const MISSING: [&str; 4] = [
    "tasks: asyncio tasks and their await chains need the in-process probe (`leakhound attach PID --inject`, or start it with `leakhound run`)",
    "pools: executor, semaphore and connection-pool saturation need the in-process probe",
    "events: never-awaited coroutines, unclosed resources and threads alive at shutdown need the in-process probe",
    "lag: read from stack samples outside the process (a callback seen on top of the loop), not measured by the probe's heartbeat",
];

/// How the PID source uses the outside view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Run the loop sampler in the background while sampling repeatedly (watch, dashboard).
    pub loop_sampler: bool,
    /// Stop the target while a one-shot `--stacks` read is taken (consistent stacks).
    pub blocking: bool,
}

impl Options {
    /// For a source sampled again and again: the loop sampler runs.
    pub fn watching() -> Self {
        Options {
            loop_sampler: true,
            blocking: false,
        }
    }

    /// For a single snapshot: stacks only when asked, no background sampler.
    pub fn once(blocking: bool) -> Self {
        Options {
            loop_sampler: false,
            blocking,
        }
    }
}

/// The sampler's rate from the environment, or the default.
pub fn sample_hz() -> u64 {
    std::env::var("LEAKHOUND_PY_SAMPLE_HZ")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|hz| (1..=1000).contains(hz))
        .unwrap_or(DEFAULT_HZ)
}

/// A descendant without a probe that a watched tree samples from outside: any Python
/// process (a gunicorn or `uvicorn --workers` worker), its loop judged like the root's. Not
/// the child of a process with a probe: it inherited the probe's environment or fork hook, so
/// it is a worker whose own probe is starting (sampling its start-up from outside would
/// judge it twice, and cost a search for its interpreter).
pub fn watched_worker(child: &crate::model::Child, _: SampleOptions) -> bool {
    looks_like_python(child.pid)
        && crate::source::probe::find_socket(child.ppid)
            .socket
            .is_none()
}

/// A descendant without a probe that a one-shot snapshot reads: a Python process, when its
/// stacks are asked for (`snapshot MASTER --stacks`).
pub fn worker_with_stacks(child: &crate::model::Child, options: SampleOptions) -> bool {
    options.stacks && looks_like_python(child.pid)
}

/// Whether pid runs a Python interpreter: its executable is named `python…` or it maps a
/// `libpython` (uwsgi and other embedders). Cheap, and checked before py-spy, which spends
/// seconds parsing a large non-Python binary before saying it found no interpreter.
fn looks_like_python(pid: u32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n.contains("python"));
    exe || std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines().any(|l| {
            l.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libpython"))
        })
    })
}

/// CLOCK_MONOTONIC seconds at which `pid` started (/proc/PID/stat field 22, in clock ticks
/// since boot), or 0 when unreadable.
fn started_mono(pid: u32) -> f64 {
    let ticks = crate::source::procfs::parse::read_stat(pid, None).map(|s| s.start_ticks as f64);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match ticks {
        Some(t) if hz > 0.0 => t / hz,
        _ => 0.0,
    }
}

/// One read for the loop sampler, and whether its busy asyncio loops were timed: an
/// iteration's start (`_run_once`'s `end_time`) tells one long callback from many short ones
/// of the same function. Read alone ([`run_once`]) after the plain read, for every loop
/// thread the read found inside `_run_once` running a callback: a few small reads each.
/// Where that reader cannot serve (a version it has no layout for), py-spy reads it with
/// every frame local, which costs several plain reads (each local's name and repr), so
/// only when it can change the verdict: straight away when `wanted`
/// ([`Watch::start_wanted`]: a loop that never idles costs one read a sample, not two), else
/// after a plain read when `needed` says so ([`Watch::start_needed`]).
fn read_for_loops(
    reader: &mut PyReader,
    wanted: bool,
    needed: impl FnOnce(&[stacks::ThreadStack]) -> bool,
) -> Result<(stacks::Sample, bool), SourceError> {
    if reader.times_iterations() {
        let mut sample = reader.sample()?;
        let started = Instant::now();
        let mut timed = false;
        for t in sample
            .threads
            .iter_mut()
            .filter(|t| loop_watch::asyncio_busy(&t.frames))
        {
            t.iteration_started = reader.iteration_started(t.python_id, stacks::monotonic_now());
            timed = true;
        }
        sample.took += started.elapsed();
        if reader.times_iterations() || !timed {
            return Ok((sample, timed));
        }
        // The reader just gave up on this interpreter: py-spy's locals from now on.
        return reader.sample_with_locals().map(|s| (s, true));
    }
    if wanted {
        return reader.sample_with_locals().map(|s| (s, true));
    }
    let sample = reader.sample()?;
    if needed(&sample.threads) {
        reader.sample_with_locals().map(|s| (s, true))
    } else {
        Ok((sample, false))
    }
}

/// The loop sampler: a thread reading the target's stacks at `hz`, feeding a [`Watch`].
struct Sampler {
    state: Arc<Mutex<SamplerState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    version: String,
    hz: u64,
}

struct SamplerState {
    watch: Watch,
    /// Why the sampler stopped, when it did.
    error: Option<String>,
    /// Total time spent reading, to report the sampler's own cost.
    read_time: Duration,
    reads: u64,
    /// Reads that timed a busy asyncio loop's iteration.
    timed_reads: u64,
    /// Whether the iteration start is read alone (else with every frame local).
    start_read_alone: bool,
    /// Reads that failed (a pointer read while the target freed it).
    failed: u64,
    /// Quick reads: an asyncio loop's iteration start alone, no stacks.
    quick_reads: u64,
}

/// How often every stack is read while the asyncio loops are followed by quick reads: the
/// threads shown, parked threads, a new loop.
const FULL_READ_EVERY: Duration = Duration::from_secs(1);

/// A quick read of every asyncio loop thread `loops` (`(tid, python id)`): only when its
/// iteration began, fed to the watch. False when a loop needs a full read now (nothing read,
/// or an iteration that may be a stall, see [`loop_watch::LoopTracker::observe_quick`]).
fn quick_read(reader: &mut PyReader, loops: &[(u32, u64)], state: &Mutex<SamplerState>) -> bool {
    let started = Instant::now();
    let from = stacks::monotonic_now();
    let mut starts = Vec::with_capacity(loops.len());
    for &(tid, python_id) in loops {
        match reader.iteration(python_id) {
            run_once::IterationRead::Started(start) => starts.push((tid, Some(start))),
            run_once::IterationRead::NotStarted => starts.push((tid, None)),
            run_once::IterationRead::Unknown => return false,
        }
    }
    let (at, mono) = (now_ms(), stacks::monotonic_now());
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    for (tid, start) in starts {
        if !s.watch.observe_quick(at, (from, mono), tid, start) {
            return false;
        }
    }
    s.quick_reads += 1;
    s.read_time += started.elapsed();
    true
}

impl Sampler {
    fn start(pid: u32, hz: u64) -> Result<Self, SourceError> {
        let mut reader = PyReader::open(pid, false, true)?;
        reader.precise_idle = false;
        let version = reader.version().to_string();
        let interval = Duration::from_micros(1_000_000 / hz);
        let state = Arc::new(Mutex::new(SamplerState {
            watch: Watch::new(interval.as_millis() as u64, started_mono(pid)),
            error: None,
            read_time: Duration::ZERO,
            reads: 0,
            timed_reads: 0,
            start_read_alone: reader.times_iterations(),
            failed: 0,
            quick_reads: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("leakhound-pysampler".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
                    // The asyncio loop threads of the last full read, and when it was: between
                    // full reads a healthy asyncio loop is followed by quick reads alone (a
                    // few small reads, where every stack costs some seventy).
                    let mut quick_loops: Vec<(u32, u64)> = Vec::new();
                    let mut full_at: Option<Instant> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let quick = !quick_loops.is_empty()
                            && full_at.is_some_and(|t| t.elapsed() < FULL_READ_EVERY)
                            && quick_read(&mut reader, &quick_loops, &state);
                        // A read that failed or tore a loop thread's stack (the target changed
                        // it meanwhile) is made again at once, once.
                        let full_reads = if quick { 0 } else { 2 };
                        for _ in 0..full_reads {
                            let wanted = lock().watch.start_wanted(stacks::monotonic_now());
                            let result = read_for_loops(&mut reader, wanted, |threads| {
                                lock().watch.start_needed(threads, stacks::monotonic_now())
                            });
                            let (at, mono) = (now_ms(), stacks::monotonic_now());
                            let mut s = lock();
                            match result {
                                Ok((sample, timed)) => {
                                    s.read_time += sample.took;
                                    s.reads += 1;
                                    s.timed_reads += u64::from(timed);
                                    s.start_read_alone = reader.times_iterations();
                                    full_at = Some(Instant::now());
                                    quick_loops = if reader.times_iterations() {
                                        sample
                                            .threads
                                            .iter()
                                            .filter(|t| loop_watch::runs_asyncio(&t.frames))
                                            .filter_map(|t| Some((t.tid?, t.python_id)))
                                            .collect()
                                    } else {
                                        Vec::new()
                                    };
                                    // The read ran for `took` before now: the loop was seen
                                    // at some time in between.
                                    let from = mono - sample.took.as_secs_f64();
                                    if !s.watch.observe(at, (from, mono), timed, sample.threads) {
                                        break;
                                    }
                                }
                                // Only a gone process ends the sampler.
                                Err(e)
                                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() =>
                                {
                                    s.error = Some(e.to_string());
                                    return;
                                }
                                Err(_) => s.failed += 1,
                            }
                        }
                        next += interval;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
                .map_err(|e| SourceError::Other(format!("cannot start the stack sampler: {e}")))?
        };
        Ok(Sampler {
            state,
            stop,
            thread: Some(thread),
            version,
            hz,
        })
    }

    /// Puts what the sampler has seen into `snapshot`.
    fn apply(&self, snapshot: &mut Snapshot) -> Result<(), String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            return Err(e.clone());
        }
        let now = now_ms();
        let mut loops: Vec<_> = s.watch.loops.values().map(|l| l.view()).collect();
        loops.sort_by_key(|l| l.tid);
        let mut missing: Vec<String> = MISSING.iter().map(|m| m.to_string()).collect();
        if s.quick_reads > 0 {
            missing.push(format!(
                "cost: the loop sampler reads when each asyncio loop's iteration began {} times a second (`_run_once`'s `end_time`, read alone: {} quick reads) and every Python stack once a second, or at once when an iteration has held its loop half an interval ({} full reads, {:.0}% of all); reads take {:.3} ms on average; none stops the target; {} reads failed and {} thread stacks were torn (left out, read again)",
                self.hz,
                s.quick_reads,
                s.reads,
                100.0 * s.reads as f64 / (s.reads + s.quick_reads) as f64,
                s.read_time.as_secs_f64() * 1000.0 / (s.reads + s.quick_reads) as f64,
                s.failed,
                s.watch.torn
            ));
        } else if s.reads > 0 {
            missing.push(format!(
                "cost: the loop sampler reads every Python stack {} times a second without stopping the target; a read takes {:.2} ms on average; {:.0}% of them also {}; {} of {} reads failed and {} thread stacks were torn (left out, read again)",
                self.hz,
                s.read_time.as_secs_f64() * 1000.0 / s.reads as f64,
                100.0 * s.timed_reads as f64 / s.reads as f64,
                if s.start_read_alone {
                    "read when a busy asyncio loop's iteration began (`_run_once`'s `end_time`, read alone)".to_string()
                } else {
                    format!(
                        "read frame locals (an asyncio loop busy long enough that its iteration may have held it {} ms)",
                        loop_watch::TIMED_FROM_MS
                    )
                },
                s.failed,
                s.reads + s.failed,
                s.watch.torn
            ));
        }
        for (tid, ms, frame) in s.watch.parked(PARKED_AFTER_MS) {
            snapshot.notes.push(format!(
                "thread {tid} parked {:.0} s in {frame}",
                ms as f64 / 1000.0
            ));
        }
        apply_sample(snapshot, &s.watch.latest);
        mark_source(snapshot, &self.version);
        snapshot.probe = Some(ProbeData {
            runtime: RUNTIME.into(),
            runtime_version: self.version.clone(),
            probe_version: format!("leakhound {}", env!("CARGO_PKG_VERSION")),
            now_ms: now,
            loops,
            threads: s.watch.probe_threads(),
            missing,
            ..ProbeData::default()
        });
        Ok(())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Renames the source and replaces the "no probe found" note with what the outside view adds.
fn mark_source(snapshot: &mut Snapshot, version: &str) {
    snapshot.source = format!("{}+outside(python {version})", snapshot.source);
    snapshot.notes.retain(|n| !n.starts_with("no probe found"));
    snapshot.notes.push(format!(
        "no probe found in pid {}: Python stacks read from outside (py-spy); tasks, pools \
         and never-awaited/unclosed events need the probe: `leakhound attach {} --inject`",
        snapshot.pid, snapshot.pid
    ));
}

/// Reads every Python thread's stack of `pid` once and joins them to the snapshot's threads.
/// Returns the one-line error when the interpreter cannot be read.
pub fn add_stacks(snapshot: &mut Snapshot, pid: u32, blocking: bool) -> Result<(), SourceError> {
    let opened = Instant::now();
    let mut reader = PyReader::open(pid, blocking, true)?;
    let open_time = opened.elapsed();
    let sample = reader.sample()?;
    apply_sample(snapshot, &sample.threads);
    mark_source(snapshot, reader.version());
    snapshot.notes.push(format!(
        "python stacks: {} threads read in {:.2} ms after {:.1} ms finding the interpreter; {}",
        sample.threads.len(),
        sample.took.as_secs_f64() * 1000.0,
        open_time.as_secs_f64() * 1000.0,
        if sample.blocking {
            "the target was stopped for at most the read"
        } else {
            "non-blocking: the target was not stopped (a stack may be torn)"
        }
    ));
    Ok(())
}

/// Joins one sample's stacks to /proc threads by native id; a Python thread /proc did not list
/// (it started after the /proc scan) is left out.
fn apply_sample(snapshot: &mut Snapshot, threads: &[stacks::ThreadStack]) {
    for thread in &mut snapshot.threads {
        if let Some(t) = threads.iter().find(|t| t.tid == Some(thread.tid)) {
            thread.py_stack = Some(t.to_model());
            if let Some(name) = &t.name {
                thread.runtime_name = Some(name.clone());
            }
        }
    }
}

/// Wraps the PID source: when no probe answered, fills in the outside view.
pub struct WithOutside<S: Source> {
    inner: S,
    pid: u32,
    options: Options,
    sampler: Option<Sampler>,
    /// Why the outside view is not available (not permitted, no interpreter); tried once.
    unavailable: Option<SourceError>,
    /// Whether the target looks like Python at all; checked once.
    python: Option<bool>,
}

impl<S: Source> WithOutside<S> {
    pub fn new(inner: S, pid: u32, options: Options) -> Self {
        WithOutside {
            inner,
            pid,
            options,
            sampler: None,
            unavailable: None,
            python: None,
        }
    }
}

impl<S: Source> Source for WithOutside<S> {
    fn describe(&self) -> String {
        match &self.sampler {
            Some(s) => format!("pid {} (procfs+outside python {})", self.pid, s.version),
            None => self.inner.describe(),
        }
    }

    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
        let mut snapshot = self.inner.sample(options)?;
        if snapshot.probe.is_some() {
            // The probe sees more, from inside; the sampler would only cost the target.
            self.sampler = None;
            return Ok(snapshot);
        }
        let python = *self
            .python
            .get_or_insert_with(|| looks_like_python(self.pid));
        if !python {
            if options.stacks {
                snapshot.notes.push(format!(
                    "no Python stacks: pid {} runs no Python interpreter (its executable is not \
                     python and it maps no libpython)",
                    self.pid
                ));
            }
            return Ok(snapshot);
        }
        if let Some(e) = &self.unavailable {
            snapshot
                .notes
                .push(format!("no Python stacks from outside: {e}"));
            return Ok(snapshot);
        }
        if !self.options.loop_sampler {
            if !options.stacks {
                return Ok(snapshot);
            }
            add_stacks(&mut snapshot, self.pid, self.options.blocking)?;
            return Ok(snapshot);
        }
        if self.sampler.is_none() {
            match Sampler::start(self.pid, sample_hz()) {
                Ok(s) => self.sampler = Some(s),
                Err(e) => {
                    snapshot
                        .notes
                        .push(format!("no Python stacks from outside: {e}"));
                    self.unavailable = Some(e);
                    return Ok(snapshot);
                }
            }
        }
        if let Some(sampler) = &self.sampler
            && let Err(e) = sampler.apply(&mut snapshot)
        {
            snapshot
                .notes
                .push(format!("python stack sampler stopped: {e}"));
            self.sampler = None;
        }
        Ok(snapshot)
    }
}
