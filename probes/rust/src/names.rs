//! Names given with plain `tokio::task::Builder::name`, learnt from tokio's own tracing span.
//!
//! Tokio's task hooks carry a task's id and spawn location only; a `Builder::name` goes to
//! the `runtime.spawn` span (target `tokio::task`, fields `task.name`, `task.id`, `loc.*`)
//! and nowhere else, and that span exists only when tokio is built with its `tracing`
//! feature and `--cfg tokio_unstable`. [`task_names`] is a tracing layer interested in that
//! one callsite and nothing else (a per-layer filter, so it enables nothing for the other
//! layers of the subscriber). The span is created on the spawning thread right before
//! tokio's spawn hook runs there, so the name waits in a thread-local, tagged with the task
//! id, and the hook files it with the task (see [`crate::spawn::claim`]).
//!
//! The subscriber `init()` and the attribute install reads the span itself instead
//! ([`ReadSpawnSpans`]: fields read once, nothing stored, entering a no-op).
//!
//! Without tokio's `tracing` feature the callsite never registers: reading names costs
//! nothing. With it, every spawned task gets a span: about 100 ns per task through
//! [`ReadSpawnSpans`], about 500 ns through the layer (which the registry creates, enters and
//! exits on every poll and closes); see docs/RUST.md. Hence opt-in.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Some subscriber carries the layer (set when it is layered onto one).
static LAYERED: AtomicBool = AtomicBool::new(false);
/// The layer has seen a `runtime.spawn` span: this program's tokio has the `tracing` feature.
static SPAN_SEEN: AtomicBool = AtomicBool::new(false);
/// Some name has been handed over: the spawn hook needs to look (one relaxed load otherwise).
static HANDED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The name of the task this thread is spawning, with its id.
    static PENDING: RefCell<Option<(u64, Arc<str>)>> = const { RefCell::new(None) };
}

/// Tokio's span for a spawned (non-blocking) task. Blocking tasks have their own target
/// and no spawn hook to take a name.
fn is_spawn_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.name() == "runtime.spawn" && meta.target() == "tokio::task"
}

/// Whether `init()` and the attribute read names in the subscriber they install when the
/// program asked neither way: no, as tokio's span per task, even kept from the registry
/// ([`ReadSpawnSpans`]), costs about 100 ns of CPU per task spawned (+10% on the million
/// short tasks of the overhead benchmark; docs/RUST.md).
pub(crate) const DEFAULT: bool = false;

/// Some subscriber the probe installed left the layer out (`task_names(false)`,
/// `LEAKHOUND_TASK_NAMES=0`).
static LEFT_OUT: AtomicBool = AtomicBool::new(false);

/// Whether to add [`task_names`]: as asked, else `LEAKHOUND_TASK_NAMES=1` / `0`, else
/// [`DEFAULT`].
pub(crate) fn wanted(asked: Option<bool>) -> bool {
    asked.unwrap_or_else(|| match std::env::var("LEAKHOUND_TASK_NAMES") {
        Ok(v) => match v.trim() {
            "1" | "true" | "on" | "yes" => true,
            "0" | "false" | "off" | "no" => false,
            _ => DEFAULT,
        },
        Err(_) => DEFAULT,
    })
}

/// The subscriber the probe installed has no [`task_names`] layer, as asked.
pub(crate) fn left_out() {
    LEFT_OUT.store(true, Ordering::Relaxed);
}

/// The layer that learns task names; add it to a subscriber of your own:
///
/// ```
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer().map_event_format(leakhound_probe::WithIds))
///     .with(leakhound_probe::task_names())
///     .init();
/// ```
///
/// It must not sit under a global filter (`registry().with(EnvFilter)…` as a layer rather
/// than `.with_filter` on the fmt layer): one at `info` turns tokio's `trace` span off for
/// every layer. An fmt layer without a filter of its own would print the span on every line
/// logged in a task. Costs about 500 ns per task spawned (docs/RUST.md); `init()` and the
/// attribute, asked for names, read them more cheaply in the subscriber they install.
pub fn task_names<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    NameLayer.with_filter(SpawnSpans)
}

struct NameLayer;

/// Enables only tokio's `runtime.spawn` callsite, for [`NameLayer`] only.
struct SpawnSpans;

impl<S> Filter<S> for SpawnSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        is_spawn_span(meta)
    }
    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_spawn_span(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}

impl<S: Subscriber> Layer<S> for NameLayer {
    fn on_layer(&mut self, _: &mut S) {
        LAYERED.store(true, Ordering::Relaxed);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        read_spawn_span(attrs);
    }
}

/// Hands the name in a `runtime.spawn` span's fields to the spawn hook about to run.
fn read_spawn_span(attrs: &Attributes<'_>) {
    if !SPAN_SEEN.load(Ordering::Relaxed) {
        SPAN_SEEN.store(true, Ordering::Relaxed);
    }
    // Without hooks no spawn hook takes it.
    if !crate::registry::HOOKS_INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    let mut v = SpawnFields::default();
    attrs.record(&mut v);
    if let (Some(id), Some(name)) = (v.id, v.name.filter(|n| !n.is_empty())) {
        hand_over(id, Arc::from(name));
    }
}

