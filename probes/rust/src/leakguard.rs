//! `LeakGuard`: fail a test that leaves threads, descriptors, child processes or tokio tasks
//! behind.
//!
//! ```no_run
//! let guard = leakhound_probe::LeakGuard::new();
//! // … the code under test …
//! guard.assert_clean(); // panics with a report naming what grew
//! ```
//!
//! It takes a census at `new()` and compares by identity (thread id, descriptor and its
//! target, child pid, task id), not by count, so what it reports is exactly what is new.
//! Before it judges it lets things settle (threads exiting, tasks finishing) with short
//! retries and backoff, up to [`LeakGuard::settle`] (1 s by default); a clean check returns
//! at the first look.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, PartialEq)]
struct Census {
    /// tid -> thread name
    threads: BTreeMap<u32, String>,
    /// fd -> link target
    fds: BTreeMap<i32, String>,
    /// pid -> state and command
    children: BTreeMap<u32, String>,
    /// task id -> spawn location; `None` when the probe's task hooks are not installed.
    tasks: Option<BTreeMap<String, String>>,
    /// Alive tasks as tokio counts them, when a runtime is current.
    alive_tasks: Option<usize>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct LeakGuard {
    baseline: Census,
    ignore_threads: Vec<String>,
    ignore_tasks: Vec<String>,
    ignore_fds: Vec<String>,
    settle: Duration,
    /// Set by `#[leakhound_probe::test]`: judge only this runtime's tasks.
    runtime: Option<u64>,
}

impl Default for LeakGuard {
    fn default() -> Self {
        Self::new()
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// What the process holds now; with `runtime`, only that runtime's tasks (threads,
/// descriptors and children are process-wide, so parallel tests would see each other's).
fn census(runtime: Option<u64>) -> Census {
    let mut c = Census::default();
    if runtime.is_some() {
        c.tasks = live_tasks(runtime).map(|v| v.into_iter().collect());
        return c;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                let name = read_trim(&format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
                c.threads.insert(tid, name);
            }
        }
    }
    // The listing's own descriptor shows as a link to this folder: not the program's.
    let own_listing = format!("/proc/{}/fd", std::process::id());
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                // The read_dir handle itself shows up and then is gone: skip unreadable links.
                if let Ok(target) = std::fs::read_link(e.path()) {
                    let target = target.to_string_lossy().into_owned();
                    if target != own_listing {
                        c.fds.insert(fd, target);
                    }
                }
            }
        }
    }
    let me = std::process::id();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(stat) = read_trim(&format!("/proc/{pid}/stat")) else {
                continue;
            };
            // comm may contain spaces and parentheses: fields start after the last ')'.
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let mut fields = rest.split(' ');
            let state = fields.next().unwrap_or("?");
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(me) {
                let comm = head.split_once(" (").map_or("", |(_, c)| c);
                let cmd = read_trim(&format!("/proc/{pid}/cmdline"))
                    .map(|c| c.replace('\0', " ").trim().to_string())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| format!("[{comm}]"));
                let state = if state == "Z" { "zombie" } else { "running" };
                c.children.insert(pid, format!("{state}: {cmd}"));
            }
        }
    }
    c.tasks = live_tasks(None).map(|v| v.into_iter().collect());
    c.alive_tasks = tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.metrics().num_alive_tasks());
    c
}

impl LeakGuard {
    /// Takes the baseline census now.
    pub fn new() -> Self {
        Self::over(None)
    }

    /// A guard over the tasks of the hooked runtime tagged `runtime` only.
    pub(crate) fn for_runtime(runtime: u64) -> Self {
        Self::over(Some(runtime))
    }

    fn over(runtime: Option<u64>) -> Self {
        LeakGuard {
            baseline: census(runtime),
            ignore_threads: Vec::new(),
            ignore_tasks: Vec::new(),
            ignore_fds: Vec::new(),
            settle: Duration::from_secs(1),
            runtime,
        }
    }

    /// Ignore new threads whose name contains `pattern`.
    pub fn ignore_thread(mut self, pattern: impl Into<String>) -> Self {
        self.ignore_threads.push(pattern.into());
        self
    }

    /// Ignore new tasks whose spawn location (`file:line:col`) contains `pattern`.
    pub fn ignore_task_location(mut self, pattern: impl Into<String>) -> Self {
        self.ignore_tasks.push(pattern.into());
        self
    }

    /// Ignore new descriptors whose target (a path, `socket:[…]`, `pipe:[…]`) contains
    /// `pattern`.
    pub fn ignore_fd(mut self, pattern: impl Into<String>) -> Self {
        self.ignore_fds.push(pattern.into());
        self
    }

