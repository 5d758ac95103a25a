//! leakhound-probe: the in-process probe for tokio programs (wire protocol:
//! `probes/PROTOCOL.md`).
//!
//! The one-line way: `#[leakhound_probe::main]` instead of `#[tokio::main]` (same
//! arguments), `#[leakhound_probe::test]` instead of `#[tokio::test]`:
//!
//! ```no_run
//! #[leakhound_probe::main(worker_threads = 2)]
//! async fn main() {
//!     // … the program: every task, stalls, stuck tasks with their await points, log ids.
//! }
//! ```
//!
//! Or keep `#[tokio::main]` and start the probe inside the runtime (no task hooks then):
//!
//! ```no_run
//! # async fn run() {
//! // inside a tokio runtime:
//! let _probe = leakhound_probe::init();
//! // … the program; the probe answers `leakhound snapshot PID` until `_probe` is dropped.
//! # }
//! ```
//!
//! What it gives:
//! - event-loop lag (p50/p99/max over a window, recent samples) and stalls, noticed by a
//!   watchdog thread even while the runtime is blocked; runtime metrics (workers, alive
//!   tasks, global queue depth, busy ratio, and with `tokio_unstable` the blocking pool);
//! - with `--cfg tokio_unstable` and [`hooks`] on the runtime builder: every live task with
//!   its spawn location, polls, busy time and time since progress, plus a small ring of
//!   finished ones;
//! - [`WithIds`]: `tid=… task=…` on every log line;
//! - task names: [`spawn_named`], or plain `tokio::task::Builder::name` read from tokio's
//!   tracing span on request ([`Builder::task_names`], `task_names = true` on the attribute,
//!   `LEAKHOUND_TASK_NAMES=1`, or [`task_names`] in a subscriber of the program's own);
//! - [`TrackedSemaphore`]: a semaphore whose waiters the probe can see;
//! - [`LeakGuard`]: fail a test that leaks threads, descriptors, children or tasks.
//!
//! Task hooks must be set when the runtime is built, so `#[tokio::main]` cannot have them:
//! use the attribute, or build the runtime by hand:
//!
//! ```no_run
//! let runtime = leakhound_probe::runtime().build().unwrap(); // multi-thread, all drivers, hooks
//! runtime.block_on(async {
//!     let _probe = leakhound_probe::init();
//!     // …
//! });
//! ```
//!
//! or add the hooks to your own builder with
//! `leakhound_probe::hooks(&mut tokio::runtime::Builder::new_current_thread())`.
//!
//! Logging with ids beside console-subscriber (both layers on one registry, each with its
//! own filter):
//!
//! ```ignore
//! use tracing_subscriber::{fmt, prelude::*, EnvFilter};
//! let console = console_subscriber::ConsoleLayer::builder().with_default_env().spawn();
//! tracing_subscriber::registry()
//!     .with(console)
//!     .with(fmt::layer()
//!         .map_event_format(leakhound_probe::WithIds)
//!         .with_filter(EnvFilter::new("info")))
//!     .init();
//! ```

mod dump;
mod fmt;
mod folder;
mod lag;
mod leakguard;
mod names;
mod registry;
mod semaphore;
mod server;
mod spawn;
mod wire;

pub use dump::last_cost as last_dump_cost;
pub use fmt::{WithIds, layer as fmt_layer, write_ids};
pub use leakguard::LeakGuard;
pub use leakhound_probe_macros::{main, test};
pub use names::task_names;
pub use registry::hooks;
pub use semaphore::{TrackedPermit, TrackedSemaphore};
pub use server::socket_dir;
pub use spawn::{spawn, spawn_named};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A multi-thread runtime builder with every driver enabled and the probe's task hooks.
pub fn runtime() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    hooks(&mut b);
    b
}

