//! A PID target as a service: the process and its descendants. A pre-fork server (gunicorn,
//! `uvicorn --workers`, multiprocessing, celery) does its work in children; each descendant
//! that has a probe is sampled as its own snapshot (`Snapshot::workers`), and a descendant that
//! ends is reported with how it ended and what replaced it (`Snapshot::ended`). New workers are
//! picked up at the next sample, so a replacement's probe is read without restarting anything.
//!
//! Which descendants' ends are reported: those that lived at least [`LONG_LIVED_MS`], and those
//! that ended abnormally ([`abnormal`]: a crash-looping worker); a short helper that exits 0
//! (`subprocess.run`, with a probe or without) is not an event.

mod exits;

use crate::model::{Child, Ended, ProcState, Snapshot};
use crate::source::api::{SampleOptions, Source, SourceError};
use crate::source::procfs::host::HostView;
use exits::{ExitWatch, Status};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use exits::zombie_status;

/// A descendant that lived this long is a worker whose end is reported however it ended.
pub const LONG_LIVED_MS: u64 = 5_000;
/// How long an ended worker waits for its replacement to appear before it is reported alone.
pub const REPLACEMENT_WAIT_MS: u64 = 5_000;
/// How long an ended worker waits for its status from the exit listener.
const STATUS_WAIT_MS: u64 = 1_000;

/// Opens the source of one process (the root, or a worker), its /proc reads of the whole
/// host shared through the view it is given.
pub type Opener = fn(u32, &Arc<HostView>) -> Result<Box<dyn Source>, SourceError>;

/// Which descendants without a probe are sampled too, for these options (the outside view
/// of a Python worker started without the probe).
pub type Without = fn(&Child, SampleOptions) -> bool;

/// What is remembered of a descendant seen alive.
#[derive(Debug, Clone)]
struct Known {
    child: Child,
    had_probe: bool,
    status: Option<Status>,
}

/// The root source plus one source per descendant with a probe.
pub struct TreeSource {
    root: Box<dyn Source>,
    open: Opener,
    /// Descendants without a probe that are sampled all the same.
    without: Option<Without>,
    workers: BTreeMap<u32, Box<dyn Source>>,
    known: BTreeMap<u32, Known>,
    /// Ended, waiting for a status or a replacement.
    pending: Vec<Ended>,
    exits: Option<ExitWatch>,
    /// Why the exit listener could not start (said once, as a note).
    exits_note: Option<String>,
    /// Start the exit listener once there are descendants (a single process needs none).
    listen_for_exits: bool,
    /// The kernel lists each thread's children (`/proc/PID/task/TID/children`).
    live_children: bool,
    /// The process and socket tables, read once per sample for the root and every worker (a
    /// loaded pre-fork server's workers each hold thousands of sockets in one big table).
    host: Arc<HostView>,
}

impl TreeSource {
    /// The tree under `pid`: its root and workers opened by `open`, sharing one host view.
    pub fn open(pid: u32, open: Opener) -> Result<Self, SourceError> {
        let host = HostView::per_call();
        let root = open(pid, &host)?;
        Ok(Self::with_host(root, open, host))
    }

    pub fn new(root: Box<dyn Source>, open: Opener) -> Self {
        Self::with_host(root, open, HostView::per_call())
    }

    fn with_host(root: Box<dyn Source>, open: Opener, host: Arc<HostView>) -> Self {
        TreeSource {
            host,
            root,
            open,
            without: None,
            workers: BTreeMap::new(),
            known: BTreeMap::new(),
            pending: Vec::new(),
            exits: None,
            exits_note: None,
            listen_for_exits: true,
            live_children: std::path::Path::new("/proc/thread-self/children").exists(),
        }
    }

    /// Samples the descendants without a probe that `without` accepts too.
    pub fn sampling_without_probe(mut self, without: Without) -> Self {
        self.without = Some(without);
        self
    }

