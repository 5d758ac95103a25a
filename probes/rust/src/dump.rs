//! Where stuck tasks wait: their await chains (`file:line in fn`, innermost last), from
//! tokio's task dumps (the `taskdump` feature, with `--cfg tokio_unstable`, Linux).
//!
//! A dump pauses every worker and re-polls every task in tracing mode, and resolving its
//! backtraces reads debug info (100 ms and more): so one is taken only when some task is a
//! stuck candidate (idle, no progress for [`DUMP_AFTER`], no chain known for its current
//! poll count), at most once per [`DUMP_EVERY`], on a thread of its own, with a timeout (a
//! dump never completes while a worker is blocked). A chain stays valid until the task is
//! polled again, so it is kept keyed by the task's poll count.

use crate::registry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// A task idle this long is a stuck candidate worth a dump.
const DUMP_AFTER: Duration = Duration::from_millis(900);
/// At most one dump per this long, or per 100 times the last dump's pause if longer (the
/// runtime spends at most 1% of its time paused for dumps).
const DUMP_EVERY: Duration = Duration::from_secs(5);
const DUTY: u32 = 100;
/// At most one look for candidates per this long.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// After a dump, tokio polls each task it traced once more (the traced leaves' wakers are
/// deferred to then); how long to wait for that poll. Usually it comes within a millisecond,
/// but a loaded machine can delay it well past the fixed 100 ms once waited here, and a
/// poll counted after the undo read as progress of a stuck task.
const REPOLL_WAIT_MAX: Duration = Duration::from_secs(1);
const REPOLL_STEP: Duration = Duration::from_millis(5);
/// A dump pending longer than this is waiting for a blocked worker, not pausing the
/// runtime: lag seen meanwhile is the program's again. (A dump is never cancelled: tokio
/// leaves its dump request flag set when the `dump()` future is dropped midway, and the next
/// request then spins a worker forever.)
const DUMP_PAUSE_MAX: Duration = Duration::from_secs(2);
/// tokio 1.54's multi-thread dump gathers the workers at a barrier, each waiting at most this
/// long; a dump that took longer may have left a worker stuck (see [`request`]).
const BARRIER_TIMEOUT: Duration = Duration::from_millis(250);
/// Dumps taken back to back at most to free a worker a dump left stuck.
const MAX_HEALS: u64 = 3;
/// How long a worker's counts must stay still after a dump for it to count as stuck: a busy
/// worker publishes them every 61 polls, so this allows polls of up to ~16 ms.
const STUCK_WINDOW: Duration = Duration::from_millis(1000);
/// While a dump is pending, the runtime is nudged this often (see [`request`]).
const NUDGE_EVERY: Duration = Duration::from_millis(20);
/// Frames kept per chain, innermost ones.
const MAX_FRAMES: usize = 24;

/// What a dump said about one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Waiting {
    /// `file:line in fn` (or `fn` without debug info), innermost last.
    pub chain: Vec<String>,
    /// `timer` when it waits on a tokio timer (a wake-up is scheduled).
    pub parked: Option<&'static str>,
}

#[derive(Default)]
struct State {
    /// task id -> (its poll count when dumped, what it waits on)
    by_task: HashMap<u64, (u64, Waiting)>,
    last_dump: Option<Instant>,
    /// The last look for candidates (the registry's table is scanned at most 4 times a second).
    last_scan: Option<Instant>,
    in_flight: bool,
    /// How long the last dump took (pause and re-poll), and resolving its backtraces.
    last_cost: Option<(Duration, Duration)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Dumps are taken only with `LEAKHOUND_TASKDUMP=1`. tokio 1.54.1 can livelock a worker in a
/// dump: after one trace round wakes every traced task at once, a worker that sees the dump
/// request still set traces again and can spin forever in `Shared::steal_all` (its `while
/// !steal.is_empty()` loop with a steal that keeps returning nothing), at 100% CPU, the other
/// worker held at the `trace_end` barrier. Seen in 3 of 20 runs of the overhead bench's
/// dump-cost child (1,000 idle tasks); the probe cannot break it from outside. ([`request`]
/// describes the other hang, which the probe does heal.)
pub(crate) static DISABLED: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("LEAKHOUND_TASKDUMP").map_or(true, |v| v != "1"));

