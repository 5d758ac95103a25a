//! Judging an event loop from its thread's stack alone: a loop thread is either waiting in its
//! selector (or in uvloop's C loop) or running a callback. A callback seen on top of the loop
//! for longer than the `loop-blocked` threshold is a stall, reported with its stack. Pure logic:
//! fed with timed stacks, it never reads a process itself.

use super::stacks::{Frame, ThreadStack};
use crate::model::{EventLoop, LagStats, ProbeThread, Stall};
use std::collections::{HashMap, VecDeque};

/// What the loop thread was doing at one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopState {
    /// No asyncio/uvloop frame on this thread's stack.
    NotALoop,
    /// Waiting for I/O or timers: in the selector, or in the loop's own code.
    Waiting,
    /// Running a callback; `callback` names its outermost frame (`file in func`).
    Busy { callback: String },
}

/// The loop's own frames: entering it (`run_forever`, `asyncio.run`, uvloop's `run`) and
/// dispatching one callback (`Handle._run`).
fn is_loop_frame(f: &Frame) -> bool {
    let func = f.short_func();
    (f.file_ends_with("asyncio/base_events.py")
        && matches!(func, "run_forever" | "_run_once" | "run_until_complete"))
        || (f.file_ends_with("asyncio/runners.py") && matches!(func, "run" | "run_until_complete"))
        || (f.file_ends_with("asyncio/events.py") && func == "_run")
        || f.file.contains("/uvloop/")
}

/// The selector's wait itself (asyncio's `selectors` module).
fn is_selector_wait(f: &Frame) -> bool {
    f.file_ends_with("selectors.py") && matches!(f.short_func(), "select" | "poll" | "control")
}

/// A loop thread running a callback inside asyncio's `_run_once`: reading its locals tells
/// when that iteration began.
pub fn asyncio_busy(frames: &[Frame]) -> bool {
    matches!(loop_state(frames), LoopState::Busy { .. }) && runs_asyncio(frames)
}

/// A thread inside asyncio's `_run_once` (waiting in its selector, or running a callback).
pub fn runs_asyncio(frames: &[Frame]) -> bool {
    frames
        .iter()
        .any(|f| f.short_func() == "_run_once" && f.file_ends_with("asyncio/base_events.py"))
}

/// Classifies one stack (innermost frame last).
pub fn loop_state(frames: &[Frame]) -> LoopState {
    let Some(entry) = frames.iter().rposition(is_loop_frame) else {
        return LoopState::NotALoop;
    };
    let above = &frames[entry + 1..];
    // Nothing above the loop's own frames: uvloop waits (or runs C code) there, asyncio does
    // its bookkeeping between callbacks.
    if above.is_empty() || above.iter().all(is_selector_wait) {
        return LoopState::Waiting;
    }
    LoopState::Busy {
        callback: format!("{} in {}", above[0].file, above[0].func),
    }
}

/// What one read told of the asyncio iteration running on a loop thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Iteration {
    /// Read without frame locals: its start is unknown (uvloop, a loop waiting, or an asyncio
    /// loop whose iteration cannot have reached [`TIMED_FROM_MS`] yet).
    Unread,
    /// Read with locals, but no start found in them: a torn read.
    Missing,
    /// Began at this CLOCK_MONOTONIC time (`_run_once`'s `end_time` local).
    Started(f64),
}

/// How long an asyncio iteration must possibly have run before a read of the loop thread also
/// reads frame locals to time it: the `loop-blocked.lag` default. A start `E` read at `t0`
/// bounds every later iteration's start to `>= E` (and a loop seen waiting, to `>=` then), so
/// until `E + TIMED_FROM_MS` no iteration running can have held the loop that long and a plain
/// read (a fraction of the cost) tells all that matters. A stall once timed is read with locals
/// at every sample while it lasts (its start stays the bound).
pub const TIMED_FROM_MS: f64 = 100.0;

/// The callback running now and since when.
#[derive(Debug, Clone)]
struct BusySpell {
    /// The callback's outermost frame, or the asyncio iteration's start when known.
    callback: String,
    /// How long the iteration had run at the last sample, when its start was read.
    held_ms: Option<f64>,
    /// The sample before the first busy one: the spell began after it.
    before_ms: u64,
    first_ms: u64,
    last_ms: u64,
    stack: Vec<String>,
}

/// How many stalls are kept, and for how long.
const MAX_STALLS: usize = 64;
const KEEP_MS: u64 = 60_000;
/// The window the lag percentiles cover.
pub const WINDOW_MS: u64 = 10_000;
/// Lag samples kept for sparklines.
const HISTORY: usize = 120;

/// One loop thread followed over time.
#[derive(Debug, Clone)]
pub struct LoopTracker {
    pub tid: u32,
    interval_ms: u64,
    busy: Option<BusySpell>,
    /// When the previous sample was taken.
    prev_ms: Option<u64>,
    /// CLOCK_MONOTONIC seconds when the loop was last seen free (or the process started), or
    /// the latest iteration start read, whichever is later: no running iteration can have
    /// begun before.
    bound_mono: f64,
    /// Whether the last sample found an asyncio loop running a callback: the next read should
    /// then read locals straight away once [`LoopTracker::may_be_held`] (no plain read first).
    asyncio_busy: bool,
    stalls: VecDeque<Stall>,
    /// `(at_ms, lag_ms)`: how long the loop had been held at each sample (0 when waiting).
    lag: VecDeque<(u64, f64)>,
    samples: u64,
}