/// Options for the probe; [`Builder::start`] turns it on.
#[derive(Debug, Clone)]
pub struct Builder {
    socket_dir: Option<PathBuf>,
    lag_interval: Duration,
    lag_window: Duration,
    stall_threshold: Duration,
    finished_tasks: usize,
    log_ids: bool,
    task_names: Option<bool>,
    max_blocking_threads: usize,
    handle: Option<tokio::runtime::Handle>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            socket_dir: None,
            lag_interval: Duration::from_millis(50),
            lag_window: Duration::from_secs(10),
            stall_threshold: Duration::from_millis(100),
            finished_tasks: 64,
            log_ids: true,
            task_names: None,
            max_blocking_threads: 512,
            handle: None,
        }
    }
}

/// The default options.
pub fn builder() -> Builder {
    Builder::default()
}

/// Starts the probe with the default options, on the current tokio runtime.
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does). Use [`Builder::runtime`] to name one.
pub fn init() -> Probe {
    builder().start()
}

impl Builder {
    /// Folder for `<pid>.sock` (default: `$LEAKHOUND_SOCKET_DIR`, else
    /// `$XDG_RUNTIME_DIR/leakhound`, else `/tmp/leakhound-<uid>`).
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }
    /// How often the loop's lag is sampled (default 50 ms).
    pub fn lag_interval(mut self, every: Duration) -> Self {
        self.lag_interval = every.max(Duration::from_millis(1));
        self
    }
    /// The window lag percentiles cover (default 10 s).
    pub fn lag_window(mut self, window: Duration) -> Self {
        self.lag_window = window;
        self
    }
    /// A lag or a single poll at least this long is recorded as a stall (default 100 ms).
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall_threshold = threshold;
        self
    }
    /// Finished tasks remembered (default 64; 0 keeps none).
    pub fn finished_tasks(mut self, n: usize) -> Self {
        self.finished_tasks = n;
        self
    }
    /// Install a global fmt subscriber writing `tid=… task=…` on every line, filtered by
    /// `RUST_LOG` (default `info`), when the program has set none (default on). Set your own
    /// subscriber *before* starting the probe: once one is set, `tracing`'s `init()` panics.
    pub fn log_ids(mut self, on: bool) -> Self {
        self.log_ids = on;
        self
    }
    /// Add [`task_names`] to the subscriber `log_ids` installs, so names given with
    /// `tokio::task::Builder::name` reach the task list (they exist only when the program's
    /// tokio has its `tracing` feature; see docs/RUST.md for the cost). Default:
    /// `LEAKHOUND_TASK_NAMES` (`1` / `0`), else off.
    pub fn task_names(mut self, on: bool) -> Self {
        self.task_names = Some(on);
        self
    }
    /// Tell the probe the runtime's `max_blocking_threads` (tokio does not report it).
    pub fn max_blocking_threads(mut self, n: usize) -> Self {
        self.max_blocking_threads = n;
        self
    }
    /// Observe this runtime instead of the current one.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Turns the probe on. Socket problems never fail the host: a folder that is not ours,
    /// not private (0700) or a symbolic link is refused, and the probe listens in a private
    /// folder of its own instead (`/tmp/leakhound-<uid>-<random>`, said on stderr and in the
    /// hello's `note`); when even that fails it measures without serving and
    /// [`Probe::socket_path`] is `None`.
    ///
    /// # Panics
    /// When no runtime was given and none is current.
    pub fn start(self) -> Probe {
        let handle = self.handle.unwrap_or_else(tokio::runtime::Handle::current);
        registry::FINISHED_CAP.store(self.finished_tasks, Ordering::Relaxed);
        if self.log_ids {
            fmt::install(names::wanted(self.task_names));
        }
        let shared = Arc::new(lag::Shared {
            handle,
            lag: std::sync::Mutex::new(lag::LagState::new(self.lag_window)),
            stop: AtomicBool::new(false),
            interval: self.lag_interval,
            stall_threshold: self.stall_threshold,
            window: self.lag_window,
            max_blocking_threads: self.max_blocking_threads,
        });
        let watchdog = lag::start(shared.clone()).ok();
        let dir = server::socket_dir(self.socket_dir.as_deref());
        let (server, socket_path, fell_back) = match server::bind(&dir) {
            Ok(bound) => {
                let s = shared.clone();
                let fell_back = bound.note.is_some();
                let t = std::thread::Builder::new()
                    .name("leakhound-probe".into())
                    .spawn(move || server::serve(bound.listener, s, bound.note))
                    .ok();
                (t, Some(bound.path), fell_back)
            }
            Err(_) => (None, None, false),
        };
        Probe {
            shared,
            watchdog,
            server,
            socket_path,
            fell_back,
        }
    }
}

