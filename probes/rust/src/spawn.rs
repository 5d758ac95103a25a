//! [`spawn`] and [`spawn_named`]: tasks the probe knows more about than tokio's hooks tell —
//! their name and whether any waker is left that could wake them.
//!
//! Tokio's task hooks give a task's id and spawn location only: a `tokio::task::Builder::name`
//! goes to tokio's tracing span (with tokio's `tracing` feature) and nowhere else (the probe's
//! [`crate::task_names`] layer reads it there), and the waker is the runtime's own. So these
//! helpers wrap the future (its waker is one the probe counts) and hand the name over
//! themselves; with the crate's `tokio-tracing` feature they spawn through `Builder::name`,
//! so console-subscriber sees the name too. The spawn hook runs on the spawning thread inside
//! `spawn`, so the name and waker state travel to it in a thread-local, and the registry files
//! them under the new task's id. Tasks spawned with `tokio::spawn` pay two relaxed loads for
//! this (this module's and [`crate::names`]').

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// This file, whose frames (the wrapper's poll) await chains leave out.
pub(crate) const SOURCE_FILE: &str = file!();

/// What the probe holds for a task spawned through this module, or named by tokio's span.
#[derive(Clone)]
pub(crate) struct Extra {
    pub name: Option<Arc<str>>,
    /// Weak: the counted references are the task's own and its wakers'.
    wake: std::sync::Weak<WakeState>,
}

impl Extra {
    /// Pending, not woken since its last poll began, and no waker left anywhere: nothing can
    /// ever poll it again. Only meaningful while the task is not being polled.
    pub fn lost_waker(&self) -> bool {
        // Gone: the task finished (its future dropped).
        let Some(wake) = self.wake.upgrade() else {
            return false;
        };
        // Two counts are the task's own (held by its future) and this look; any other is a
        // waker out there.
        !wake.woken.load(Ordering::Acquire) && Arc::strong_count(&wake) == 2
    }
}

/// The state behind the waker the wrapped future sees: the runtime's real waker (refreshed
/// on every poll) and whether a wake came since the last poll began.
struct WakeState {
    inner: Mutex<Option<Waker>>,
    woken: AtomicBool,
}

impl Wake for WakeState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Before the hand-over: a reader that sees the last clone gone sees this too.
        self.woken.store(true, Ordering::Release);
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = inner.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// A future whose wakers are counted.
struct Tracked<F> {
    future: F,
    wake: Arc<WakeState>,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: never moved out of `Tracked` (its Drop
        // does not touch it), which is not Unpin unless `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        {
            let mut inner = this.wake.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !inner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *inner = Some(cx.waker().clone());
            }
        }
        this.wake.woken.store(false, Ordering::Release);
        let waker = Waker::from(this.wake.clone());
        // SAFETY: see above; `this` is not moved either.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        future.poll(&mut Context::from_waker(&waker))
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        // Finished or cancelled: gone, not lost, for the instant before its terminate hook.
        self.wake.woken.store(true, Ordering::Release);
    }
}

/// Spawns that are between handing their [`Extra`] over and tokio's spawn hook taking it.
static HANDING_OVER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static PENDING: std::cell::RefCell<Option<Extra>> = const { std::cell::RefCell::new(None) };
}

/// An extra waiting in this thread for the spawn hook; dropped (not taken by a runtime
/// without the hooks, or tokio panicked outside a runtime) it is cleared, so it never sticks
/// to the thread's next spawn.
struct HandOver;

impl HandOver {
    fn start(extra: Extra) -> HandOver {
        HANDING_OVER.fetch_add(1, Ordering::Relaxed);
        let _ = PENDING.try_with(|p| *p.borrow_mut() = Some(extra));
        HandOver
    }
}

impl Drop for HandOver {
    fn drop(&mut self) {
        let _ = PENDING.try_with(|p| p.borrow_mut().take());
        HANDING_OVER.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Extras of live tasks, by task id; a task's registry entry says whether it has one.
static EXTRAS: LazyLock<Mutex<HashMap<u64, Extra>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn extras() -> std::sync::MutexGuard<'static, HashMap<u64, Extra>> {
    EXTRAS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called by the spawn hook: files the extra handed over by this thread's [`spawn_named`],
/// if any, under `id`, else the name tokio's span gave the task (a plain
/// `tokio::task::Builder::name`, see [`crate::names`]) with no counted waker. True when it
/// filed one.
pub(crate) fn claim(id: u64) -> bool {
    // Taken either way, so it never waits for a later spawn.
    let named = crate::names::take(id);
    let extra = if HANDING_OVER.load(Ordering::Relaxed) == 0 {
        None
    } else {
        PENDING.try_with(|p| p.borrow_mut().take()).ok().flatten()
    };
    let extra = match (extra, named) {
        (Some(extra), _) => extra,
        (None, Some(name)) => Extra {
            name: Some(name),
            // Never upgrades: a task whose wakers are not counted is never called lost.
            wake: std::sync::Weak::new(),
        },
        (None, None) => return false,
    };
    extras().insert(id, extra);
    true
}

/// Called when a task that had an extra terminates.
pub(crate) fn release(id: u64) -> Option<Extra> {
    extras().remove(&id)
}

/// The extras of these live tasks.
pub(crate) fn of(ids: impl Iterator<Item = u64>) -> HashMap<u64, Extra> {
    let map = extras();
    ids.filter_map(|id| map.get(&id).map(|e| (id, e.clone())))
        .collect()
}

/// `tokio::spawn`, with the task's wakers counted: a task left pending with no waker (a
/// lost waker: it can never run again) is reported as such by the probe.
#[track_caller]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_with(None, future)
}

/// [`spawn`] with a name: `tokio::task::Builder::new().name(name).spawn(future)`, and the
/// probe shows the name in its task list, `snapshot`, `stuck-task` findings and the dashboard
/// (tokio's task hooks do not pass `Builder` names on, so the probe learns them here).
#[track_caller]
pub fn spawn_named<F>(name: &str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_with(Some(name), future)
}

#[track_caller]
fn spawn_with<F>(name: Option<&str>, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let wake = Arc::new(WakeState {
        inner: Mutex::new(None),
        woken: AtomicBool::new(false),
    });
    let extra = Extra {
        name: name.map(Arc::from),
        wake: Arc::downgrade(&wake),
    };
    let tracked = Tracked { future, wake };
    // Only with the probe's hooks does anyone take the extra.
    let _handing = (cfg!(tokio_unstable)
        && crate::registry::HOOKS_INSTALLED.load(Ordering::Relaxed))
    .then(|| HandOver::start(extra));
    // tokio::task::Builder exists only with tokio's `tracing` feature and tokio_unstable.
    #[cfg(all(tokio_unstable, feature = "tokio-tracing"))]
    {
        let mut builder = tokio::task::Builder::new();
        if let Some(name) = name {
            builder = builder.name(name);
        }
        builder
            .spawn(tracked)
            .expect("tokio's Builder::spawn does not fail")
    }
    #[cfg(not(all(tokio_unstable, feature = "tokio-tracing")))]
    tokio::spawn(tracked)
}