impl LoopTracker {
    pub fn new(tid: u32, interval_ms: u64, started_mono: f64) -> Self {
        LoopTracker {
            tid,
            interval_ms: interval_ms.max(1),
            busy: None,
            prev_ms: None,
            bound_mono: started_mono,
            asyncio_busy: false,
            stalls: VecDeque::new(),
            lag: VecDeque::new(),
            samples: 0,
        }
    }

    /// The length of a spell seen from `first` to `last`: it began after the sample before
    /// `first` and ends before the one after `last` (`after_ms`, or one interval on for a
    /// spell still running), so the middle estimate adds half of each gap. Real gaps, not the
    /// nominal interval: a sampler starved of CPU samples late.
    fn spell_ms(&self, spell: &BusySpell, after_ms: Option<u64>) -> f64 {
        let after = after_ms.unwrap_or(spell.last_ms + self.interval_ms);
        if let Some(held) = spell.held_ms {
            // Known exactly up to the last sample; it ended within the gap after it.
            return held + after_ms.map_or(0, |a| a - spell.last_ms) as f64 / 2.0;
        }
        let seen = (spell.last_ms - spell.first_ms) as f64;
        let gaps = (spell.first_ms - spell.before_ms) + (after - spell.last_ms);
        seen + gaps as f64 / 2.0
    }

    /// Ends the spell running; `after_ms`: the sample that saw it over, or `None` when it ended
    /// at some time not seen (it counts for what was seen).
    fn close_spell(&mut self, after_ms: Option<u64>) {
        if let Some(spell) = self.busy.take() {
            // A callback seen once is a blink shorter than two intervals; not a stall (unless
            // its iteration was timed).
            let duration_ms = self.spell_ms(&spell, after_ms);
            let seen = spell.last_ms > spell.first_ms || spell.held_ms.is_some();
            // Shorter than the sampling interval is below what sampling can tell.
            if seen && duration_ms >= self.interval_ms as f64 {
                self.stalls.push_back(Stall {
                    at_ms: spell.last_ms,
                    duration_ms,
                    stack: spell.stack,
                    task: None,
                });
            }
        }
    }

    /// Whether an iteration running at `now_mono` may have held the loop [`TIMED_FROM_MS`] or
    /// more: none can have begun before the bound.
    pub fn may_be_held(&self, now_mono: f64) -> bool {
        (now_mono - self.bound_mono) * 1000.0 >= TIMED_FROM_MS
    }

    /// Feeds one sample of the loop thread taken at `at_ms` (epoch), by a read that ran from
    /// `mono.0` to `mono.1` (CLOCK_MONOTONIC s). An asyncio loop running a callback is judged by its iterations
    /// only: with a start read, the spell is that iteration, timed exactly, not a guess from one
    /// callback name (a loop that never idles runs the same function over and over in short
    /// iterations). A start before the bound, or after the read, is a torn read and is not used;
    /// nor is a timed read without a start. Read without locals while
    /// [`LoopTracker::may_be_held`] is false, its iteration has held the loop less than
    /// [`TIMED_FROM_MS`]: it ends the spell seen before (at an unseen time, after its last
    /// sample) and adds no lag point (its lag is unknown, and below what the rule judges).
    pub fn observe(
        &mut self,
        at_ms: u64,
        mono: (f64, f64),
        frames: &[Frame],
        iteration: Iteration,
    ) {
        let (read_from, now_mono) = mono;
        self.samples += 1;
        self.asyncio_busy = asyncio_busy(frames);
        let timed = match iteration {
            Iteration::Started(s) if s <= now_mono && s >= self.bound_mono => {
                Some((s, (now_mono - s) * 1000.0))
            }
            _ if !self.asyncio_busy => None,
            Iteration::Unread if !self.may_be_held(now_mono) => {
                self.close_spell(None);
                self.prev_ms = Some(at_ms);
                return;
            }
            // Torn, or unread when it may be a stall: this sample tells nothing.
            _ => return,
        };
        match loop_state(frames) {
            LoopState::Busy { callback } => {
                let callback = match timed {
                    Some((start, _)) => {
                        self.bound_mono = start;
                        format!("iteration at {start}")
                    }
                    None => callback,
                };
                let stack = frames.iter().map(Frame::to_string).collect();
                self.busy_at(at_ms, callback, timed, Some(stack));
            }
            LoopState::Waiting | LoopState::NotALoop => self.free_at(at_ms, read_from),
        }
        self.end_sample(at_ms);
    }