/// Every idle task's (polls, last poll end) before the dump in flight, until its polls are
/// undone: what a snapshot shows meanwhile.
type Progress = HashMap<u64, (u64, u64)>;
static BEFORE: Mutex<Option<std::sync::Arc<Progress>>> = Mutex::new(None);

fn set_before(before: Option<std::sync::Arc<Progress>>) {
    *BEFORE.lock().unwrap_or_else(|e| e.into_inner()) = before;
}

/// How a snapshot should read live tasks' progress: `shown(id, polls, last_poll_end)`. While a
/// dump is in flight or its polls are not yet undone, a task it polled (two polls per dump, a
/// few dumps at most) shows its progress from before the dump: those polls are not progress.
pub(crate) fn progress_view() -> impl Fn(u64, u64, u64) -> (u64, u64) {
    let before = BEFORE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    move |id, polls, last_end| match before.as_ref().and_then(|b| b.get(&id)) {
        Some(&(p, l)) if polls > p && polls <= p + 2 * (MAX_HEALS + 1) => (p, l),
        _ => (polls, last_end),
    }
}

/// When the last dump was requested and when it ended ([`registry::now_ns`]).
static DUMP_STARTED_NS: AtomicU64 = AtomicU64::new(0);
static DUMP_ENDED_NS: AtomicU64 = AtomicU64::new(0);

/// Whether a dump paused the runtime at some point since `since_ns`: lag and long polls
/// over that span are the probe's own doing, not the program's.
pub(crate) fn paused_since(since_ns: u64) -> bool {
    let pending_for = registry::now_ns().saturating_sub(DUMP_STARTED_NS.load(Relaxed));
    (registry::DUMPING.load(Relaxed) && pending_for < DUMP_PAUSE_MAX.as_nanos() as u64)
        || DUMP_ENDED_NS.load(Relaxed) >= since_ns
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(State::default))
}

/// What the last dump found for task `id`, if it has not been polled since.
pub(crate) fn waiting(id: u64, polls: u64) -> Option<Waiting> {
    with_state(|s| {
        s.by_task
            .get(&id)
            .filter(|(p, _)| *p == polls)
            .map(|(_, w)| w.clone())
    })
}

/// The last dump's cost: (dump, resolving), for the bench and the docs.
pub fn last_cost() -> Option<(Duration, Duration)> {
    with_state(|s| s.last_cost)
}

