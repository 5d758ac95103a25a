//! A `tokio::sync::Semaphore` that the probe can see: permits, holders and waiters.
//!
//! tokio's semaphore does not expose its waiters, so the probe cannot find starvation on a
//! plain one; wrap the ones that guard scarce things (connections, workers) in this type.

use leakhound_protocol::Pool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

struct Inner {
    name: String,
    permits: u64,
    sem: tokio::sync::Semaphore,
    waiters: AtomicU64,
    acquired: AtomicU64,
    created_at: String,
    /// Waiters present with no permit free since this instant.
    starved_since: Mutex<Option<Instant>>,
}

static TRACKED: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// A semaphore reported to leakhound as a `semaphore` pool (`pool-starvation` watches it).
#[derive(Clone)]
pub struct TrackedSemaphore {
    inner: Arc<Inner>,
}

/// A permit; returns itself to the semaphore on drop.
pub struct TrackedPermit<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl TrackedSemaphore {
    /// A semaphore with `permits` permits, shown under `name`.
    #[track_caller]
    pub fn new(name: impl Into<String>, permits: usize) -> Self {
        let loc = std::panic::Location::caller();
        let inner = Arc::new(Inner {
            name: name.into(),
            permits: permits as u64,
            sem: tokio::sync::Semaphore::new(permits),
            waiters: AtomicU64::new(0),
            acquired: AtomicU64::new(0),
            created_at: format!("{}:{}", loc.file(), loc.line()),
            starved_since: Mutex::new(None),
        });
        let mut all = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&inner));
        TrackedSemaphore { inner }
    }

    /// Waits for a permit; counted as a waiter meanwhile.
    pub async fn acquire(&self) -> TrackedPermit<'_> {
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.inner.waiters.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.inner.waiters);
        // The semaphore is never closed (we own it), so acquire cannot fail.
        let permit = self
            .inner
            .sem
            .acquire()
            .await
            .expect("tracked semaphore is never closed");
        drop(waiting);
        self.inner.acquired.fetch_add(1, Ordering::Relaxed);
        TrackedPermit { _permit: permit }
    }

    pub fn available_permits(&self) -> usize {
        self.inner.sem.available_permits()
    }
}

/// Called by the watchdog: tracks how long each semaphore has been starved.
pub(crate) fn watch(now: Instant) {
    for inner in live() {
        let starved =
            inner.waiters.load(Ordering::Relaxed) > 0 && inner.sem.available_permits() == 0;
        let mut since = inner
            .starved_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (starved, *since) {
            (true, None) => *since = Some(now),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }
}

fn live() -> Vec<Arc<Inner>> {
    let all = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    all.iter().filter_map(Weak::upgrade).collect()
}

/// Every live tracked semaphore as a pool.
pub(crate) fn pools() -> Vec<Pool> {
    let now = Instant::now();
    live()
        .iter()
        .map(|s| {
            let free = s.sem.available_permits() as u64;
            let held = s.permits.saturating_sub(free);
            let since = *s.starved_since.lock().unwrap_or_else(|e| e.into_inner());
            Pool {
                id: format!("semaphore:{}", s.name),
                kind: "semaphore".into(),
                name: s.name.clone(),
                max_workers: s.permits,
                live_workers: s.permits,
                busy_workers: held,
                queued: s.waiters.load(Ordering::Relaxed),
                saturated_ms: since.map_or(0, |t| now.duration_since(t).as_millis() as u64),
                queue_wait_p99_ms: None,
                submitted: s.acquired.load(Ordering::Relaxed),
                completed: 0,
                open: true,
                created_at: Some(s.created_at.clone()),
            }
        })
        .collect()
}