    /// Feeds a quick read of an asyncio loop thread that read only when its iteration began
    /// ([`super::run_once`], no stack): `Some(start)`, or `None` for a loop between iterations
    /// at the time of the read. Returns false, recording nothing, when the read cannot stand
    /// for a whole sample: a start outside what the bound allows (torn), or an iteration that
    /// has run half an interval or more (it may be a stall: its stack is wanted, from a full
    /// read). An iteration seen only by quick reads cannot be recorded as a stall: it ran less
    /// than half an interval at its last read and ended within the next interval.
    pub fn observe_quick(&mut self, at_ms: u64, mono: (f64, f64), start: Option<f64>) -> bool {
        let (read_from, now_mono) = mono;
        match start {
            None => {
                self.samples += 1;
                self.asyncio_busy = false;
                self.free_at(at_ms, read_from);
            }
            Some(s) => {
                let held_ms = (now_mono - s) * 1000.0;
                if s > now_mono || s < self.bound_mono || held_ms >= self.interval_ms as f64 / 2.0 {
                    return false;
                }
                self.samples += 1;
                self.asyncio_busy = true;
                self.bound_mono = s;
                self.busy_at(at_ms, format!("iteration at {s}"), Some((s, held_ms)), None);
            }
        }
        self.end_sample(at_ms);
        true
    }

    /// The loop seen running `callback` (an iteration's start when timed, with how long it had
    /// held the loop); `stack`: its frames, when read (a spell read only quickly keeps what an
    /// earlier read of it showed).
    fn busy_at(
        &mut self,
        at_ms: u64,
        callback: String,
        timed: Option<(f64, f64)>,
        stack: Option<Vec<String>>,
    ) {
        let same = self.busy.as_ref().is_some_and(|b| b.callback == callback);
        if !same {
            self.close_spell(Some(at_ms));
            self.busy = Some(BusySpell {
                callback,
                held_ms: None,
                before_ms: self
                    .prev_ms
                    .unwrap_or(at_ms.saturating_sub(self.interval_ms)),
                first_ms: at_ms,
                last_ms: at_ms,
                stack: Vec::new(),
            });
        }
        let spell = self.busy.as_mut().expect("set above");
        spell.last_ms = at_ms;
        spell.held_ms = timed.map(|(_, held)| held);
        if let Some(stack) = stack {
            spell.stack = stack;
        }
        let held = spell.held_ms.unwrap_or((at_ms - spell.first_ms) as f64);
        self.lag.push_back((at_ms, held));
    }

    /// The loop seen free (waiting, or between iterations) during a read that began at
    /// `read_from`: an iteration may have begun after that.
    fn free_at(&mut self, at_ms: u64, read_from: f64) {
        self.close_spell(Some(at_ms));
        self.bound_mono = self.bound_mono.max(read_from);
        self.lag.push_back((at_ms, 0.0));
    }

    /// Bookkeeping after each sample: the lag window and the stalls kept.
    fn end_sample(&mut self, at_ms: u64) {
        self.prev_ms = Some(at_ms);
        while self.lag.front().is_some_and(|(t, _)| at_ms - t > WINDOW_MS) {
            self.lag.pop_front();
        }
        self.stalls
            .retain(|s| at_ms.saturating_sub(s.at_ms) <= KEEP_MS);
        while self.stalls.len() > MAX_STALLS {
            // The shortest goes first: the long ones are what the rule reports.
            let shortest = self
                .stalls
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.duration_ms.total_cmp(&b.1.duration_ms))
                .map(|(i, _)| i);
            if let Some(i) = shortest {
                self.stalls.remove(i);
            }
        }
    }

    /// The loop as the model shows it; a callback still holding the loop counts as a stall
    /// up to now.
    pub fn view(&self) -> EventLoop {
        let mut stalls: Vec<Stall> = self.stalls.iter().cloned().collect();
        if let Some(spell) = &self.busy
            && (spell.last_ms > spell.first_ms || spell.held_ms.is_some())
            && self.spell_ms(spell, None) >= self.interval_ms as f64
        {
            stalls.push(Stall {
                at_ms: spell.last_ms,
                duration_ms: self.spell_ms(spell, None),
                stack: spell.stack.clone(),
                task: None,
            });
        }
        let mut lags: Vec<f64> = self.lag.iter().map(|(_, l)| *l).collect();
        let lag_history_ms = lags[lags.len().saturating_sub(HISTORY)..].to_vec();
        lags.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if lags.is_empty() {
                0.0
            } else {
                lags[((lags.len() - 1) as f64 * p).round() as usize]
            }
        };
        EventLoop {
            id: format!("python-outside-{}", self.tid),
            tid: self.tid,
            running: true,
            lag: LagStats {
                p50_ms: pct(0.5),
                p99_ms: pct(0.99),
                max_ms: lags.last().copied().unwrap_or(0.0),
                samples: self.samples,
                window_ms: WINDOW_MS,
            },
            lag_history_ms,
            stalls,
            runtime: None,
        }
    }
}

/// A thread whose stack has not changed since `since_ms`.
#[derive(Debug, Clone)]
struct Still {
    frames: Vec<Frame>,
    since_ms: u64,
}

/// A thread's outermost frame stays the same while it lives; a read that shows another one a
/// few times running is believed (a new thread with a reused id).
const ROOT_CHANGE_AFTER: u8 = 3;