/// Waits up to `max` for a dump in flight to end. A runtime shut down mid-dump can leave a
/// worker waiting at tokio's `trace_end` barrier for one that already exited (see
/// [`request`]), and then the runtime's drop never returns; the dump's own heal needs the
/// runtime still running, so the probe lets the dump end before it goes.
pub(crate) fn wait_for_dump(max: Duration) {
    let end = Instant::now() + max;
    while with_state(|s| s.in_flight) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Called by the watchdog: starts a dump when some task is a stuck candidate.
pub(crate) fn watch(handle: &tokio::runtime::Handle, now: Instant) {
    if !cfg!(all(tokio_unstable, feature = "taskdump"))
        || !registry::HOOKS_INSTALLED.load(Relaxed)
        || *DISABLED
    {
        return;
    }
    let due = with_state(|s| {
        let due = !s.in_flight
            && s.last_dump.is_none_or(|t| {
                let pause = s.last_cost.map_or(Duration::ZERO, |c| c.0);
                now.duration_since(t) >= DUMP_EVERY.max(pause * DUTY)
            })
            && s.last_scan
                .is_none_or(|t| now.duration_since(t) >= SCAN_EVERY);
        if due {
            s.last_scan = Some(now);
        }
        due
    });
    if !due {
        return;
    }
    let now_ns = registry::now_ns();
    let running: HashSet<u64> = registry::polls_now().into_iter().map(|p| p.0).collect();
    let (live, _) = registry::collect();
    let after = DUMP_AFTER.as_nanos() as u64;
    let candidates: HashSet<u64> = with_state(|s| {
        let alive: HashSet<u64> = live.iter().map(|(id, _)| *id).collect();
        s.by_task.retain(|id, _| alive.contains(id));
        live.iter()
            .filter(|(id, e)| {
                let progress = e.last_poll_end_ns.max(e.spawned_ns);
                !running.contains(id)
                    && now_ns.saturating_sub(progress) >= after
                    && s.by_task.get(id).is_none_or(|(p, _)| *p != e.polls)
            })
            .map(|(id, _)| *id)
            .collect()
    });
    if candidates.is_empty() {
        return;
    }
    // Every idle task's progress before the dump, to undo the dump's own poll afterwards.
    let before: HashMap<u64, (u64, u64)> = live
        .iter()
        .filter(|(id, _)| !running.contains(id))
        .map(|(id, e)| (*id, (e.polls, e.last_poll_end_ns)))
        .collect();
    with_state(|s| {
        s.in_flight = true;
        s.last_dump = Some(now);
    });
    let handle = handle.clone();
    let started = std::thread::Builder::new()
        .name("leakhound-dump".into())
        .spawn(move || {
            let found = take(&handle, &before, &candidates);
            with_state(|s| {
                s.in_flight = false;
                if let Some((found, cost)) = found {
                    s.last_cost = Some(cost);
                    s.by_task.extend(found);
                }
            });
        });
    if started.is_err() {
        with_state(|s| s.in_flight = false);
    }
}

/// What one dump found: (task id, (its poll count, where it waits)) for the candidates,
/// and how long the dump and the resolving took.
type Found = (Vec<(u64, (u64, Waiting))>, (Duration, Duration));

/// Takes one dump (waiting as long as it takes: it is never cancelled), undoes its polls
/// for the tasks in `before` (task id -> polls and last poll end before it), and reads the
/// chains of `candidates`.
#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn take(
    handle: &tokio::runtime::Handle,
    before: &HashMap<u64, (u64, u64)>,
    candidates: &HashSet<u64>,
) -> Option<Found> {
    let t0 = Instant::now();
    set_before(Some(std::sync::Arc::new(before.clone())));
    // The dump task and the nudges are the probe's own: the registry hides what this file
    // spawns.
    registry::hide_spawns_from(file!());
    let mut dumps: u64 = 1;
    let Some(mut dump) = request(handle) else {
        set_before(None);
        return None;
    };
    let mut took = t0.elapsed();
    // The pauses alone: not the looks for a stuck worker between them.
    let mut paused = took;
    // A dump over the barrier's timeout may have left a worker waiting at tokio's second
    // barrier for a worker that gave up at the first: the next dump frees it.
    while took > BARRIER_TIMEOUT && dumps <= MAX_HEALS && worker_stuck(handle) {
        dumps += 1;
        let t = Instant::now();
        let Some(d) = request(handle) else { break };
        dump = d;
        took = t.elapsed();
        paused += took;
    }
    let took = paused;
    let t1 = Instant::now();
    let mut found = Vec::new();
    let mut dumped = Vec::new();
    for t in dump.tasks().iter() {
        let id = registry::id_u64(t.id());
        let Some(&(polls, last_end)) = before.get(&id) else {
            continue;
        };
        dumped.push((id, polls, last_end));
        if candidates.contains(&id) {
            found.push((id, (polls, read_trace(t.trace()))));
        }
    }
    let resolved = t1.elapsed();
    // The tracing poll itself bypasses the task hooks; the real one tokio makes after it is
    // counted, and undone once seen.
    undo_when_repolled(
        dumped,
        dumps,
        |id| registry::progress_of(id).map(|p| p.0),
        |id, polls, last_end| registry::undo_dump_poll(id, polls, last_end, dumps),
        Instant::now() + REPOLL_WAIT_MAX,
    );
    set_before(None);
    Some((found, (took, resolved)))
}

