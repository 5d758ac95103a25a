//! The live-task registry, fed by tokio's task hooks (`--cfg tokio_unstable` only).
//!
//! Hot paths (spawn, poll, terminate) touch one shard of a sharded map under an uncontended
//! mutex and two thread-local atomics; nothing else. Memory is bounded by the live tasks plus
//! a fixed ring of finished ones per shard.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// Nanoseconds since the registry's epoch; what the poll slots store.
pub(crate) fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

pub(crate) static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

const SHARDS: usize = 32;

/// Whether [`crate::hooks`] was applied to some runtime builder: without it the registry
/// stays empty and the snapshot says so.
pub(crate) static HOOKS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Finished tasks kept in total (split over the shards); set by the probe's builder.
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

/// Sequential ids spread well over shards with a multiplicative mix.
#[derive(Default, Clone, Copy)]
struct MixHasher(u64);
impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
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

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub spawned: Instant,
    pub location: &'static Location<'static>,
    pub polls: u64,
    pub busy: Duration,
    pub last_poll_end: Option<Instant>,
    pub internal: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub id: u64,
    pub entry: Entry,
    pub ended: Instant,
}

#[derive(Default)]
struct Shard {
    live: HashMap<u64, Entry, BuildHasherDefault<MixHasher>>,
    finished: VecDeque<Finished>,
}

// Padded so two workers updating neighbouring shards do not share a cache line.
#[repr(align(128))]
#[derive(Default)]
struct PaddedShard(Mutex<Shard>);

static REGISTRY: LazyLock<Vec<PaddedShard>> =
    LazyLock::new(|| (0..SHARDS).map(|_| PaddedShard::default()).collect());

fn shard(id: u64) -> std::sync::MutexGuard<'static, Shard> {
    let s = &REGISTRY[(id as usize) % SHARDS].0;
    // A panic while holding the lock cannot leave the map inconsistent: keep going.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one worker thread is polling now; read by the watchdog and the server.
#[derive(Default)]
pub(crate) struct PollSlot {
    pub task: AtomicU64,
    pub since_ns: AtomicU64,
    pub tid: AtomicU64,
}

static SLOTS: Mutex<Vec<Weak<PollSlot>>> = Mutex::new(Vec::new());

thread_local! {
    static SLOT: Arc<PollSlot> = register_slot();
}

fn register_slot() -> Arc<PollSlot> {
    let slot = Arc::new(PollSlot::default());
    slot.tid.store(
        rustix::thread::gettid().as_raw_nonzero().get() as u64,
        Ordering::Relaxed,
    );
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    slots.retain(|w| w.strong_count() > 0);
    slots.push(Arc::downgrade(&slot));
    slot
}

/// (task id, poll started at ns, worker tid) for every poll running now.
pub(crate) fn polls_now() -> Vec<(u64, u64, u64)> {
    let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    slots
        .iter()
        .filter_map(|w| w.upgrade())
        .filter_map(|s| {
            let task = s.task.load(Ordering::Acquire);
            let since = s.since_ns.load(Ordering::Relaxed);
            (task != 0).then(|| (task, since, s.tid.load(Ordering::Relaxed)))
        })
        .collect()
}

pub(crate) fn on_spawn(id: u64, location: &'static Location<'static>) {
    // The probe's own ticker task is spawned from lag.rs: keep it out of reports.
    let internal = location.file() == crate::lag::TICKER_FILE;
    shard(id).live.insert(
        id,
        Entry {
            spawned: Instant::now(),
            location,
            polls: 0,
            busy: Duration::ZERO,
            last_poll_end: None,
            internal,
        },
    );
}

pub(crate) fn on_before_poll(id: u64) {
    let now = now_ns();
    // try_with: a poll during thread teardown must not panic in the host.
    let _ = SLOT.try_with(|s| {
        s.since_ns.store(now, Ordering::Relaxed);
        s.task.store(id, Ordering::Release);
    });
}

pub(crate) fn on_after_poll(id: u64) {
    let now = now_ns();
    let started = SLOT
        .try_with(|s| {
            s.task.store(0, Ordering::Release);
            s.since_ns.load(Ordering::Relaxed)
        })
        .unwrap_or(now);
    let took = Duration::from_nanos(now.saturating_sub(started));
    if let Some(e) = shard(id).live.get_mut(&id) {
        e.polls += 1;
        e.busy += took;
        e.last_poll_end = Some(*EPOCH + Duration::from_nanos(now));
    }
}

pub(crate) fn on_terminate(id: u64) {
    let mut s = shard(id);
    // Blocking tasks fire terminate without a spawn hook: nothing to move.
    let Some(entry) = s.live.remove(&id) else {
        return;
    };
    if entry.internal {
        return;
    }
    let cap = FINISHED_CAP.load(Ordering::Relaxed).div_ceil(SHARDS);
    if cap == 0 {
        return;
    }
    while s.finished.len() >= cap {
        s.finished.pop_front();
    }
    s.finished.push_back(Finished {
        id,
        entry,
        ended: Instant::now(),
    });
}

/// A copy of the live tasks (internal ones left out) and the newest finished ones.
pub(crate) fn collect() -> (Vec<(u64, Entry)>, Vec<Finished>) {
    let mut live = Vec::new();
    let mut finished = Vec::new();
    for s in REGISTRY.iter() {
        let s = s.0.lock().unwrap_or_else(|e| e.into_inner());
        live.extend(
            s.live
                .iter()
                .filter(|(_, e)| !e.internal)
                .map(|(id, e)| (*id, e.clone())),
        );
        finished.extend(s.finished.iter().cloned());
    }
    live.sort_by_key(|(id, _)| *id);
    finished.sort_by_key(|f| std::cmp::Reverse(f.ended));
    finished.truncate(FINISHED_CAP.load(Ordering::Relaxed));
    (live, finished)
}

/// Applies the task hooks to a runtime builder. Without `--cfg tokio_unstable` tokio has no
/// task hooks: this is then a no-op and the probe's snapshot lists what is missing.
pub fn hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    #[cfg(tokio_unstable)]
    {
        HOOKS_INSTALLED.store(true, Ordering::Relaxed);
        builder
            .on_task_spawn(|meta| on_spawn(id_u64(meta.id()), meta.spawned_at()))
            .on_before_task_poll(|meta| on_before_poll(id_u64(meta.id())))
            .on_after_task_poll(|meta| on_after_poll(id_u64(meta.id())))
            .on_task_terminate(|meta| on_terminate(id_u64(meta.id())));
    }
    builder
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

    #[test]
    fn finished_ring_is_bounded() {
        FINISHED_CAP.store(SHARDS * 2, Ordering::Relaxed);
        static LOC: &Location<'static> = Location::caller();
        for id in 1_000_000..1_001_000u64 {
            on_spawn(id, LOC);
            on_terminate(id);
        }
        let (live, finished) = collect();
        assert!(
            live.iter()
                .all(|(id, _)| !(1_000_000..1_001_000).contains(id))
        );
        assert!(finished.len() <= SHARDS * 2, "{}", finished.len());
        assert!(!finished.is_empty());
    }
}