    /// Puts the live tree into `snapshot.children`: the root's /proc walk is paced (redone
    /// every 250× what it cost when nothing changed, which on a busy machine is tens of
    /// seconds), while a worker's end and its replacement are what this source is for.
    fn refresh_children(&self, snapshot: &mut Snapshot) {
        if self.live_children
            && let Some(children) = live_descendants(snapshot.pid, snapshot.taken_at_ms)
        {
            snapshot.children = children;
        }
    }

    /// Samples every descendant with a probe (and those `without` accepts) into
    /// `snapshot.workers`.
    fn sample_workers(&mut self, snapshot: &mut Snapshot, options: SampleOptions) {
        let without = self.without;
        let alive: Vec<u32> = snapshot
            .children
            .iter()
            .filter(|c| c.state != ProcState::Zombie)
            .filter(|c| c.has_probe || without.is_some_and(|w| w(c, options)))
            .map(|c| c.pid)
            .collect();
        self.workers.retain(|pid, _| alive.contains(pid));
        for pid in alive {
            let source = match self.workers.entry(pid) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => match (self.open)(pid, &self.host)
                {
                    Ok(s) => v.insert(s),
                    // Gone between the /proc walk and now: its end is seen next sample.
                    Err(_) => continue,
                },
            };
            match source.sample(options) {
                Ok(worker) => snapshot.workers.push(worker),
                Err(SourceError::Gone(_) | SourceError::NoSuchProcess(_)) => {
                    self.workers.remove(&pid);
                }
                Err(e) => snapshot
                    .notes
                    .push(format!("worker pid {pid} not read this sample: {e}")),
            }
        }
    }

    /// Finds the descendants gone since the last sample, and reports those whose status and
    /// replacement are known (or waited for long enough) in `snapshot.ended`.
    fn follow_ends(&mut self, snapshot: &mut Snapshot) {
        let now = snapshot.taken_at_ms;
        let alive: BTreeMap<u32, &Child> = snapshot
            .children
            .iter()
            .filter(|c| c.state != ProcState::Zombie)
            .map(|c| (c.pid, c))
            .collect();
        // A zombie still holds its status until its parent reaps it.
        for c in snapshot
            .children
            .iter()
            .filter(|c| c.state == ProcState::Zombie)
        {
            if let Some(k) = self.known.get_mut(&c.pid)
                && k.status.is_none()
            {
                k.status = zombie_status(c.pid);
            }
        }
        let gone: Vec<u32> = self
            .known
            .keys()
            .filter(|pid| !alive.contains_key(pid))
            .copied()
            .collect();
        for pid in gone {
            let Some(k) = self.known.remove(&pid) else {
                continue;
            };
            let status = k.status.or_else(|| zombie_status(pid));
            self.pending.push(Ended {
                pid,
                ppid: k.child.ppid,
                cmd: k.child.cmd.clone(),
                had_probe: k.had_probe,
                age_ms: k.child.age_ms,
                ended_at_ms: now,
                exit_code: status.and_then(Status::code),
                signal: status.and_then(Status::signal),
                core_dumped: status.is_some_and(Status::core_dumped),
                replaced_by: None,
            });
        }
        // New descendants, of a parent that lost one: the replacements.
        let mut claimed: Vec<u32> = self.pending.iter().filter_map(|e| e.replaced_by).collect();
        for ended in &mut self.pending {
            if ended.exit_code.is_none()
                && ended.signal.is_none()
                && let Some(status) = self.exits.as_ref().and_then(|w| w.take(ended.pid))
            {
                ended.exit_code = status.code();
                ended.signal = status.signal();
                ended.core_dumped = status.core_dumped();
            }
            if ended.replaced_by.is_none() {
                ended.replaced_by = alive
                    .values()
                    .filter(|c| {
                        c.ppid == ended.ppid
                            && !self.known.contains_key(&c.pid)
                            && !claimed.contains(&c.pid)
                    })
                    .map(|c| c.pid)
                    .min();
                claimed.extend(ended.replaced_by);
            }
        }
        let parent_alive = |ppid: u32| ppid == snapshot.pid || alive.contains_key(&ppid);
        let (ready, waiting): (Vec<Ended>, Vec<Ended>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| {
                let waited = now.saturating_sub(e.ended_at_ms);
                let status_known = e.exit_code.is_some() || e.signal.is_some();
                let replaced = e.replaced_by.is_some() || !parent_alive(e.ppid);
                (status_known || waited >= STATUS_WAIT_MS)
                    && (replaced || waited >= REPLACEMENT_WAIT_MS)
            });
        self.pending = waiting;
        snapshot.ended.extend(
            ready
                .into_iter()
                .filter(|e| e.age_ms >= LONG_LIVED_MS || abnormal(e)),
        );
        for (pid, c) in alive {
            let k = self.known.entry(pid).or_insert_with(|| Known {
                child: c.clone(),
                had_probe: false,
                status: None,
            });
            k.child = c.clone();
            k.had_probe |= c.has_probe;
        }
        if self.listen_for_exits && !self.known.is_empty() {
            self.listen_for_exits = false;
            match ExitWatch::start() {
                Ok(w) => self.exits = Some(w),
                Err(e) => {
                    self.exits_note = Some(format!(
                        "{e}: a worker's exit status is known only when a sample sees it as a \
                         zombie"
                    ))
                }
            }
        }
        if let Some(w) = &self.exits {
            w.set_interest(
                self.known
                    .keys()
                    .chain(self.pending.iter().map(|e| &e.pid))
                    .copied(),
            );
        }
    }
}