/// Every Python thread followed over time: the loop threads, and how long each thread has sat
/// in the same frame.
#[derive(Debug, Default)]
pub struct Watch {
    interval_ms: u64,
    /// CLOCK_MONOTONIC seconds at which the target started.
    started_mono: f64,
    pub loops: HashMap<u32, LoopTracker>,
    still: HashMap<u32, Still>,
    /// Each thread's outermost frame, and how many reads in a row showed another function.
    roots: HashMap<u32, (Frame, u8)>,
    /// Samples refused by [`Watch::consistent`].
    pub torn: u64,
    /// The newest sample's threads.
    pub latest: Vec<ThreadStack>,
    pub latest_at_ms: u64,
}

impl Watch {
    pub fn new(interval_ms: u64, started_mono: f64) -> Self {
        Watch {
            interval_ms,
            started_mono,
            ..Watch::default()
        }
    }

    /// The threads of a sample read without stopping the target whose stacks do not hold
    /// together: a stack read while the target changed it can be torn (frames of two moments,
    /// or a half-written one). Every frame must name its function and file, and a thread's
    /// outermost frame must be the one it had before (a thread's entry never changes while it
    /// lives). Each one is counted in `torn`.
    fn torn_threads(&mut self, threads: &[ThreadStack]) -> Vec<u32> {
        let mut torn = Vec::new();
        for t in threads {
            let (Some(tid), Some(root)) = (t.tid, t.frames.first()) else {
                continue;
            };
            let half_written = t
                .frames
                .iter()
                .any(|f| f.func.is_empty() || f.file.is_empty());
            let moved = match self.roots.get_mut(&tid) {
                // The function, not its line: `<module>` moves on from one statement to the
                // next.
                Some((known, misses)) if (&known.func, &known.file) != (&root.func, &root.file) => {
                    *misses += 1;
                    if *misses >= ROOT_CHANGE_AFTER {
                        *known = root.clone();
                        *misses = 0;
                    }
                    *misses > 0
                }
                Some((_, misses)) => {
                    *misses = 0;
                    false
                }
                None => {
                    self.roots.insert(tid, (root.clone(), 0));
                    false
                }
            };
            if half_written || moved {
                torn.push(tid);
            }
        }
        self.torn += torn.len() as u64;
        torn
    }

    /// Feeds one sample taken at `at_ms` (epoch) by a read that ran from `mono.0` to `mono.1`
    /// (CLOCK_MONOTONIC seconds). `timed`: it was read with locals, so a busy asyncio loop
    /// without an iteration start is a torn read, not a loop to judge by its callback's name.
    /// A torn thread ([`Watch::torn_threads`]) is left out of this sample; returns whether one
    /// was a loop thread (worth reading again at once).
    pub fn observe(
        &mut self,
        at_ms: u64,
        mono: (f64, f64),
        timed: bool,
        threads: Vec<ThreadStack>,
    ) -> bool {
        let torn = self.torn_threads(&threads);
        let mut seen = Vec::with_capacity(threads.len());
        let mut loop_torn = false;
        for t in &threads {
            let Some(tid) = t.tid else { continue };
            seen.push(tid);
            if torn.contains(&tid) {
                loop_torn |= self.loops.contains_key(&tid);
                continue;
            }
            if !matches!(loop_state(&t.frames), LoopState::NotALoop) {
                self.loops
                    .entry(tid)
                    .or_insert_with(|| LoopTracker::new(tid, self.interval_ms, self.started_mono))
                    .observe(
                        at_ms,
                        mono,
                        &t.frames,
                        match (timed, t.iteration_started) {
                            (false, _) => Iteration::Unread,
                            (true, None) => Iteration::Missing,
                            (true, Some(start)) => Iteration::Started(start),
                        },
                    );
            }
            match self.still.get_mut(&tid) {
                Some(s) if s.frames == t.frames => {}
                _ => {
                    self.still.insert(
                        tid,
                        Still {
                            frames: t.frames.clone(),
                            since_ms: at_ms,
                        },
                    );
                }
            }
        }
        self.still.retain(|tid, _| seen.contains(tid));
        self.loops.retain(|tid, _| seen.contains(tid));
        self.roots.retain(|tid, _| seen.contains(tid));
        self.latest = threads;
        self.latest_at_ms = at_ms;
        loop_torn
    }

    /// A quick read of the loop thread `tid` ([`LoopTracker::observe_quick`]); false when it
    /// is not followed (yet) or the read cannot stand for a sample.
    pub fn observe_quick(
        &mut self,
        at_ms: u64,
        mono: (f64, f64),
        tid: u32,
        start: Option<f64>,
    ) -> bool {
        // `latest_at_ms` stays the last full read's: it dates the stacks `parked` judges.
        self.loops
            .get_mut(&tid)
            .is_some_and(|l| l.observe_quick(at_ms, mono, start))
    }