/// Undoes the dumps' polls of each task in `dumped` (id, polls and last poll end before)
/// once its count shows them (one per dump: `polls(id)` at least `polls + dumps`), or it
/// ended, or at `deadline` for a task tokio did not re-poll (its leaf was not tokio's).
#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn undo_when_repolled(
    mut dumped: Vec<(u64, u64, u64)>,
    dumps: u64,
    polls_now: impl Fn(u64) -> Option<u64>,
    mut undo: impl FnMut(u64, u64, u64),
    deadline: Instant,
) {
    while !dumped.is_empty() {
        let late = Instant::now() >= deadline;
        dumped.retain(|&(id, polls, last_end)| {
            let done = late || polls_now(id).is_none_or(|now| now >= polls + dumps);
            if done {
                undo(id, polls, last_end);
            }
            !done
        });
        if !dumped.is_empty() {
            std::thread::sleep(REPOLL_STEP);
        }
    }
}

/// Whether some worker of a multi-thread runtime is active (not parked) but has neither
/// parked nor polled while the runtime was nudged for a while: the state [`request`] describes
/// (or a poll that has run all that time, which a dump waits out anyway).
#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn worker_stuck(handle: &tokio::runtime::Handle) -> bool {
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return false;
    }
    let m = handle.metrics();
    let read = || {
        (0..m.num_workers())
            .map(|i| (m.worker_park_unpark_count(i), m.worker_poll_count(i)))
            .collect::<Vec<_>>()
    };
    let before = read();
    // A busy worker publishes its counts every 61 polls (or when it parks): give it time.
    for _ in 0..STUCK_WINDOW.as_millis() / NUDGE_EVERY.as_millis() {
        handle.spawn(async {});
        std::thread::sleep(NUDGE_EVERY);
    }
    let after = read();
    before
        .iter()
        .zip(&after)
        .any(|(b, a)| b == a && b.0 % 2 == 0)
}

/// One task dump, waited for as long as it takes (a dump is never cancelled), or None when
/// the runtime shut down under it.
///
/// tokio 1.54.1's multi-thread dump has every worker meet at a `trace_start` barrier with a
/// 250 ms timeout, the last to arrive tracing, then all meet again at a `trace_end` barrier
/// with no timeout. A worker that gives up at the first (its own run of short polls kept it
/// from looking for over 250 ms: it looks every 61 polls) leaves its count in the barrier
/// (`Barrier::wait_timeout` does not take it back), so the next worker to arrive completes it
/// alone, traces, and waits at `trace_end` forever for the one that gave up — the dump
/// returns, the flag clears, and that worker never runs again, with whatever its core holds
/// (`examples/taskdump_barrier.rs` shows it). A second dump frees it: the worker that gave up
/// comes back to `trace_start`, completes it with its own leftover count, traces and meets
/// the stuck one at `trace_end`. But it comes back only once it wakes, and tokio wakes the
/// parked workers once per dump: so while a dump is pending the runtime is nudged with an
/// empty task every [`NUDGE_EVERY`].
#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn request(handle: &tokio::runtime::Handle) -> Option<tokio::runtime::Dump> {
    DUMP_STARTED_NS.store(registry::now_ns(), Relaxed);
    registry::DUMPING.store(true, Relaxed);
    let dump = request_inner(handle);
    registry::DUMPING.store(false, Relaxed);
    DUMP_ENDED_NS.store(registry::now_ns(), Relaxed);
    dump
}

#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn request_inner(handle: &tokio::runtime::Handle) -> Option<tokio::runtime::Dump> {
    let (tx, rx) = std::sync::mpsc::channel();
    // Spawned, not block_on: a current-thread runtime can only be dumped from inside.
    let h = handle.clone();
    handle.spawn(async move {
        let dump = h.dump().await;
        // Ended here: the runtime runs again from now, whenever this thread learns it.
        DUMP_ENDED_NS.store(registry::now_ns(), Relaxed);
        registry::DUMPING.store(false, Relaxed);
        let _ = tx.send(dump);
    });
    loop {
        match rx.recv_timeout(NUDGE_EVERY) {
            Ok(dump) => return Some(dump),
            // The runtime shut down and dropped the dump task.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                handle.spawn(async {});
            }
        }
    }
}

#[cfg(not(all(tokio_unstable, feature = "taskdump")))]
fn take(
    _: &tokio::runtime::Handle,
    _: &HashMap<u64, (u64, u64)>,
    _: &HashSet<u64>,
) -> Option<Found> {
    None
}