impl Source for TreeSource {
    fn describe(&self) -> String {
        self.root.describe()
    }

    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
        // One read of the host's tables for the root and all its workers.
        self.host.begin_tick();
        let mut snapshot = self.root.sample(options)?;
        self.refresh_children(&mut snapshot);
        self.sample_workers(&mut snapshot, options);
        self.follow_ends(&mut snapshot);
        if (!snapshot.workers.is_empty() || !snapshot.ended.is_empty())
            && let Some(note) = self.exits_note.take()
        {
            snapshot.notes.push(note);
        }
        Ok(snapshot)
    }
}

/// Signals that ask a process to stop: ending by one is not a failure.
pub const STOP_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// It failed or was killed: a non-zero exit status, or a signal other than a stop signal.
pub fn abnormal(e: &Ended) -> bool {
    e.exit_code.is_some_and(|c| c != 0) || e.signal.is_some_and(|s| !STOP_SIGNALS.contains(&s))
}

/// The descendants of `root` now, parents before children, read from each thread's
/// `children` file: a few small reads per process instead of a walk of every process.
pub fn live_descendants(root: u32, now_ms: u64) -> Option<Vec<Child>> {
    let boot_ms = procfs::boot_time_secs().ok()? * 1000;
    let ticks = procfs::ticks_per_second().max(1);
    let mut out = Vec::new();
    let mut queue = vec![(root, 0u32)];
    while let Some((parent, depth)) = queue.pop() {
        for pid in children_of(parent) {
            // Gone since its parent listed it: its end is seen by what follows.
            let Ok(proc) = procfs::process::Process::new(pid as i32) else {
                continue;
            };
            let Ok(stat) = proc.stat() else { continue };
            let cmd = crate::source::procfs::parse::shown_cmd(
                proc.cmdline().map(|c| c.join(" ")).unwrap_or_default(),
                &stat.comm,
            );
            let started_ms = boot_ms + stat.starttime * 1000 / ticks;
            out.push(Child {
                pid,
                ppid: stat.ppid as u32,
                state: ProcState::from_char(stat.state),
                cmd,
                age_ms: now_ms.saturating_sub(started_ms),
                depth: depth + 1,
                has_probe: crate::source::probe::find_socket(pid).socket.is_some(),
            });
            queue.push((pid, depth + 1));
        }
    }
    out.sort_by_key(|c| (c.depth, c.pid));
    Some(out)
}