    /// Before a read at `now_mono`: whether to read frame locals straight away, without a plain
    /// read first. So when a loop thread was last seen running an asyncio callback and its
    /// iteration may have held the loop [`TIMED_FROM_MS`] by now (a stall being timed, or a
    /// loop that never idles, due for the start of its current iteration).
    pub fn start_wanted(&self, now_mono: f64) -> bool {
        self.loops
            .values()
            .any(|l| l.asyncio_busy && l.may_be_held(now_mono))
    }

    /// After a plain read ended at `now_mono`: whether to read again with frame locals, since
    /// one of its loop threads runs an asyncio callback in an iteration that may have held the
    /// loop [`TIMED_FROM_MS`] (a loop not followed yet, included).
    pub fn start_needed(&self, threads: &[ThreadStack], now_mono: f64) -> bool {
        threads.iter().any(|t| {
            asyncio_busy(&t.frames)
                && t.tid
                    .is_some_and(|tid| self.loops.get(&tid).is_none_or(|l| l.may_be_held(now_mono)))
        })
    }

    /// Threads that have sat in the same frame for at least `after_ms`, with that frame, as
    /// `(tid, parked_ms, innermost frame)`. A loop waiting in its selector is not parked.
    pub fn parked(&self, after_ms: u64) -> Vec<(u32, u64, String)> {
        let mut out: Vec<(u32, u64, String)> = self
            .still
            .iter()
            .filter(|(_, s)| {
                !s.frames.is_empty() && !matches!(loop_state(&s.frames), LoopState::Waiting)
            })
            .map(|(tid, s)| (*tid, self.latest_at_ms.saturating_sub(s.since_ms), s))
            .filter(|(_, ms, _)| *ms >= after_ms)
            .map(|(tid, ms, s)| {
                let frames: Vec<String> = s.frames.iter().map(Frame::to_string).collect();
                let shown = crate::model::own_frame(&frames)
                    .or(frames.last().map(String::as_str))
                    .unwrap_or_default()
                    .to_string();
                (tid, ms, shown)
            })
            .collect();
        out.sort();
        out
    }

