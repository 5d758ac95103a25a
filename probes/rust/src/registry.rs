//! The live-task registry, fed by tokio's task hooks (`--cfg tokio_unstable` only).
//!
//! Hot paths (spawn, poll, terminate) touch one slot of a fixed table with relaxed atomics
//! and the calling thread's own poll slot; no lock in the common case. Memory is bounded by
//! the table, the live tasks that overflow it, and a small ring of finished ones per thread.

// Without tokio_unstable the hooks that call these do not exist; the rest of the probe still
// builds and reports the registry as missing.
#![cfg_attr(not(tokio_unstable), allow(dead_code))]

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// Monotonic nanoseconds from the kernel's coarse clock (a few ns through the vDSO; its
/// resolution is a scheduler tick, 1-4 ms). Every registry time uses it: ages and
/// time-since-progress need no better, and busy time summed from coarse poll lengths is
/// an unbiased estimate of the true sum.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether [`crate::hooks`] was applied to some runtime builder: without it the registry
/// stays empty and the snapshot says so.
pub(crate) static HOOKS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Finished tasks kept in total (split over the threads that finish them); set by the
/// probe's builder.
pub(crate) static FINISHED_CAP: AtomicUsize = AtomicUsize::new(64);

/// Extracts the u64 inside a `tokio::task::Id` (it only offers `Display` and `Hash`).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) fn id_u64(id: tokio::task::Id) -> u64 {
    use std::hash::Hash;
    let mut h = IdHasher::default();
    id.hash(&mut h);
    h.finish()
}

/// One task as the registry knows it. Times are [`now_ns`] values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub spawned_ns: u64,
    pub location: &'static Location<'static>,
    pub polls: u64,
    pub busy_ns: u64,
    /// 0 when never polled.
    pub last_poll_end_ns: u64,
    /// Which hooked runtime spawned it (the tag [`hooks_tagged`] handed out).
    pub runtime: u64,
    /// Spawned by [`crate::spawn_named`] / [`crate::spawn`], or named with
    /// `tokio::task::Builder::name` and seen by [`crate::task_names`]: it has a
    /// [`crate::spawn::Extra`].
    pub extra: bool,
}

impl Entry {
    pub fn internal(&self) -> bool {
        // The probe's own tasks (the lag ticker, the dump task): keep them out of reports.
        let file = self.location.file();
        INTERNAL_FILES.iter().any(|f| f.get() == Some(&file))
    }
}