/// The id of every span [`ReadSpawnSpans`] keeps to itself: above any the registry hands out
/// (slab indices), and never looked up, so one serves them all.
const OWN_SPAN: u64 = 1 << 63;

fn own(id: &Id) -> bool {
    id.into_u64() == OWN_SPAN
}

/// The subscriber `init()` and the attribute install when asked for names: `inner` (the fmt
/// subscriber with ids) with tokio's `runtime.spawn` spans read here and kept from it. A
/// [`task_names`] layer makes the registry create, enter and exit on every poll, and close a
/// span per task; here a span is its fields read once, and entering it is a no-op. The spans
/// are never anyone's parent or current span (tokio creates them with `parent: None`).
pub(crate) struct ReadSpawnSpans<S>(pub S);

impl<S: Subscriber> ReadSpawnSpans<S> {
    pub(crate) fn new(inner: S) -> Self {
        LAYERED.store(true, Ordering::Relaxed);
        ReadSpawnSpans(inner)
    }
}

impl<S: Subscriber> Subscriber for ReadSpawnSpans<S> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let inner = self.0.register_callsite(meta);
        if is_spawn_span(meta) {
            Interest::always()
        } else {
            inner
        }
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // tokio's span is at trace level: a lower hint would turn it off before its callsite.
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        is_spawn_span(meta) || self.0.enabled(meta)
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        if is_spawn_span(attrs.metadata()) {
            read_spawn_span(attrs);
            return Id::from_u64(OWN_SPAN);
        }
        self.0.new_span(attrs)
    }
    fn record(&self, span: &Id, values: &tracing::span::Record<'_>) {
        if !own(span) {
            self.0.record(span, values);
        }
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        if !own(span) && !own(follows) {
            self.0.record_follows_from(span, follows);
        }
    }
    fn event_enabled(&self, event: &tracing::Event<'_>) -> bool {
        self.0.event_enabled(event)
    }
    fn event(&self, event: &tracing::Event<'_>) {
        self.0.event(event);
    }
    fn enter(&self, span: &Id) {
        if !own(span) {
            self.0.enter(span);
        }
    }
    fn exit(&self, span: &Id) {
        if !own(span) {
            self.0.exit(span);
        }
    }
    fn clone_span(&self, id: &Id) -> Id {
        if own(id) {
            id.clone()
        } else {
            self.0.clone_span(id)
        }
    }
    fn try_close(&self, id: Id) -> bool {
        own(&id) || self.0.try_close(id)
    }
    fn current_span(&self) -> tracing_core::span::Current {
        self.0.current_span()
    }
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded as is; the inner subscriber answers for its own types.
        unsafe { self.0.downcast_raw(id) }
    }
}

/// `task.id` and `task.name` of a `runtime.spawn` span.
#[derive(Default)]
struct SpawnFields {
    id: Option<u64>,
    name: Option<String>,
}

impl Visit for SpawnFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "task.id" {
            self.id = Some(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `task.name = %name`: its Debug is the name's Display, empty for an unnamed task
        // (formatting nothing allocates nothing).
        if field.name() == "task.name" {
            self.name = Some(format!("{value:?}"));
        }
    }
}

fn hand_over(id: u64, name: Arc<str>) {
    if !HANDED.load(Ordering::Relaxed) {
        HANDED.store(true, Ordering::Relaxed);
    }
    // A name left over by a spawn no hook took (another runtime, a LocalSet) is replaced.
    let _ = PENDING.try_with(|p| *p.borrow_mut() = Some((id, name)));
}

/// Called by the spawn hook: the name this thread's span gave task `id`, if any.
pub(crate) fn take(id: u64) -> Option<Arc<str>> {
    if !HANDED.load(Ordering::Relaxed) {
        return None;
    }
    PENDING
        .try_with(|p| {
            let mut p = p.borrow_mut();
            match p.as_ref() {
                Some((pending, _)) if *pending == id => p.take().map(|(_, name)| name),
                _ => None,
            }
        })
        .ok()
        .flatten()
}

/// The `missing[]` line about task names, if any.
pub(crate) fn missing() -> Option<String> {
    if SPAN_SEEN.load(Ordering::Relaxed) {
        return None;
    }
    Some(
        if LEFT_OUT.load(Ordering::Relaxed) && !LAYERED.load(Ordering::Relaxed) {
            "task names: tokio::task::Builder names are read on request only (a tracing span per task, with tokio's \"tracing\" feature): LEAKHOUND_TASK_NAMES=1 or #[leakhound_probe::main(task_names = true)]; or spawn with leakhound_probe::spawn_named(name, fut)".into()
        } else if LAYERED.load(Ordering::Relaxed) {
            "task names: tokio::task::Builder names reach the probe through tokio's tracing span, which needs tokio's \"tracing\" feature (tokio = { features = [\"tracing\"] }) and --cfg tokio_unstable; or spawn with leakhound_probe::spawn_named(name, fut)".into()
        } else {
            "task names: tokio::task::Builder names need leakhound_probe::task_names() in the program's tracing subscriber (with tokio's \"tracing\" feature), or spawn with leakhound_probe::spawn_named(name, fut); other tasks are shown by id and spawn location".into()
        },
    )
}