/// `name` without the `::h0123456789abcdef` hash rustc appends.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

/// One symbol as a chain frame.
fn frame(name: &str, file: Option<&std::path::Path>, line: Option<u32>) -> String {
    let name = strip_hash(name);
    match (file, line) {
        (Some(f), Some(l)) => format!("{}:{l} in {name}", f.display()),
        _ => name.to_string(),
    }
}

/// Frames of the tracing machinery itself, above the leaf future.
fn is_capture_frame(name: &str) -> bool {
    name.starts_with("backtrace::")
        || name.contains("tokio::runtime::task::trace")
        || name.contains("tokio::runtime::context")
}

/// A resolved symbol: name, file, line.
type Sym = (String, Option<std::path::PathBuf>, Option<u32>);

fn has_lines(s: &Sym) -> bool {
    s.1.is_some() && s.2.is_some()
}

/// From one leaf's backtrace (innermost first): the frames from the leaf future up to the
/// task's root, innermost last. Frames without line info (libraries built without debug
/// info) are left out when some frame has it; the innermost one that has it names the leaf
/// future it awaits (`…: awaits tokio::sync::oneshot::Receiver<T>`).
fn chain(symbols: &[Sym]) -> Vec<String> {
    let inside: Vec<_> = symbols
        .iter()
        .skip_while(|(n, _, _)| is_capture_frame(n))
        .take_while(|(n, _, _)| !n.contains("tokio::runtime::task::"))
        .take(MAX_FRAMES)
        .collect();
    let mut out: Vec<String> = if inside.iter().any(|s| has_lines(s)) {
        // The outermost line-less frame before the first one with lines: the awaited future.
        let leaf = inside
            .iter()
            .take_while(|s| !has_lines(s))
            .filter(|(n, _, _)| n.contains("Future>::poll"))
            .last()
            .or_else(|| inside.iter().take_while(|s| !has_lines(s)).last())
            .map(|(n, _, _)| strip_hash(n).trim_end_matches("::poll").to_string());
        let mut frames: Vec<String> = inside
            .iter()
            .filter(|s| has_lines(s))
            .map(|(n, f, l)| frame(n, f.as_deref(), *l))
            .collect();
        if let (Some(first), Some(leaf)) = (frames.first_mut(), leaf) {
            let leaf = leaf
                .trim_start_matches('<')
                .split(" as core::future::future::Future>")
                .next()
                .unwrap_or_default()
                .to_string();
            first.push_str(&format!(": awaits {leaf}"));
        }
        frames
    } else {
        inside
            .iter()
            .map(|(n, f, l)| frame(n, f.as_deref(), *l))
            .collect()
    };
    out.reverse();
    out
}

#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn read_trace(trace: &tokio::runtime::dump::Trace) -> Waiting {
    let mut w = Waiting::default();
    for bt in trace.resolve_backtraces() {
        let symbols: Vec<_> = bt
            .frames()
            .flat_map(|f| f.symbols())
            // The probe's own waker-counting wrapper (leakhound_probe::spawn) is no await point.
            .filter(|s| {
                !s.filename()
                    .is_some_and(|f| f.ends_with(crate::spawn::SOURCE_FILE))
            })
            .map(|s| {
                (
                    s.name_demangled().unwrap_or("?").to_string(),
                    s.filename().map(std::path::Path::to_path_buf),
                    s.lineno(),
                )
            })
            .collect();
        if symbols.iter().any(|(n, _, _)| n.contains("tokio::time::")) {
            w.parked = Some("timer");
        }
        if w.chain.is_empty() {
            w.chain = chain(&symbols);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_chain_runs_from_the_leaf_to_the_task_root_innermost_last() {
        let sym =
            |n: &str, f: Option<&str>, l: Option<u32>| (n.to_string(), f.map(PathBuf::from), l);
        let symbols = vec![
            sym("backtrace::backtrace::trace::h0123456789abcdef", None, None),
            sym("tokio::runtime::task::trace::Trace::capture", None, None),
            sym("tokio::sync::oneshot::Inner<T>::poll_recv", None, None),
            sym(
                "<tokio::sync::oneshot::Receiver<T> as core::future::future::Future>::poll",
                None,
                None,
            ),
            sym(
                "app::handler::{{closure}}::h00112233445566ff",
                Some("src/app.rs"),
                Some(41),
            ),
            sym("app::serve::{{closure}}", Some("src/app.rs"), Some(12)),
            sym("tokio::runtime::task::core::Core<T,S>::poll", None, None),
            sym("std::thread::local", None, None),
        ];
        assert_eq!(
            chain(&symbols),
            vec![
                "src/app.rs:12 in app::serve::{{closure}}",
                "src/app.rs:41 in app::handler::{{closure}}: awaits tokio::sync::oneshot::Receiver<T>",
            ]
        );
        // Without line info anywhere, the names are the chain.
        let bare: Vec<_> = symbols.iter().map(|(n, _, _)| sym(n, None, None)).collect();
        assert_eq!(chain(&bare).len(), 4);
    }

    #[test]
    fn only_a_rustc_hash_is_stripped() {
        assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_hash("a::hello"), "a::hello");
        assert_eq!(strip_hash("a::h0123"), "a::h0123");
    }
}