/// The source files the probe spawns its own tasks from, set by [`hide_spawns_from`].
static INTERNAL_FILES: [std::sync::OnceLock<&'static str>; 4] =
    [const { std::sync::OnceLock::new() }; 4];

/// Tasks spawned from `file` (pass `file!()`) are the probe's own: the registry hides them.
/// Set by whoever spawns them, so the registry need not know who that is.
pub(crate) fn hide_spawns_from(file: &'static str) {
    for slot in &INTERNAL_FILES {
        match slot.get() {
            Some(&f) if f == file => return,
            Some(_) => continue,
            None => {
                if slot.set(file).is_ok() || slot.get() == Some(&file) {
                    return;
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub id: u64,
    pub entry: Entry,
    pub ended_ns: u64,
    pub name: Option<Arc<str>>,
}

// The hot structure: a table of slots indexed by `id % SLOTS`. Task ids are handed out in
// sequence, so spawns walk the table in order (cache- and prefetch-friendly), and the
// common case needs no lock: a compare-exchange claims an empty slot at spawn, the polling
// thread (tokio polls a task on one thread at a time) updates its counters with plain
// relaxed stores, terminate empties it. A slot still held by a long-lived task sends the
// newcomer to the `OVERFLOW` map under a mutex, the slow path.
const SLOTS: usize = 8192;
/// `id` of a slot being filled: readers skip it.
const FILLING: u64 = u64::MAX;

#[repr(align(64))]
#[derive(Default)]
struct Slot {
    id: AtomicU64,
    location: AtomicUsize,
    spawned_ns: AtomicU64,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    last_poll_end_ns: AtomicU64,
    runtime: AtomicU64,
    extra: AtomicBool,
}

static TABLE: LazyLock<Box<[Slot]>> =
    LazyLock::new(|| (0..SLOTS).map(|_| Slot::default()).collect());

static OVERFLOW: LazyLock<Mutex<HashMap<u64, Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn overflow() -> std::sync::MutexGuard<'static, HashMap<u64, Entry>> {
    // A panic while holding the lock cannot leave the map inconsistent: keep going.
    OVERFLOW.lock().unwrap_or_else(|e| e.into_inner())
}

fn slot(id: u64) -> &'static Slot {
    &TABLE[(id as usize) % SLOTS]
}

/// What one thread is polling now, and the tasks it saw finish; read by the watchdog and
/// the server.
#[derive(Default)]
pub(crate) struct PollSlot {
    pub task: AtomicU64,
    pub since_ns: AtomicU64,
    pub tid: AtomicU64,
    finished: Mutex<VecDeque<Finished>>,
}

static SLOTS_BY_THREAD: Mutex<Vec<Weak<PollSlot>>> = Mutex::new(Vec::new());

thread_local! {
    static SLOT: Arc<PollSlot> = register_slot();
}

fn register_slot() -> Arc<PollSlot> {
    let slot = Arc::new(PollSlot::default());
    slot.tid.store(
        rustix::thread::gettid().as_raw_nonzero().get() as u64,
        Ordering::Relaxed,
    );
    let mut slots = SLOTS_BY_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    slots.retain(|w| w.strong_count() > 0);
    slots.push(Arc::downgrade(&slot));
    slot
}

fn thread_slots() -> Vec<Arc<PollSlot>> {
    let slots = SLOTS_BY_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    slots.iter().filter_map(Weak::upgrade).collect()
}

/// (task id, poll started at ns, worker tid) for every poll running now.
pub(crate) fn polls_now() -> Vec<(u64, u64, u64)> {
    thread_slots()
        .iter()
        .filter_map(|s| {
            let task = s.task.load(Ordering::Acquire);
            let since = s.since_ns.load(Ordering::Relaxed);
            (task != 0).then(|| (task, since, s.tid.load(Ordering::Relaxed)))
        })
        .collect()
}

pub(crate) fn on_spawn(id: u64, location: &'static Location<'static>, runtime: u64) {
    let now = now_ns();
    let extra = crate::spawn::claim(id);
    let s = slot(id);
    if s.id
        .compare_exchange(0, FILLING, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        s.location.store(
            location as *const Location<'static> as usize,
            Ordering::Relaxed,
        );
        s.spawned_ns.store(now, Ordering::Relaxed);
        s.polls.store(0, Ordering::Relaxed);
        s.busy_ns.store(0, Ordering::Relaxed);
        s.last_poll_end_ns.store(0, Ordering::Relaxed);
        s.runtime.store(runtime, Ordering::Relaxed);
        s.extra.store(extra, Ordering::Relaxed);
        s.id.store(id, Ordering::Release);
    } else {
        overflow().insert(
            id,
            Entry {
                spawned_ns: now,
                location,
                polls: 0,
                busy_ns: 0,
                last_poll_end_ns: 0,
                runtime,
                extra,
            },
        );
    }
}

pub(crate) fn on_before_poll(id: u64) {
    let now = now_ns();
    // try_with: a poll during thread teardown must not panic in the host.
    let _ = SLOT.try_with(|s| {
        s.since_ns.store(now, Ordering::Relaxed);
        s.task.store(id, Ordering::Release);
    });
}

/// A task dump was requested and has not completed (its pause is somewhere in there).
pub(crate) static DUMPING: AtomicBool = AtomicBool::new(false);

/// A task dump re-polls every task once in tracing mode, then wakes each so tokio polls it
/// once more for real: neither poll is progress. Puts back the poll count and last poll end
/// of task `id` as they were before the dump, when at most those two polls per dump
/// (`dumps` of them back to back) happened since.
pub(crate) fn undo_dump_poll(id: u64, polls: u64, last_poll_end_ns: u64, dumps: u64) {
    let undo = |now: u64| now > polls && now <= polls + 2 * dumps;
    let s = slot(id);
    if s.id.load(Ordering::Acquire) == id {
        if undo(s.polls.load(Ordering::Relaxed)) {
            s.polls.store(polls, Ordering::Relaxed);
            s.last_poll_end_ns
                .store(last_poll_end_ns, Ordering::Relaxed);
        }
    } else if let Some(e) = overflow().get_mut(&id)
        && undo(e.polls)
    {
        e.polls = polls;
        e.last_poll_end_ns = last_poll_end_ns;
    }
}

/// (polls, last poll end) of live task `id`, internal ones included.
pub(crate) fn progress_of(id: u64) -> Option<(u64, u64)> {
    let s = slot(id);
    if s.id.load(Ordering::Acquire) == id {
        return read_slot(s).map(|e| (e.polls, e.last_poll_end_ns));
    }
    overflow().get(&id).map(|e| (e.polls, e.last_poll_end_ns))
}

pub(crate) fn on_after_poll(id: u64) {
    let now = now_ns();
    let started = SLOT
        .try_with(|s| s.since_ns.load(Ordering::Relaxed))
        .unwrap_or(now);
    let took = now.saturating_sub(started);
    let s = slot(id);
    if s.id.load(Ordering::Acquire) == id {
        // Only the thread polling this task writes these: no read-modify-write needed.
        s.polls
            .store(s.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        s.busy_ns
            .store(s.busy_ns.load(Ordering::Relaxed) + took, Ordering::Relaxed);
        s.last_poll_end_ns.store(now, Ordering::Relaxed);
    } else if let Some(e) = overflow().get_mut(&id) {
        e.polls += 1;
        e.busy_ns += took;
        e.last_poll_end_ns = now;
    }
    // Last: whoever sees the poll over sees its count (the lost-waker check relies on it).
    let _ = SLOT.try_with(|s| s.task.store(0, Ordering::Release));
}

/// Tasks that lived shorter than this are not remembered as finished: the ring is for
/// seeing what recently ended, and recording every trivial task would cost every task.
const FINISHED_MIN_AGE_NS: u64 = 1;

pub(crate) fn on_terminate(id: u64) {
    let now = now_ns();
    let s = slot(id);
    let entry = if s.id.load(Ordering::Acquire) == id {
        let e = read_slot(s);
        s.id.store(0, Ordering::Release);
        e
    } else {
        // Blocking tasks fire terminate without a spawn hook: then there is nothing.
        overflow().remove(&id)
    };
    let Some(entry) = entry else { return };
    let name = if entry.extra {
        crate::spawn::release(id).and_then(|x| x.name)
    } else {
        None
    };
    if entry.internal() || now.saturating_sub(entry.spawned_ns) < FINISHED_MIN_AGE_NS {
        return;
    }
    let cap = FINISHED_CAP.load(Ordering::Relaxed);
    if cap == 0 {
        return;
    }
    let _ = SLOT.try_with(|t| {
        // Only this thread and a reading snapshot take this lock: skip rather than wait.
        if let Ok(mut ring) = t.finished.try_lock() {
            while ring.len() >= cap {
                ring.pop_front();
            }
            ring.push_back(Finished {
                id,
                entry,
                ended_ns: now,
                name,
            });
        }
    });
}

fn read_slot(s: &Slot) -> Option<Entry> {
    let loc = s.location.load(Ordering::Relaxed);
    if loc == 0 {
        return None;
    }
    // SAFETY: only `&'static Location` pointers are ever stored in `location`.
    let location: &'static Location<'static> = unsafe { &*(loc as *const Location<'static>) };
    Some(Entry {
        spawned_ns: s.spawned_ns.load(Ordering::Relaxed),
        location,
        polls: s.polls.load(Ordering::Relaxed),
        busy_ns: s.busy_ns.load(Ordering::Relaxed),
        last_poll_end_ns: s.last_poll_end_ns.load(Ordering::Relaxed),
        runtime: s.runtime.load(Ordering::Relaxed),
        extra: s.extra.load(Ordering::Relaxed),
    })
}

/// Where a live task was spawned.
pub(crate) fn location_of(id: u64) -> Option<&'static Location<'static>> {
    let s = slot(id);
    if s.id.load(Ordering::Acquire) == id {
        let e = read_slot(s);
        if s.id.load(Ordering::Acquire) == id {
            return e.map(|e| e.location);
        }
    }
    overflow().get(&id).map(|e| e.location)
}

/// A copy of the live tasks (internal ones left out) and the newest finished ones.
pub(crate) fn collect() -> (Vec<(u64, Entry)>, Vec<Finished>) {
    let mut live = Vec::new();
    for s in TABLE.iter() {
        let id = s.id.load(Ordering::Acquire);
        if id == 0 || id == FILLING {
            continue;
        }
        let entry = read_slot(s);
        // A slot reused while we read it is skipped: the next snapshot sees the new task.
        if s.id.load(Ordering::Acquire) != id {
            continue;
        }
        if let Some(e) = entry.filter(|e| !e.internal()) {
            live.push((id, e));
        }
    }
    live.extend(
        overflow()
            .iter()
            .filter(|(_, e)| !e.internal())
            .map(|(id, e)| (*id, *e)),
    );
    live.sort_by_key(|(id, _)| *id);
    let mut finished: Vec<Finished> = Vec::new();
    for t in thread_slots() {
        let ring = t.finished.lock().unwrap_or_else(|e| e.into_inner());
        finished.extend(ring.iter().cloned());
    }
    finished.sort_by_key(|f| std::cmp::Reverse(f.ended_ns));
    finished.truncate(FINISHED_CAP.load(Ordering::Relaxed));
    (live, finished)
}

/// Applies the task hooks to a runtime builder. Without `--cfg tokio_unstable` tokio has no
/// task hooks: this is then a no-op and the probe's snapshot lists what is missing.
pub fn hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    hooks_tagged(builder);
    builder
}

/// Runtimes given hooks so far; the next one's tag.
static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

/// [`hooks`], returning the tag its tasks carry in [`Entry::runtime`] (0 without
/// `tokio_unstable`, when there are no hooks).
pub(crate) fn hooks_tagged(builder: &mut tokio::runtime::Builder) -> u64 {
    #[cfg(tokio_unstable)]
    let tag = {
        HOOKS_INSTALLED.store(true, Ordering::Relaxed);
        let tag = NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed);
        builder
            .on_task_spawn(move |meta| on_spawn(id_u64(meta.id()), meta.spawned_at(), tag))
            .on_before_task_poll(|meta| on_before_poll(id_u64(meta.id())))
            .on_after_task_poll(|meta| on_after_poll(id_u64(meta.id())))
            .on_task_terminate(|meta| on_terminate(id_u64(meta.id())));
        tag
    };
    #[cfg(not(tokio_unstable))]
    let tag = {
        let _ = builder;
        0
    };
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hasher_reads_the_task_id() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (shown, raw) = rt.block_on(async {
            let h = tokio::spawn(async { tokio::task::id() });
            let id = h.await.unwrap();
            (id.to_string(), id_u64(id))
        });
        assert_eq!(shown, raw.to_string());
    }

    static LOC: &Location<'static> = Location::caller();

    #[test]
    fn finished_ring_is_bounded_and_live_tasks_leave_the_table() {
        FINISHED_CAP.store(16, Ordering::Relaxed);
        for id in 1_000_000..1_001_000u64 {
            on_spawn(id, LOC, 0);
            std::thread::sleep(std::time::Duration::from_micros(1));
            on_terminate(id);
        }
        let (live, finished) = collect();
        assert!(
            live.iter()
                .all(|(id, _)| !(1_000_000..1_001_000).contains(id))
        );
        assert!(finished.len() <= 16, "{}", finished.len());
    }

    #[test]
    fn a_slot_held_by_a_long_lived_task_sends_the_newcomer_to_overflow() {
        let old = 2_000_000u64;
        let new = old + SLOTS as u64;
        on_spawn(old, LOC, 0);
        on_spawn(new, LOC, 0);
        on_before_poll(new);
        on_after_poll(new);
        let (live, _) = collect();
        let get = |id| live.iter().find(|(i, _)| *i == id).map(|(_, e)| *e);
        assert_eq!(get(old).unwrap().polls, 0);
        assert_eq!(get(new).unwrap().polls, 1);
        on_terminate(old);
        on_terminate(new);
        let (live, _) = collect();
        assert!(live.iter().all(|(id, _)| *id != old && *id != new));
    }
}
