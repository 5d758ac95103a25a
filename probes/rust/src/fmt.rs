//! `tid=<OS thread id> task=<tokio task id>` on every log line.
//!
//! [`WithIds`] wraps any `tracing_subscriber` event formatter, so it composes with the
//! user's own fmt layer (and with console-subscriber's layer beside it):
//!
//! ```
//! use tracing_subscriber::{fmt, prelude::*};
//! tracing_subscriber::registry()
//!     .with(fmt::layer().map_event_format(leakhound_probe::WithIds))
//!     .init();
//! tracing::info!("hello"); // tid=4711 task=- 2026-…Z  INFO doc: hello
//! ```
//!
//! The ids are the ones `leakhound snapshot PID` shows: `tid` is the kernel thread id of
//! `/proc/PID/task/TID` (not Rust's `ThreadId`), `task` is `tokio::task::try_id()`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Some log line was written with ids (by [`WithIds`] or [`write_ids`]): the program's
/// own subscriber carries them, so the snapshot need not ask for them.
pub(crate) static IDS_WRITTEN: AtomicBool = AtomicBool::new(false);

/// The probe installed the global subscriber itself.
pub(crate) static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs a global fmt subscriber with ids, filtered by `RUST_LOG` (default `info`), and
/// with `task_names` the layer that learns `Builder` names, unless the program already set
/// one. Returns whether it did.
pub(crate) fn install(task_names: bool) -> bool {
    use tracing_subscriber::prelude::*;
    if tracing::dispatcher::has_been_set() {
        return false;
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                eprintln!("leakhound-probe: RUST_LOG={spec:?} is not a valid filter ({e}); logging at info");
                tracing_subscriber::EnvFilter::new("info")
            })
        }
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    let subscriber = tracing_subscriber::registry().with(layer().with_filter(filter));
    let ok = if task_names {
        crate::names::ReadSpawnSpans::new(subscriber).try_init()
    } else {
        subscriber.try_init()
    }
    .is_ok();
    INSTALLED.store(ok, Ordering::Relaxed);
    if ok && !task_names {
        crate::names::left_out();
    }
    ok
}

/// The `missing[]` line about log ids, if any.
pub(crate) fn missing() -> Option<String> {
    if INSTALLED.load(Ordering::Relaxed) || IDS_WRITTEN.load(Ordering::Relaxed) {
        return None;
    }
    Some(if tracing::dispatcher::has_been_set() {
        "log ids: the program set its own tracing subscriber; add tid=… task=… to its lines with fmt::layer().map_event_format(leakhound_probe::WithIds)".into()
    } else {
        "log ids: no tracing subscriber is set; leakhound_probe::init() installs one (honouring RUST_LOG) unless builder().log_ids(false)".into()
    })
}

/// An event formatter that prefixes the wrapped one's output with `tid=… task=…`.
#[derive(Debug, Clone, Default)]
pub struct WithIds<E>(pub E);

impl<S, N, E> FormatEvent<S, N> for WithIds<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_ids(&mut writer)?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Writes `tid=N task=M ` (task `-` outside a task) for the calling thread.
pub fn write_ids(w: &mut impl fmt::Write) -> fmt::Result {
    if !IDS_WRITTEN.load(Ordering::Relaxed) {
        IDS_WRITTEN.store(true, Ordering::Relaxed);
    }
    let tid = rustix::thread::gettid().as_raw_nonzero();
    match tokio::task::try_id() {
        Some(id) => write!(w, "tid={tid} task={id} "),
        None => write!(w, "tid={tid} task=- "),
    }
}

/// A ready-made fmt layer with ids, for programs without a subscriber of their own.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().map_event_format(WithIds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kernel_tid_and_task_id() {
        let mut out = String::new();
        write_ids(&mut out).unwrap();
        let tid = rustix::thread::gettid().as_raw_nonzero();
        assert_eq!(out, format!("tid={tid} task=- "));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (line, id) = rt.block_on(async {
            tokio::spawn(async {
                let mut s = String::new();
                write_ids(&mut s).unwrap();
                (s, tokio::task::id())
            })
            .await
            .unwrap()
        });
        assert!(line.ends_with(&format!(" task={id} ")), "{line}");
    }
}