    /// Longest time to wait for things to settle before judging (default 1 s).
    pub fn settle(mut self, max: Duration) -> Self {
        self.settle = max;
        self
    }

    /// The report of what grew since `new()`, or `Ok` when nothing did.
    pub fn check(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.settle;
        let mut pause = Duration::from_millis(1);
        loop {
            let report = self.report(&census(self.runtime));
            match report {
                None => return Ok(()),
                Some(r) if Instant::now() >= deadline => return Err(r),
                Some(_) => {
                    std::thread::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// [`LeakGuard::check`] from inside the runtime under test: waits with the runtime's
    /// timer, so tasks (even on a current-thread runtime) can finish while it settles.
    pub(crate) async fn check_async(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.settle;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.report(&census(self.runtime)) {
                None => return Ok(()),
                Some(r) if tokio::time::Instant::now() >= deadline => return Err(r),
                Some(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// Panics with a readable report when threads, descriptors, children or tasks grew.
    #[track_caller]
    pub fn assert_clean(self) {
        if let Err(report) = self.check() {
            panic!("{report}");
        }
    }

    fn report(&self, now: &Census) -> Option<String> {
        let base = &self.baseline;
        let ignored = |patterns: &[String], text: &str| patterns.iter().any(|p| text.contains(p));
        let threads: Vec<_> = now
            .threads
            .iter()
            .filter(|(tid, name)| {
                !base.threads.contains_key(tid) && !ignored(&self.ignore_threads, name)
            })
            .collect();
        let fds: Vec<_> = now
            .fds
            .iter()
            .filter(|(fd, target)| {
                base.fds.get(fd) != Some(target) && !ignored(&self.ignore_fds, target)
            })
            .collect();
        let children: Vec<_> = now
            .children
            .iter()
            .filter(|(pid, _)| !base.children.contains_key(pid))
            .collect();
        let tasks: Vec<(String, String)> = match (&base.tasks, &now.tasks) {
            (Some(b), Some(n)) => n
                .iter()
                .filter(|(id, loc)| !b.contains_key(*id) && !ignored(&self.ignore_tasks, loc))
                .map(|(id, loc)| (id.clone(), loc.clone()))
                .collect(),
            _ => Vec::new(),
        };
        // Without the task hooks only tokio's count is known: report its growth.
        let task_growth = match (&base.tasks, base.alive_tasks, now.alive_tasks) {
            (None, Some(b), Some(n)) if n > b => Some((b, n)),
            _ => None,
        };
        if threads.is_empty()
            && fds.is_empty()
            && children.is_empty()
            && tasks.is_empty()
            && task_growth.is_none()
        {
            return None;
        }
        let mut r = String::from("LeakGuard: resources leaked since LeakGuard::new()\n");
        if !threads.is_empty() {
            let _ = writeln!(r, "  threads: {} new", threads.len());
            for (tid, name) in &threads {
                let _ = writeln!(r, "    tid={tid} name={name:?}");
            }
        }
        if !fds.is_empty() {
            let _ = writeln!(r, "  fds: {} new", fds.len());
            for (fd, target) in &fds {
                let _ = writeln!(r, "    fd={fd} -> {target}");
            }
        }
        if !children.is_empty() {
            let _ = writeln!(
                r,
                "  child processes: {} new, not waited for",
                children.len()
            );
            for (pid, what) in &children {
                let _ = writeln!(r, "    pid={pid} {what}");
            }
        }
        if !tasks.is_empty() {
            let _ = writeln!(r, "  tokio tasks: {} still alive", tasks.len());
            for (id, loc) in &tasks {
                let _ = writeln!(r, "    task={id} spawned at {loc}");
            }
        }
        if let Some((b, n)) = task_growth {
            let _ = writeln!(
                r,
                "  tokio tasks: alive count grew from {b} to {n} (build the runtime with leakhound_probe::hooks and --cfg tokio_unstable to see which)"
            );
        }
        let _ = write!(
            r,
            "  (settled for up to {:?}; ignore with .ignore_thread / .ignore_fd / .ignore_task_location)",
            self.settle
        );
        Some(r)
    }
}

/// Tokio task ids of live tasks and their spawn locations, for [`LeakGuard`]; only the
/// tasks of the runtime tagged `runtime` when given.
fn live_tasks(runtime: Option<u64>) -> Option<Vec<(String, String)>> {
    if !crate::registry::HOOKS_INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let (live, _) = crate::registry::collect();
    Some(
        live.into_iter()
            .filter(|(_, e)| runtime.is_none_or(|r| e.runtime == r))
            .map(|(id, e)| {
                (
                    id.to_string(),
                    format!(
                        "{}:{}:{}",
                        e.location.file(),
                        e.location.line(),
                        e.location.column()
                    ),
                )
            })
            .collect(),
    )
}