#[cfg(all(test, tokio_unstable, feature = "taskdump"))]
mod dump_tests {
    use super::*;

    #[test]
    fn a_dump_poll_is_undone_only_once_it_has_happened_however_late() {
        use std::cell::{Cell, RefCell};
        // Task 7 (3 polls before the dump) is re-polled on the 4th look, as on a loaded
        // machine; task 8 ended meanwhile; task 9 is never re-polled.
        let looks = Cell::new(0u32);
        let undone = RefCell::new(Vec::new());
        let polls_now = |id: u64| match id {
            7 => {
                looks.set(looks.get() + 1);
                Some(if looks.get() >= 4 { 4 } else { 3 })
            }
            8 => None,
            _ => Some(5),
        };
        let started = Instant::now();
        undo_when_repolled(
            vec![(7, 3, 30), (8, 1, 10), (9, 5, 50)],
            1,
            polls_now,
            |id, polls, _| undone.borrow_mut().push((id, polls, looks.get())),
            started + Duration::from_millis(200),
        );
        let undone = undone.into_inner();
        // Undone when its re-poll showed (the 4th look), not at the first.
        assert!(undone.contains(&(7, 3, 4)), "{undone:?}");
        assert!(undone.iter().any(|u| u.0 == 8), "{undone:?}");
        // The task never re-polled is undone at the deadline, not before it.
        assert!(undone.iter().any(|u| u.0 == 9), "{undone:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(undone.len(), 3);
    }

    #[test]
    fn a_dump_finds_where_an_idle_task_waits_and_that_a_sleeper_is_parked() {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        crate::hooks(&mut b);
        let rt = b.build().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = rt.spawn(async move {
            let _ = rx.await;
        });
        let sleeper = rt.spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await });
        let ids = [
            registry::id_u64(waiter.id()),
            registry::id_u64(sleeper.id()),
        ];
        // (Spawned from this file, they are hidden from the registry's reports like the
        // probe's own dump task: name them as candidates directly.) Both have been polled
        // once and wait.
        let progress = |id| registry::progress_of(id).expect("live");
        while ids.iter().any(|id| progress(*id).0 == 0) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before: HashMap<u64, (u64, u64)> = ids.iter().map(|id| (*id, progress(*id))).collect();
        let candidates: HashSet<u64> = ids.into_iter().collect();
        let (found, _) = take(rt.handle(), &before, &candidates).expect("a dump");
        // The dump's own poll of each is not counted as progress.
        for id in ids {
            assert_eq!(progress(id), before[&id], "task {id}");
        }
        let get = |id| {
            found
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, (_, w))| w.clone())
        };
        let w = get(ids[0]).expect("the waiter in the dump");
        assert!(
            w.chain.iter().any(|f| f.contains("dump.rs:")),
            "the waiter's own await line: {w:?}"
        );
        assert_eq!(w.parked, None);
        let s = get(ids[1]).expect("the sleeper in the dump");
        assert_eq!(s.parked, Some("timer"), "{s:?}");
        drop(tx);
    }
}