    /// The runtime's view of the threads (name and stack), joined to /proc by tid.
    pub fn probe_threads(&self) -> Vec<ProbeThread> {
        self.latest
            .iter()
            .filter_map(|t| {
                Some(ProbeThread {
                    native_id: t.tid?,
                    name: t.name.clone().unwrap_or_default(),
                    stack: t.frames.iter().map(Frame::to_string).collect(),
                    ..ProbeThread::default()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(file: &str, func: &str, line: i32) -> Frame {
        Frame {
            func: func.into(),
            file: file.into(),
            line,
        }
    }

    const BASE: &str = "/usr/lib/python3.12/asyncio/base_events.py";

    fn asyncio_waiting() -> Vec<Frame> {
        vec![
            f("app.py", "<module>", 40),
            f("/usr/lib/python3.12/asyncio/runners.py", "run", 118),
            f(BASE, "BaseEventLoop.run_forever", 639),
            f(BASE, "BaseEventLoop._run_once", 1936),
            f(
                "/usr/lib/python3.12/selectors.py",
                "EpollSelector.select",
                468,
            ),
        ]
    }

    fn asyncio_busy(func: &str, line: i32) -> Vec<Frame> {
        let mut s = asyncio_waiting();
        s.pop();
        s.push(f(
            "/usr/lib/python3.12/asyncio/events.py",
            "Handle._run",
            84,
        ));
        s.push(f("app.py", func, line));
        s
    }

    #[test]
    fn states_of_asyncio_and_uvloop_stacks() {
        assert_eq!(loop_state(&asyncio_waiting()), LoopState::Waiting);
        assert_eq!(
            loop_state(&asyncio_busy("handler", 12)),
            LoopState::Busy {
                callback: "app.py in handler".into()
            }
        );
        let uv_wait = vec![
            f("app.py", "<module>", 30),
            f(
                "/venv/lib/python3.12/site-packages/uvloop/__init__.py",
                "run",
                109,
            ),
        ];
        assert_eq!(loop_state(&uv_wait), LoopState::Waiting);
        let mut uv_busy = uv_wait.clone();
        uv_busy.push(f("app.py", "handler", 9));
        assert!(matches!(loop_state(&uv_busy), LoopState::Busy { .. }));
        let worker = vec![f("threading.py", "_bootstrap", 1), f("app.py", "work", 5)];
        assert_eq!(loop_state(&worker), LoopState::NotALoop);
    }

    fn uv_waiting() -> Vec<Frame> {
        vec![
            f("app.py", "<module>", 30),
            f(
                "/venv/lib/python3.12/site-packages/uvloop/__init__.py",
                "run",
                109,
            ),
        ]
    }

    /// uvloop runs its loop in C: a callback is judged by its name, over samples.
    fn uv_busy(func: &str, line: i32) -> Vec<Frame> {
        let mut s = uv_waiting();
        s.push(f("app.py", func, line));
        s
    }

    /// A read at `at_ms`, CLOCK_MONOTONIC = epoch ms / 1000, taking no time.
    fn at(at_ms: u64) -> (f64, f64) {
        (at_ms as f64 / 1000.0, at_ms as f64 / 1000.0)
    }

    /// Between full reads a healthy asyncio loop is followed by quick reads (its iteration's
    /// start, no stack): short iterations and waits make lag points, never a stall; an
    /// iteration that has run half an interval asks for a full read, whose stack the stall
    /// then keeps, and quick reads of the same iteration never take it away.
    #[test]
    fn quick_reads_follow_short_iterations_and_hand_a_long_one_to_a_full_read() {
        let mut t = LoopTracker::new(7, 50, 0.0);
        t.observe(1_000, at(1_000), &asyncio_waiting(), Iteration::Unread);
        // Iterations of a few ms each, and a wait: all quick.
        for i in 1..=20u64 {
            let now = 1_000 + 50 * i;
            let start = (now - 3) as f64 / 1000.0;
            let read = if i % 5 == 0 { None } else { Some(start) };
            assert!(t.observe_quick(now, at(now), read), "sample {i}");
        }
        let view = t.view();
        assert!(view.stalls.is_empty(), "{view:?}");
        assert_eq!(view.lag.samples, 21);
        assert!(view.lag.max_ms > 2.9 && view.lag.max_ms < 3.1, "{view:?}");
        // Torn: a start before the last one read, or after the read.
        assert!(!t.observe_quick(2_050, at(2_050), Some(1.5)));
        assert!(!t.observe_quick(2_050, at(2_050), Some(2.1)));
        // An iteration from 2.030 s: 20 ms at 2.050 (quick), 70 ms at 2.100: a full read.
        assert!(t.observe_quick(2_050, at(2_050), Some(2.030)));
        assert!(!t.observe_quick(2_100, at(2_100), Some(2.030)));
        t.observe(
            2_100,
            at(2_100),
            &asyncio_busy("handler", 12),
            Iteration::Started(2.030),
        );
        t.observe(
            2_150,
            at(2_150),
            &asyncio_busy("handler", 12),
            Iteration::Started(2.030),
        );
        assert!(t.observe_quick(2_200, at(2_200), None));
        let stalls = t.view().stalls;
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert!((stalls[0].duration_ms - 145.0).abs() < 1.0, "{stalls:?}");
        assert_eq!(stalls[0].stack.last().unwrap(), "app.py:12 in handler");
        // Quick reads only, an iteration of 24 ms at its last read: not a stall.
        assert!(t.observe_quick(2_250, at(2_250), Some(2.226)));
        assert!(t.observe_quick(2_300, at(2_300), None));
        assert_eq!(t.view().stalls.len(), 1);
    }

    #[test]
    fn a_callback_held_over_many_samples_is_one_stall_with_its_stack() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        t.observe(1_000, at(1_000), &uv_waiting(), Iteration::Unread);
        for i in 1..=15 {
            let ms = 1_000 + i * 20;
            t.observe(ms, at(ms), &uv_busy("handler", 12), Iteration::Unread);
        }
        t.observe(1_320, at(1_320), &uv_waiting(), Iteration::Unread);
        let view = t.view();
        assert_eq!(view.stalls.len(), 1, "{view:?}");
        let stall = &view.stalls[0];
        // Seen from 1020 to 1300: 280 ms plus half of the gaps on either side.
        assert_eq!(stall.duration_ms, 300.0);
        assert_eq!(stall.stack.last().unwrap(), "app.py:12 in handler");
        assert!(view.lag.max_ms >= 280.0);
    }

    #[test]
    fn a_loop_that_never_idles_is_not_blocked_when_its_iterations_are_short() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        // The same callback at every sample, each time in a new 2 ms iteration.
        for i in 0..50u64 {
            let start = 10.0 + i as f64 * 0.02;
            t.observe(
                1_000 + i * 20,
                (start + 0.002, start + 0.002),
                &asyncio_busy("step", 5),
                Iteration::Started(start),
            );
        }
        let view = t.view();
        assert!(view.stalls.is_empty(), "{view:?}");
        assert!(view.lag.max_ms < 10.0);
        // One iteration seen 300 ms in is a 300 ms stall, timed by its own start.
        t.observe(
            2_000,
            (20.3, 20.3),
            &asyncio_busy("step", 5),
            Iteration::Started(20.0),
        );
        t.observe(2_020, (20.32, 20.32), &asyncio_waiting(), Iteration::Unread);
        // A start before the loop was last seen free is a torn read: the sample is skipped.
        t.observe(
            2_040,
            (20.34, 20.34),
            &asyncio_busy("step", 5),
            Iteration::Started(0.5),
        );
        assert!(t.busy.is_none());
        let longest = t
            .view()
            .stalls
            .iter()
            .map(|s| s.duration_ms)
            .fold(0.0, f64::max);
        assert!((longest - 310.0).abs() < 1e-6, "{longest}");
    }

    #[test]
    fn late_samples_widen_the_estimate_by_their_real_gaps() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        t.observe(1_000, at(1_000), &uv_waiting(), Iteration::Unread);
        // The sampler was starved: 100 ms before the first busy sample and after the last.
        t.observe(1_100, at(1_100), &uv_busy("handler", 12), Iteration::Unread);
        t.observe(1_200, at(1_200), &uv_busy("handler", 12), Iteration::Unread);
        t.observe(1_300, at(1_300), &uv_waiting(), Iteration::Unread);
        assert_eq!(t.view().stalls[0].duration_ms, 200.0);
    }

    #[test]
    fn a_callback_still_running_counts_up_to_now() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        t.observe(980, at(980), &uv_waiting(), Iteration::Unread);
        for i in 0..10 {
            let ms = 1_000 + i * 20;
            t.observe(ms, at(ms), &uv_busy("handler", 12), Iteration::Unread);
        }
        let view = t.view();
        assert_eq!(view.stalls.len(), 1);
        assert_eq!(view.stalls[0].duration_ms, 200.0);
    }

    #[test]
    fn different_callbacks_and_blinks_are_not_one_long_stall() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        for i in 0..20 {
            let stack = if i % 2 == 0 {
                uv_busy("a", 1)
            } else {
                uv_busy("b", 2)
            };
            t.observe(i * 20, at(i * 20), &stack, Iteration::Unread);
        }
        t.observe(400, at(400), &uv_waiting(), Iteration::Unread);
        assert!(t.view().stalls.is_empty(), "{:?}", t.view().stalls);
    }