/// The running probe. Keep it alive; dropping it stops the threads and removes the socket.
pub struct Probe {
    shared: Arc<lag::Shared>,
    watchdog: Option<std::thread::JoinHandle<()>>,
    server: Option<std::thread::JoinHandle<()>>,
    socket_path: Option<PathBuf>,
    /// Listening in a private folder of its own (the usual one was refused): removed at drop.
    fell_back: bool,
}

impl Probe {
    /// The socket collectors connect to, when it could be created.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.socket_path.as_deref()
    }

    /// The snapshot the probe would send now, as JSON (`ProbeData` of the protocol).
    pub fn snapshot_json(&self) -> serde_json::Value {
        serde_json::to_value(wire::snapshot(&self.shared)).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // A dump in flight ends (and heals) while the runtime still runs: the runtime is
        // usually dropped next (the attribute drops the probe first). Not from inside a
        // current-thread runtime, which could not run the dump while this thread waits.
        let in_current_thread = tokio::runtime::Handle::try_current().is_ok_and(|h| {
            matches!(
                h.runtime_flavor(),
                tokio::runtime::RuntimeFlavor::CurrentThread
            )
        });
        if !in_current_thread {
            dump::wait_for_dump(Duration::from_secs(5));
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in [self.watchdog.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
            if let Some(dir) = p.parent().filter(|_| self.fell_back) {
                let _ = std::fs::remove_dir(dir); // only when nothing else is left in it
            }
        }
    }
}

/// Whether [`hooks`] has been applied to some runtime (the probe then lists every task).
pub fn hooks_installed() -> bool {
    registry::HOOKS_INSTALLED.load(Ordering::Relaxed)
}

/// What `#[leakhound_probe::main]` and `#[leakhound_probe::test]` expand to call.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;
    use tokio::runtime::Builder;

    /// The runtime builder the attribute starts from (its arguments are applied after).
    pub fn builder(multi_thread: bool) -> Builder {
        let mut b = if multi_thread {
            Builder::new_multi_thread()
        } else {
            Builder::new_current_thread()
        };
        b.enable_all();
        b
    }

    fn build(mut b: Builder) -> (tokio::runtime::Runtime, u64) {
        let tag = crate::registry::hooks_tagged(&mut b);
        match b.build() {
            Ok(rt) => (rt, tag),
            Err(e) => panic!("leakhound_probe: cannot build the tokio runtime: {e}"),
        }
    }

    /// `#[leakhound_probe::main]`: the body on a hooked runtime, with the probe on.
    pub fn main<F: Future>(b: Builder, probe: crate::Builder, body: F) -> F::Output {
        let (rt, _) = build(b);
        rt.block_on(async {
            let _probe = probe.start();
            body.await
        })
    }

    /// `#[leakhound_probe::test]`: as [`main`], then fails when the body left tasks of its
    /// runtime alive (`leaks = "tasks"`), or anything a [`crate::LeakGuard`] sees (`"all"`).
    pub fn test<F: Future>(
        mut b: Builder,
        probe: crate::Builder,
        leaks: &str,
        body: F,
    ) -> F::Output {
        // The runtime's own threads (workers, blocking pool) come and go: not the test's.
        b.thread_name("leakhound-test-rt");
        let (rt, tag) = build(b);
        let leaks = leaks.to_string();
        rt.block_on(async move {
            let _probe = probe.start();
            let guard = match leaks.as_str() {
                "tasks" => Some(crate::LeakGuard::for_runtime(tag)),
                "all" => Some(crate::LeakGuard::new().ignore_thread("leakhound-")),
                _ => None,
            };
            let out = body.await;
            if let Some(guard) = guard
                && let Err(report) = guard.check_async().await
            {
                panic!("{report}");
            }
            out
        })
    }
}