/// The children of every thread of `pid` (a child belongs to the thread that forked it).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The name of a Linux signal number (`SIGKILL`), or `signal N`.
pub fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("signal {signal}"), |n| (*n).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A root whose descendants are scripted per sample.
    struct Scripted {
        t: u64,
        script: Arc<Mutex<Vec<Vec<Child>>>>,
    }

    impl Source for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn sample(&mut self, _: SampleOptions) -> Result<Snapshot, SourceError> {
            self.t += 1_000;
            let mut script = self.script.lock().unwrap();
            let children = if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            };
            Ok(Snapshot {
                pid: 1,
                taken_at_ms: self.t,
                children,
                ..Default::default()
            })
        }
    }

    fn worker(pid: u32, probe: bool, age_ms: u64) -> Child {
        Child {
            pid,
            ppid: 1,
            state: ProcState::Sleeping,
            cmd: format!("w{pid}"),
            age_ms,
            depth: 1,
            has_probe: probe,
        }
    }

    fn no_source(pid: u32, _: &Arc<HostView>) -> Result<Box<dyn Source>, SourceError> {
        Err(SourceError::NoSuchProcess(pid))
    }

    fn tree(script: Vec<Vec<Child>>) -> TreeSource {
        let mut t = TreeSource::new(
            Box::new(Scripted {
                t: 0,
                script: Arc::new(Mutex::new(script)),
            }),
            no_source,
        );
        // Statuses and children here come from the script: these pids are not real processes.
        t.listen_for_exits = false;
        t.live_children = false;
        t
    }

    #[test]
    fn an_ended_worker_is_reported_once_with_its_replacement() {
        let mut t = tree(vec![
            vec![worker(901_001, true, 9_000), worker(901_002, true, 9_000)],
            vec![worker(901_001, true, 10_000), worker(901_003, true, 10)],
            vec![worker(901_001, true, 11_000), worker(901_003, true, 1_010)],
        ]);
        let opts = SampleOptions::default();
        assert!(t.sample(opts).unwrap().ended.is_empty());
        // Gone, replaced at once, but no status yet: waits for one (up to a second).
        assert!(t.sample(opts).unwrap().ended.is_empty());
        let s = t.sample(opts).unwrap();
        assert_eq!(s.ended.len(), 1, "{:?}", s.ended);
        let e = &s.ended[0];
        assert_eq!(
            (e.pid, e.replaced_by, e.had_probe),
            (901_002, Some(901_003), true)
        );
        assert_eq!((e.exit_code, e.signal), (None, None));
        assert!(t.sample(opts).unwrap().ended.is_empty(), "reported once");
    }

    #[test]
    fn short_helpers_are_not_events_and_lone_ends_wait_for_a_replacement() {
        let mut t = tree(vec![
            vec![worker(902_001, true, 100), worker(902_002, false, 9_000)],
            vec![],
        ]);
        let opts = SampleOptions::default();
        t.sample(opts).unwrap();
        let mut reported = Vec::new();
        for _ in 0..6 {
            reported.extend(t.sample(opts).unwrap().ended);
        }
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!((reported[0].pid, reported[0].replaced_by), (902_002, None));
    }

    #[test]
    fn the_live_tree_lists_a_child_that_just_started_and_drops_one_that_ended() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        let now = crate::source::now_ms();
        let tree = live_descendants(me, now).expect("this kernel lists children");
        let found = tree
            .iter()
            .find(|c| c.pid == pid)
            .expect("the new child is listed");
        assert_eq!((found.ppid, found.depth), (me, 1));
        // `[sleep]` (its name) when read before exec has set up its command line.
        assert!(found.cmd.contains("sleep"), "{}", found.cmd);
        child.kill().expect("kill");
        child.wait().expect("reaped");
        let after = live_descendants(me, now).expect("listed");
        assert!(after.iter().all(|c| c.pid != pid), "{after:?}");
    }

    #[test]
    fn a_short_lived_descendant_is_an_event_only_when_it_failed() {
        let short = |exit_code, signal| Ended {
            age_ms: 100,
            exit_code,
            signal,
            ..Default::default()
        };
        assert!(!abnormal(&short(Some(0), None)));
        assert!(!abnormal(&short(None, Some(libc::SIGTERM))));
        assert!(!abnormal(&short(None, None)), "unknown: not blamed");
        assert!(abnormal(&short(Some(3), None)));
        assert!(abnormal(&short(None, Some(libc::SIGKILL))));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(64), "signal 64");
        assert_eq!(signal_name(0), "signal 0");
    }
}