    #[test]
    fn an_asyncio_loop_read_without_locals_is_judged_only_below_the_horizon() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        let step = |t: &mut LoopTracker, ms: u64, iteration| {
            t.observe(ms, at(ms), &asyncio_busy("step", 5), iteration)
        };
        t.observe(1_000, at(1_000), &asyncio_waiting(), Iteration::Unread);
        // Busy, unread, less than the horizon after the loop was seen free: no spell and no
        // lag point (its lag is unknown), whatever the callback's name says.
        for ms in [1_020, 1_040, 1_060, 1_080] {
            assert!(!t.may_be_held(ms as f64 / 1000.0));
            step(&mut t, ms, Iteration::Unread);
        }
        assert!(t.busy.is_none());
        assert_eq!(t.lag.len(), 1);
        // From the horizon on, an unread busy sample tells nothing (it could be a stall):
        // skipped, and the sampler reads with locals instead.
        assert!(t.may_be_held(1.1));
        step(&mut t, 1_100, Iteration::Unread);
        assert!(t.busy.is_none());
        // Timed: this iteration began at 1.090, so none can have held the loop 100 ms until
        // 1.190.
        step(&mut t, 1_120, Iteration::Started(1.09));
        assert!(!t.may_be_held(1.189) && t.may_be_held(1.191));
        // A timed spell ended at a time not seen counts for what was seen: 30 ms.
        step(&mut t, 1_140, Iteration::Unread);
        assert!(t.busy.is_none());
        let stalls = t.view().stalls;
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert!((stalls[0].duration_ms - 30.0).abs() < 1e-6, "{stalls:?}");
        // A read with locals that found no start is torn: skipped.
        step(&mut t, 1_200, Iteration::Missing);
        assert!(t.busy.is_none() && t.lag.len() == 2);
    }

    #[test]
    fn an_iteration_begun_while_the_read_that_saw_the_loop_free_ran_is_not_torn() {
        let mut t = LoopTracker::new(7, 20, 0.0);
        // Seen waiting by a read from 1.000 to 1.004; the next iteration began at 1.002.
        t.observe(1_004, (1.0, 1.004), &asyncio_waiting(), Iteration::Unread);
        t.observe(
            1_204,
            at(1_204),
            &asyncio_busy("handler", 9),
            Iteration::Started(1.002),
        );
        let stall = t.view().stalls.pop().expect("a stall");
        assert!((stall.duration_ms - 202.0).abs() < 1e-6, "{stall:?}");
    }

    /// The sampler's choice (mod.rs `read_for_loops`), fed with stacks a loop runs: a loop
    /// thread 10 showing `frames`, whose iteration began at `start` (epoch ms, as
    /// [`at`]). Returns how many reads it took and whether the last one read locals.
    fn sample(w: &mut Watch, at_ms: u64, frames: &[Frame], start: u64) -> (u32, bool) {
        let read = |timed: bool| {
            vec![ThreadStack {
                iteration_started: timed.then_some(start as f64 / 1000.0),
                ..thread(10, frames.to_vec())
            }]
        };
        let now = at_ms as f64 / 1000.0;
        let (reads, timed) = if w.start_wanted(now) {
            (1, true)
        } else if w.start_needed(&read(false), now) {
            (2, true)
        } else {
            (1, false)
        };
        w.observe(at_ms, at(at_ms), timed, read(timed));
        (reads, timed)
    }

    #[test]
    fn a_loop_that_never_idles_is_read_with_locals_once_per_horizon_and_a_stall_at_each_sample() {
        let mut w = Watch::new(50, 0.0);
        let (mut reads, mut timed) = (0, 0);
        // 20 Hz for 2 s of 2 ms iterations of the same callback.
        for i in 0..40 {
            let ms = 1_000 + i * 50;
            let (r, t) = sample(&mut w, ms, &asyncio_busy("step", 5), ms - 2);
            reads += r;
            timed += u32::from(t);
        }
        // The first sample is read twice (no loop followed yet: a plain read, then with
        // locals); then every other one with locals, 100 ms after the start last read.
        assert_eq!((reads, timed), (41, 20));
        let view = w.loops[&10].view();
        assert!(view.stalls.is_empty(), "{view:?}");
        assert!(view.lag.max_ms < 10.0, "{view:?}");
        // A callback holds the loop from 2.990 to 3.290 (a `time.sleep(0.3)`); 2 ms
        // iterations again after it.
        let mut during = Vec::new();
        for i in 0..12 {
            let ms = 3_000 + i * 50;
            let (frames, start) = if ms < 3_290 {
                (asyncio_busy("handler", 12), 2_990)
            } else {
                (asyncio_busy("step", 5), ms - 2)
            };
            during.push(sample(&mut w, ms, &frames, start).1);
        }
        // Timed at 3.000 (due: 102 ms after the start read at 2.898), which finds it 10 ms in;
        // plain at 3.050 (it began 60 ms before); from 3.100 on it may have held the loop
        // 100 ms: timed at every sample while it lasts, and the one after it, which finds a
        // new start (3.298); then every other sample again.
        assert_eq!(
            during,
            [
                true, false, true, true, true, true, true, false, true, false, true, false
            ],
            "{during:?}"
        );
        let view = w.loops[&10].view();
        assert_eq!(view.stalls.len(), 1, "{view:?}");
        let stall = &view.stalls[0];
        // Seen 260 ms in at 3.250, over by 3.300: 260 + 25.
        assert!((stall.duration_ms - 285.0).abs() < 1e-6, "{stall:?}");
        assert_eq!(stall.stack.last().unwrap(), "app.py:12 in handler");
        assert!(view.lag.max_ms >= 259.0, "{view:?}");
    }

    fn thread(tid: u32, frames: Vec<Frame>) -> ThreadStack {
        ThreadStack {
            tid: Some(tid),
            python_id: u64::from(tid),
            name: None,
            frames,
            gil: false,
            idle: true,
            iteration_started: None,
        }
    }

    #[test]
    fn torn_reads_are_left_out_and_a_new_thread_on_an_old_id_is_believed() {
        let mut w = Watch::new(20, 0.0);
        let busy = |at: u64, frames: Vec<Frame>| (at, vec![thread(10, frames)]);
        let feed = |w: &mut Watch, (ms, threads): (u64, Vec<ThreadStack>)| {
            w.observe(ms, at(ms), false, threads)
        };
        assert!(!feed(&mut w, busy(1_000, uv_waiting())));
        assert!(!feed(&mut w, busy(1_020, uv_busy("handler", 12))));
        // A frame read half-written (no function name): left out, the loop's spell goes on.
        let mut half = uv_busy("other", 3);
        half[2].func.clear();
        assert!(feed(&mut w, busy(1_040, half)), "a loop thread was torn");
        // Frames of another moment below the loop: its entry is not `<module>` any more.
        let mut moved = uv_busy("other", 3);
        moved.remove(0);
        assert!(feed(&mut w, busy(1_060, moved.clone())));
        assert_eq!(w.torn, 2);
        assert!(!feed(&mut w, busy(1_080, uv_busy("handler", 12))));
        assert!(!feed(&mut w, busy(1_100, uv_waiting())));
        // One stall from 1020 to 1080: the torn reads neither split nor renamed it.
        let stalls = w.loops[&10].view().stalls;
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert_eq!(stalls[0].stack.last().unwrap(), "app.py:12 in handler");
        // The same other entry read again and again: a new thread that got the id.
        let verdicts: Vec<bool> = (0..4)
            .map(|i| feed(&mut w, busy(1_200 + i * 20, moved.clone())))
            .collect();
        assert_eq!(verdicts, [true, true, false, false]);
        assert_eq!(w.torn, 4);
    }

    #[test]
    fn a_thread_in_the_same_frame_is_parked_and_a_waiting_loop_is_not() {
        let mut w = Watch::new(20, 0.0);
        let stuck = ThreadStack {
            tid: Some(11),
            python_id: 11,
            name: Some("worker".into()),
            frames: vec![
                f("/usr/lib/python3.12/threading.py", "Thread.run", 1010),
                f("app.py", "worker", 33),
            ],
            gil: false,
            idle: true,
            iteration_started: None,
        };
        let lp = ThreadStack {
            tid: Some(10),
            python_id: 10,
            name: None,
            frames: asyncio_waiting(),
            gil: false,
            idle: true,
            iteration_started: None,
        };
        for i in 0..10 {
            w.observe(
                i * 1_000,
                at(i * 1_000),
                false,
                vec![stuck.clone(), lp.clone()],
            );
        }
        assert_eq!(
            w.parked(5_000),
            vec![(11, 9_000, "app.py:33 in worker".to_string())]
        );
        assert!(w.parked(10_000).is_empty());
        assert!(w.loops.contains_key(&10));
        assert!(!w.loops.contains_key(&11));
    }
}
