//! `leakhound check -- CMD`: run a command under observation and decide a verdict for CI.
//!
//! The runner (I/O) starts the command with the probes told where to listen, samples it while
//! it runs (source → History → rules), and when it ends looks at what is left: descendants
//! still alive, zombies, descriptors and threads that appeared during the run and were still
//! there at the end, and the probes' final reports. The judging is pure functions over that
//! data ([`judge_leftovers`], [`left_open`], [`exit_code`]), so it is tested without processes.

pub mod exit_stop;
pub mod ignore;
pub mod settings;
pub mod tree;

use crate::config::Config;
use crate::findings::{Finding, Severity, sort_findings};
use crate::history::History;
use crate::model::{FdKind, ProcState, Proto, Snapshot};
use crate::source::{SampleOptions, Target};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tree::Leftover;

/// Rule ids that `check` decides itself at exit (the others come from `rules::all()`).
pub const ORPHAN_CHILD: &str = "orphan-child";
pub const ZOMBIE_CHILD: &str = "zombie-child";
pub const THREAD_LEAK: &str = "thread-leak";
pub const UNCLOSED_RESOURCE: &str = "unclosed-resource";

/// Threads whose names start with this belong to leakhound's own probes, never the program.
const PROBE_THREAD_PREFIX: &str = "leakhound";

/// Shells (by process name) whose descriptors 10 and up holding files are their own input.
const SHELLS: &[&str] = &["bash", "sh", "dash", "zsh", "ksh", "mksh", "ash", "busybox"];

/// tokio's default names for its runtime threads as /proc shows them (cut to 15 bytes):
/// "tokio-rt-worker" since tokio 1.50, "tokio-runtime-worker" before.
const TOKIO_THREAD_NAMES: [&str; 2] = ["tokio-rt-worker", "tokio-runtime-w"];

/// Every rule a `check` report can name, with its one-line summary: the rules of
/// `rules::all()` plus the ones `check` decides at exit. SARIF and JUnit list them all.
pub fn rule_catalog() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crate::rules::all()
        .iter()
        .map(|r| (r.id().to_string(), r.summary().to_string()))
        .collect();
    let own = [
        (
            ORPHAN_CHILD,
            "a descendant was still running after the command under check exited",
        ),
        (
            ZOMBIE_CHILD,
            "a child exited and was never reaped by its parent",
        ),
        (
            THREAD_LEAK,
            "threads or executors still alive when the program should be done",
        ),
        (
            UNCLOSED_RESOURCE,
            "a socket, file or other descriptor opened and never closed",
        ),
    ];
    for (id, summary) in own {
        if out.iter().all(|(known, _)| known != id) {
            out.push((id.to_string(), summary.to_string()));
        }
    }
    out
}

/// Everything `check` needs to run, already validated.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub command: Vec<String>,
    pub config: Config,
    pub interval: Duration,
    pub settle: Duration,
    pub keep_orphans: bool,
    pub fail_on: Severity,
    pub ignores: Vec<ignore::Ignore>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommandExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl CommandExit {
    /// The status a shell would report: the code, or 128 + the signal.
    pub fn shell_status(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(code), _) => (code & 0xff) as u8,
            (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
            (None, None) => 0,
        }
    }

    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "unknown status".into(),
        }
    }
}

/// The outcome of one `check` run: what every report renders.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub command: Vec<String>,
    pub exit: CommandExit,
    pub duration_ms: u64,
    /// Samples taken while the command ran.
    pub samples: u64,
    /// Findings that count, highest severity first.
    pub findings: Vec<Finding>,
    /// Findings an ignore entry suppressed.
    pub ignored: Vec<Finding>,
    /// Ignore entries that matched nothing in this run: candidates for removal.
    pub unused_ignores: Vec<String>,
    /// What could not be seen and why.
    pub notes: Vec<String>,
    pub fail_on: Severity,
    /// leakhound's exit status: see [`exit_code`].
    pub exit_code: u8,
}

impl CheckReport {
    /// Findings at or above `--fail-on`.
    pub fn failing(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity >= self.fail_on)
    }
}

/// The exit status: the command's own non-zero status wins; else 1 when a finding is at or
/// above `fail_on`; else 0. (2, leakhound's own error, never reaches here.)
pub fn exit_code(exit: CommandExit, findings: &[Finding], fail_on: Severity) -> u8 {
    let status = exit.shell_status();
    if status != 0 {
        status
    } else if findings.iter().any(|f| f.severity >= fail_on) {
        crate::cli::EXIT_FINDINGS
    } else {
        crate::cli::EXIT_CLEAN
    }
}

/// What was left under leakhound when the command exited, after settling.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// Zombies present right after the command exited: children nobody reaped.
    pub zombies: Vec<Leftover>,
    /// Descendants still running once the settle time was used up.
    pub alive: Vec<Leftover>,
    /// Whether the alive ones were then killed (not with `--keep-orphans`).
    pub killed: bool,
    pub settle: Duration,
}

/// `orphan-child` for each descendant still running after the command exited and things were
/// given `settle` to wind down; `zombie-child` for each child left unreaped.
pub fn judge_leftovers(left: &Leftovers) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in &left.alive {
        let fate = if left.killed {
            "; leakhound killed it"
        } else {
            "; left running (--keep-orphans)"
        };
        out.push(
            Finding::new(
                ORPHAN_CHILD,
                Severity::Error,
                format!("pid:{}", p.pid),
                format!(
                    "`{}` (pid {}) was still running {:.1} s after the command exited{fate}",
                    p.cmd,
                    p.pid,
                    left.settle.as_secs_f64()
                ),
            )
            .with("pid", p.pid)
            .with("cmd", p.cmd.clone())
            .with("state", p.state.as_str())
            .with("killed", left.killed),
        );
    }
    for p in &left.zombies {
        out.push(
            Finding::new(
                ZOMBIE_CHILD,
                Severity::Warning,
                format!("pid:{}", p.pid),
                format!(
                    "`{}` (pid {}) exited but was never reaped (wait()ed for) by its parent",
                    p.cmd, p.pid
                ),
            )
            .with("pid", p.pid)
            .with("cmd", p.cmd.clone()),
        );
    }
    out
}

/// Descriptors and threads that appeared during the run and were still there at its end.
///
/// Precise rather than noisy. With `at_exit` (a sample taken while the process was stopped
/// inside `exit`, see [`exit_stop`]) a thing counts when it is there and was absent from the
/// first sample (the baseline): whatever the program closed, however late, is gone by then.
/// Without it, a thing counts only when it was in the last sample and unchanged (same fd
/// number and target, or same thread id) in the one before — one sample catches work in
/// progress, two catch things held — which can still blame something closed in the last
/// milliseconds. The std streams, leakhound's own probe sockets (paths under `socket_dir`) and
/// probe threads never count.
pub fn left_open(
    snapshots: &[&Snapshot],
    at_exit: Option<&Snapshot>,
    socket_dir: &str,
    had_probe: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(first) = snapshots.first() else {
        return out;
    };
    let (last, before_last) = match at_exit {
        Some(exit) => (exit, exit),
        None if snapshots.len() >= 3 => (
            snapshots[snapshots.len() - 1],
            snapshots[snapshots.len() - 2],
        ),
        None => return out,
    };

    // Descriptors.
    let fd_set = |s: &Snapshot| -> BTreeSet<(i32, String)> {
        s.fd_list
            .iter()
            .flatten()
            .map(|f| (f.fd, f.target.clone()))
            .collect()
    };
    let baseline = fd_set(first);
    let held = fd_set(before_last);
    let probe_inodes: BTreeSet<u64> = last
        .sockets
        .iter()
        .filter(|s| !socket_dir.is_empty() && s.local.starts_with(socket_dir))
        .map(|s| s.inode)
        .collect();
    // A shell reads its script, and every file it sources, through a descriptor it moves to 10
    // or above (bash: 255) and holds while it runs them: the interpreter's, not the script's.
    let shell = [last, before_last, *first]
        .iter()
        .filter_map(|s| s.process.as_ref())
        .any(|p| {
            // A `#!/bin/bash` script's name is the script's; its argv[0] is the shell.
            let argv0 = p.cmd.split_whitespace().next().unwrap_or_default();
            let argv0 = argv0.rsplit('/').next().unwrap_or_default();
            SHELLS.contains(&p.name.as_str()) || SHELLS.contains(&argv0)
        });
    for fd in last.fd_list.iter().flatten() {
        let key = (fd.fd, fd.target.clone());
        if fd.fd <= 2 || baseline.contains(&key) || !held.contains(&key) {
            continue;
        }
        if shell && fd.fd >= 10 && fd.kind == FdKind::File {
            continue;
        }
        if !socket_dir.is_empty() && fd.target.starts_with(socket_dir) {
            continue;
        }
        let socket = last
            .sockets
            .iter()
            .find(|s| s.fd == Some(fd.fd) || format!("socket:[{}]", s.inode) == fd.target);
        if socket.is_some_and(|s| probe_inodes.contains(&s.inode) || in_process_pair(s, last)) {
            continue;
        }
        let what = match (fd.kind, socket) {
            (FdKind::Socket, Some(s)) => {
                let peer = if s.remote.is_empty() || s.remote.ends_with(":0") {
                    String::new()
                } else {
                    format!(" -> {}", s.remote)
                };
                format!("{:?} socket {}{} ({})", s.proto, s.local, peer, s.state).to_lowercase()
            }
            (FdKind::File, _) => format!("file {}", fd.target),
            (kind, _) => format!("{} {}", kind.as_str(), fd.target),
        };
        let mut finding = Finding::new(
            UNCLOSED_RESOURCE,
            Severity::Warning,
            format!("fd:{}", fd.fd),
            format!(
                "fd {} ({what}) was opened during the run and never closed",
                fd.fd
            ),
        )
        .with("fd", fd.fd)
        .with("kind", fd.kind.as_str())
        .with("target", fd.target.clone())
        .with("source", "procfs");
        if let Some(s) = socket {
            finding = finding
                .with("local", s.local.clone())
                .with("remote", s.remote.clone())
                .with("state", s.state.clone());
        }
        out.push(finding);
    }

    // Threads. A probe knows its runtime's names for threads; a /proc sample taken at the
    // exit has none, so names come from the samples before.
    let tids = |s: &Snapshot| -> BTreeSet<u32> { s.threads.iter().map(|t| t.tid).collect() };
    let (base_tids, held_tids) = (tids(first), tids(before_last));
    // Only a probe that names threads (Python's) can vouch that an unnamed one is not the
    // program's; the Rust probe names none, so a tokio program's threads are judged by /proc.
    let probed = had_probe
        || snapshots
            .iter()
            .any(|s| s.probe.as_ref().is_some_and(|p| !p.threads.is_empty()));
    let runtime_name = |tid: u32| -> Option<String> {
        snapshots
            .iter()
            .rev()
            .flat_map(|s| s.threads.iter())
            .find(|t| t.tid == tid && t.runtime_name.is_some())
            .and_then(|t| t.runtime_name.clone())
    };
    // Threads of one name are one finding: a runtime's 16 workers are one thing left running,
    // and findings are keyed by subject, so one per thread would keep only the last anyway.
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for t in &last.threads {
        let known = runtime_name(t.tid);
        // With a thread-naming probe loaded, a thread it never named is its own (or not the
        // runtime's): the probe's shutdown report speaks for the runtime's threads.
        if probed && known.is_none() {
            continue;
        }
        let name = known.unwrap_or_else(|| t.name.clone());
        if t.tid == last.pid
            || base_tids.contains(&t.tid)
            || !held_tids.contains(&t.tid)
            || name.starts_with(PROBE_THREAD_PREFIX)
            || t.state == ProcState::Zombie
        {
            continue;
        }
        by_name.entry(name).or_default().push(t.tid);
    }
    for (name, tids) in by_name {
        let tokio = TOKIO_THREAD_NAMES.iter().any(|n| name.starts_with(n));
        let list = tids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (fate, role) = match (tokio, tids.len()) {
            (false, _) => ("", ""),
            (true, 1) => (
                ": its runtime was never shut down",
                ", a tokio runtime's thread",
            ),
            (true, _) => (
                ": its runtime was never shut down",
                ", a tokio runtime's threads",
            ),
        };
        let (threads, ids, were) = match tids.len() {
            1 => (format!("thread '{name}'"), "tid", "was"),
            n => (format!("{n} threads '{name}'"), "tids", "were"),
        };
        let message = format!(
            "{threads} ({ids} {list}{role}) started during the run {were} still alive when the command exited{fate}"
        );
        let mut finding = Finding::new(
            THREAD_LEAK,
            Severity::Warning,
            format!("thread:{name}"),
            message,
        )
        .with("tid", tids[0])
        .with("tids", tids.clone())
        .with("count", tids.len())
        .with("thread_name", name)
        .with("source", "procfs");
        if tokio {
            finding = finding.with("runtime", "tokio");
        }
        out.push(finding);
    }
    out
}

/// Keeps one finding per (pid, rule, subject): the latest version of each. Findings about a
/// descendant (not the command's own process) carry its `pid` in the evidence.
#[derive(Debug, Default)]
struct Collected {
    root: Option<u32>,
    map: BTreeMap<(u32, String, String, String), Finding>,
}

impl Collected {
    /// Drops this process's own findings that the pytest plugin reports per test: the same
    /// (rule, subject), and every warning-based one (never-awaited, unclosed-resource from the
    /// probe, tasks collected while pending), since the plugin saw the same signals and knows
    /// which test made them.
    fn prefer_tests(&mut self, pid: u32, per_test: &[Finding]) {
        let same: BTreeSet<(&str, &str)> = per_test
            .iter()
            .map(|f| (f.rule.as_str(), f.subject.as_str()))
            .collect();
        self.map.retain(|(p, rule, subject, test), f| {
            if *p != pid || !test.is_empty() {
                return true;
            }
            let from_warning = ((rule == "never-awaited" || rule == UNCLOSED_RESOURCE)
                && f.evidence.get("source").and_then(|s| s.as_str()) != Some("procfs"))
                || f.evidence.get("destroyed_pending") == Some(&serde_json::Value::Bool(true));
            !from_warning && !same.contains(&(rule.as_str(), subject.as_str()))
        });
    }

    /// Adds only findings whose (rule, subject) this process has not had yet.
    fn add_new(&mut self, pid: u32, findings: Vec<Finding>) {
        let fresh: Vec<Finding> = findings
            .into_iter()
            .filter(|f| {
                !self
                    .map
                    .keys()
                    .any(|(p, r, s, _)| *p == pid && *r == f.rule && *s == f.subject)
            })
            .collect();
        self.add(pid, fresh);
    }

    fn add(&mut self, pid: u32, findings: impl IntoIterator<Item = Finding>) {
        let root = *self.root.get_or_insert(pid);
        for mut f in findings {
            if pid != root && !f.evidence.contains_key("pid") {
                f = f.with("pid", pid);
            }
            // The pytest plugin's findings are per test: the same subject in two tests is two.
            let test = f
                .evidence
                .get("test")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string();
            self.map
                .insert((pid, f.rule.clone(), f.subject.clone(), test), f);
        }
    }
}

/// One process under observation: its source, its history for the rules, and the samples the
/// exit-time diff needs (the first, as the baseline, and the last two).
struct Watched {
    pid: u32,
    source: Option<Box<dyn crate::source::Source>>,
    history: History,
    baseline: Option<Snapshot>,
    recent: Vec<Snapshot>,
    /// When leakhound started this process itself (the command), ms since the epoch.
    started_ms: Option<u64>,
    /// For the command itself: its first view (see [`start_view`]).
    start_view: Option<Snapshot>,
}

impl Watched {
    fn new(pid: u32, source: Box<dyn crate::source::Source>) -> Self {
        Watched {
            source: Some(source),
            ..Watched::closed(pid)
        }
    }

    fn closed(pid: u32) -> Self {
        Watched {
            pid,
            source: None,
            history: History::default(),
            baseline: None,
            recent: Vec::new(),
            started_ms: None,
            start_view: None,
        }
    }

    /// Takes one sample and runs the rules; false when there was nothing to sample (gone).
    fn sample(
        &mut self,
        rules: &[Box<dyn crate::rules::Rule>],
        config: &Config,
        out: &mut Collected,
    ) -> bool {
        let Some(source) = self.source.as_mut() else {
            return false;
        };
        let options = SampleOptions {
            fd_list: true,
            stacks: false,
        };
        // An error is the process exiting between two samples: the normal end.
        let Ok(snapshot) = source.sample(options) else {
            self.source = None;
            return false;
        };
        if self.history.is_empty()
            && let Some(started_ms) = self.started_ms
        {
            // The command had no children before it started. Saying so keeps zombie-child
            // from crediting a child caught as a zombie in the first sample with its whole
            // age (right when leakhound attaches to a process of unknown past, not here).
            self.history.push(Snapshot {
                taken_at_ms: started_ms.min(snapshot.taken_at_ms.saturating_sub(1)),
                children: Vec::new(),
                ..snapshot.clone()
            });
        }
        self.history.push(snapshot.clone());
        out.add(
            self.pid,
            crate::rules::evaluate(rules, &self.history, config),
        );
        if self.baseline.is_none() {
            if self.started_ms.is_some() {
                self.start_view = Some(start_view(&snapshot));
            }
            self.baseline = Some(snapshot);
        } else {
            self.recent.push(snapshot);
            if self.recent.len() > 2 {
                self.recent.remove(0);
            }
        }
        true
    }

    /// Runs the rules once more with the probe's final report as the newest view.
    fn judge_final(
        &mut self,
        data: crate::model::ProbeData,
        rules: &[Box<dyn crate::rules::Rule>],
        config: &Config,
        out: &mut Collected,
    ) {
        let mut last = self.history.latest().cloned().unwrap_or_else(|| Snapshot {
            pid: self.pid,
            ..Default::default()
        });
        last.taken_at_ms = crate::source::now_ms().max(last.taken_at_ms);
        last.probe = Some(data);
        self.history.push(last);
        out.add(
            self.pid,
            crate::rules::evaluate(rules, &self.history, config),
        );
    }

    /// The first view and the last samples.
    fn window(&self) -> Vec<&Snapshot> {
        self.start_view
            .as_ref()
            .or(self.baseline.as_ref())
            .into_iter()
            .chain(self.recent.iter())
            .collect()
    }
}

/// The command's first view: the first sample's descriptors (a runtime's own, opened before
/// `main`, are not the program's leaks) and, for threads, the main thread only — exec leaves
/// one thread, so any other was started by the program, however early (a busy machine can take
/// the first sample late enough to count the program's first threads as "already there").
fn start_view(first: &Snapshot) -> Snapshot {
    Snapshot {
        threads: first
            .threads
            .iter()
            .filter(|t| t.tid == first.pid)
            .cloned()
            .collect(),
        ..first.clone()
    }
}

/// One /proc sample of a process stopped at its exit (no probe: its threads are going away).
#[cfg(target_os = "linux")]
fn exit_sample(pid: u32) -> Option<Snapshot> {
    use crate::source::Source;
    // A thread vanishing mid-read can fail one attempt; the process itself stays stopped.
    (0..3).find_map(|_| {
        crate::source::procfs::ProcSource::new(pid)
            .ok()?
            .sample(SampleOptions {
                fd_list: true,
                stacks: false,
            })
            .ok()
    })
}

#[cfg(not(target_os = "linux"))]
fn exit_sample(_pid: u32) -> Option<Snapshot> {
    None
}

/// Pids with a probe socket (`<pid>.sock`) in the folder.
fn probe_pids(dir: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".sock")?
                .parse::<u32>()
                .ok()
        })
        .collect()
}

/// The file the pytest plugin writes under `check`: `<pid>.pytest.json`.
#[derive(Debug, serde::Deserialize)]
struct TestFindings {
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    findings: Vec<Finding>,
}

/// Findings from every `*.pytest.json` in the folder; a file that cannot be read or parsed
/// becomes a note, never an error.
fn read_test_findings(dir: &std::path::Path) -> (Vec<TestFindings>, Vec<String>) {
    let (mut files, mut notes) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (files, notes);
    };
    for path in entries.flatten().map(|e| e.path()) {
        if !path.to_string_lossy().ends_with(".pytest.json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<TestFindings>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(t) => files.push(t),
            Err(e) => notes.push(format!(
                "pytest plugin report {} ignored: {e}",
                path.display()
            )),
        }
    }
    (files, notes)
}

/// Runs the command and decides. Errors are leakhound's own (exit 2): the command could not
/// be started, the temporary folder could not be made.
pub fn run(options: &CheckOptions) -> anyhow::Result<CheckReport> {
    let mut notes = Vec::new();
    let program = options
        .command
        .first()
        .ok_or_else(|| anyhow::anyhow!("no command given: write leakhound check -- CMD ARGS…"))?;
    if let Err(e) = tree::become_subreaper() {
        notes.push(format!(
            "{e}; descendants that outlive their parent are not seen"
        ));
    }
    // A private folder per run: the probes of this command and its descendants listen here,
    // so nothing else on the machine is mistaken for them.
    let socket_dir = tempfile::Builder::new()
        .prefix("leakhound-check-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot create a temporary folder: {e}: check TMPDIR"))?;
    let socket_dir_str = socket_dir.path().display().to_string();

    let mut cmd = std::process::Command::new(program);
    cmd.args(&options.command[1..]);
    // Python programs (and their Python children) load the probe; every probe, Rust included,
    // listens in the private folder.
    if let Err(e) = crate::launch::inject(&mut cmd, socket_dir.path()) {
        notes.push(format!(
            "the Python probe could not be prepared ({e}); only the /proc view is judged"
        ));
        cmd.env("LEAKHOUND_SOCKET_DIR", socket_dir.path());
    }
    let started = Instant::now();
    let spawned_ms = crate::source::now_ms();
    let child = cmd.spawn().map_err(|e| spawn_error(program, &e))?;
    let pid = child.id();

    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::Builder::new()
        .name("leakhound-wait".into())
        .spawn(move || {
            // The child handle is not used to wait (that is exit_stop::wait); dropping it
            // neither waits nor kills.
            drop(child);
            let traced = exit_stop::seize(pid);
            let mut at_exit: Option<Snapshot> = None;
            let ending = exit_stop::wait(pid, traced.is_ok(), || at_exit = exit_sample(pid));
            let _ = tx.send((ending, traced, at_exit));
        })?;

    let rules = crate::rules::all();
    let mut collected = Collected::default();
    let mut samples = 0u64;
    let mut root = match crate::source::open(&Target::Pid(pid)) {
        Ok(s) => Watched {
            started_ms: Some(spawned_ms),
            ..Watched::new(pid, s)
        },
        Err(e) => {
            notes.push(format!("no samples while the command ran: {e}"));
            Watched::closed(pid)
        }
    };
    // Descendants that loaded a probe (a socket `<pid>.sock` in the folder), by pid.
    let mut probed: BTreeMap<u32, Watched> = BTreeMap::new();
    let status = loop {
        if root.sample(&rules, &options.config, &mut collected) {
            samples += 1;
        }
        for child_pid in probe_pids(socket_dir.path()) {
            if child_pid == pid || probed.contains_key(&child_pid) {
                continue;
            }
            if let Ok(src) = crate::source::open(&Target::Pid(child_pid)) {
                probed.insert(child_pid, Watched::new(child_pid, src));
            }
        }
        for watched in probed.values_mut() {
            watched.sample(&rules, &options.config, &mut collected);
        }
        match rx.recv_timeout(options.interval) {
            Ok(status) => break status,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("lost track of the command (pid {pid}): its waiter thread ended")
            }
        }
    };
    let _ = waiter.join();
    let (ending, traced, mut at_exit) = status;
    let ending = ending.map_err(|e| anyhow::anyhow!("waiting for pid {pid}: {e}"))?;
    let status = ending.status;
    // Threads cut short by the exit belong in the view at the exit, even when they were gone
    // from /proc by the time it was read (or /proc could not be read there at all).
    if at_exit.is_none() && !ending.cut_threads.is_empty() {
        at_exit = Some(Snapshot {
            pid,
            ..Default::default()
        });
    }
    if let Some(exit) = at_exit.as_mut() {
        for cut in &ending.cut_threads {
            match exit.threads.iter_mut().find(|t| t.tid == cut.tid) {
                // Listed while dying (a zombie thread): it was cut short, not finished.
                Some(t) => t.state = ProcState::Unknown,
                None => exit.threads.push(crate::model::Thread {
                    tid: cut.tid,
                    name: cut.name.clone(),
                    ..Default::default()
                }),
            }
        }
    }
    // ESRCH: the command ended before it could be traced; nothing was missed that matters.
    if let Err(e) = traced
        && e.raw_os_error() != Some(libc::ESRCH)
    {
        notes.push(format!(
            "could not watch the command's exit ({e}; ptrace is not permitted here): descriptors \
             and threads left at exit are judged from the last two samples instead"
        ));
    }
    let exit = {
        use std::os::unix::process::ExitStatusExt;
        CommandExit {
            code: status.code(),
            signal: status.signal(),
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;

    // What the probes said last: threads, executors and tasks alive at shutdown, coroutines
    // never awaited and resources never closed, judged by the same rules as the samples.
    let (finals, final_notes) = crate::source::probe::read_finals(socket_dir.path());
    notes.extend(final_notes);
    let final_pids: BTreeSet<u32> = finals.iter().map(|r| r.pid).collect();
    for report in finals {
        let watched = if report.pid == pid || report.pid == 0 {
            &mut root
        } else {
            probed
                .entry(report.pid)
                .or_insert_with(|| Watched::closed(report.pid))
        };
        watched.judge_final(report.data, &rules, &options.config, &mut collected);
    }
    // The /proc diff only adds what the probes did not already say (theirs has stacks).
    collected.add_new(
        pid,
        left_open(
            &root.window(),
            at_exit.as_ref(),
            &socket_dir_str,
            final_pids.contains(&pid),
        ),
    );
    for (child_pid, watched) in &probed {
        collected.add_new(
            *child_pid,
            left_open(
                &watched.window(),
                None,
                &socket_dir_str,
                final_pids.contains(child_pid),
            ),
        );
    }
    // The pytest plugin's per-test findings, each naming its test. They say better what the
    // process-wide view says of the same process (which test, where), so they replace it.
    let (tests, test_notes) = read_test_findings(socket_dir.path());
    notes.extend(test_notes);
    for file in tests {
        let test_pid = if file.pid == 0 { pid } else { file.pid };
        collected.prefer_tests(test_pid, &file.findings);
        collected.add(test_pid, file.findings);
    }
    let exit_view = at_exit
        .as_ref()
        .or_else(|| root.recent.last())
        .or(root.baseline.as_ref());
    let leftovers = settle_leftovers(options, exit_view);
    collected.add(pid, judge_leftovers(&leftovers));

    let mut findings: Vec<Finding> = collected.map.into_values().collect();
    sort_findings(&mut findings);
    let applied = ignore::apply(&options.ignores, findings);
    let exit_code = exit_code(exit, &applied.kept, options.fail_on);
    Ok(CheckReport {
        command: options.command.clone(),
        exit,
        duration_ms,
        samples,
        findings: applied.kept,
        ignored: applied.ignored,
        unused_ignores: applied.unused,
        notes,
        fail_on: options.fail_on,
        exit_code,
    })
}

/// Looks at what is left under leakhound, waiting with bounded exponential backoff (1 ms,
/// 2 ms, … capped at 100 ms, for at most `settle`) for descendants still running to finish;
/// a clean command costs one scan. Children that finish while we wait are reaped and not
/// blamed; zombies present at the first look are.
///
/// A connected, unnamed Unix socket whose twin (the other end of the same `socketpair()`, whose
/// inodes the kernel allocates together) the process also holds: an in-process wake-up channel
/// such as tokio's signal driver or a self-pipe, kept by design for the process's life. It
/// reaches nothing outside the process; a pair leaked per request still shows as leak-growth.
fn in_process_pair(socket: &crate::model::Socket, snapshot: &Snapshot) -> bool {
    let unnamed_connected = |s: &crate::model::Socket| {
        s.proto == Proto::Unix && s.local.is_empty() && s.state == "CONNECTED"
    };
    unnamed_connected(socket)
        && snapshot.sockets.iter().any(|other| {
            unnamed_connected(other)
                && (other.inode == socket.inode + 1 || other.inode + 1 == socket.inode)
        })
}

/// `exit_view`: the command's descendants as seen when it exited (the sample at its exit,
/// else its last sample). Zombies in it are the children it left unreaped; they are blamed
/// even if they were re-parented and reaped since. A child that ends just after the command
/// (a helper that stops when its parent's pipe closes) is a zombie at the first look too, but
/// it was not left unreaped. Without any sample, every zombie at the first look is blamed.
fn settle_leftovers(options: &CheckOptions, exit_view: Option<&Snapshot>) -> Leftovers {
    let me = std::process::id();
    let first = tree::descendants(me);
    let zombies: Vec<Leftover> = match exit_view {
        Some(view) => view
            .zombies()
            .map(|c| Leftover {
                pid: c.pid,
                ppid: c.ppid,
                state: ProcState::Zombie,
                cmd: c.cmd.clone(),
            })
            .collect(),
        None => first
            .iter()
            .filter(|p| p.state == ProcState::Zombie)
            .cloned()
            .collect(),
    };
    let zombie_pids: BTreeSet<u32> = zombies.iter().map(|p| p.pid).collect();
    let deadline = Instant::now() + options.settle;
    let mut wait = Duration::from_millis(1);
    let mut alive;
    loop {
        let now = tree::descendants(me);
        alive = now
            .iter()
            .filter(|p| p.state != ProcState::Zombie)
            .cloned()
            .collect::<Vec<_>>();
        // Orphans that finished while we waited are ours to reap; they are not leaks.
        for p in now.iter().filter(|p| {
            p.state == ProcState::Zombie && p.ppid == me && !zombie_pids.contains(&p.pid)
        }) {
            tree::reap(p.pid);
        }
        if alive.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
        wait = (wait * 2).min(Duration::from_millis(100));
    }
    let killed = !alive.is_empty() && !options.keep_orphans;
    if killed {
        tree::kill_all(
            &alive.iter().map(|p| p.pid).collect::<Vec<_>>(),
            Duration::from_millis(500),
        );
    }
    tree::reap_children();
    Leftovers {
        zombies,
        alive,
        killed,
        settle: options.settle,
    }
}

fn spawn_error(program: &str, e: &std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "command not found: '{program}': check the name, or give its path (PATH is searched)"
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "cannot run '{program}': permission denied: make it executable (chmod +x)"
        ),
        _ => anyhow::anyhow!("cannot run '{program}': {e}"),
    }
}

/// Where a report goes: `--format` for stdout, `--output [FORMAT:]FILE` for files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Junit,
    Sarif,
}

impl std::str::FromStr for ReportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(ReportFormat::Text),
            "json" => Ok(ReportFormat::Json),
            "junit" => Ok(ReportFormat::Junit),
            "sarif" => Ok(ReportFormat::Sarif),
            other => Err(format!(
                "unknown report format '{other}': use text, json, junit or sarif"
            )),
        }
    }
}

/// Parses `--output [FORMAT:]FILE`: the prefix, else the extension (.json, .xml = junit,
/// .sarif, .txt = text).
pub fn parse_output(spec: &str) -> Result<(ReportFormat, PathBuf), String> {
    if let Some((prefix, path)) = spec.split_once(':')
        && let Ok(format) = prefix.parse::<ReportFormat>()
    {
        if path.is_empty() {
            return Err(format!("--output {spec}: no file after '{prefix}:'"));
        }
        return Ok((format, PathBuf::from(path)));
    }
    let path = PathBuf::from(spec);
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => ReportFormat::Json,
        Some("xml") => ReportFormat::Junit,
        Some("sarif") => ReportFormat::Sarif,
        Some("txt") => ReportFormat::Text,
        _ => {
            return Err(format!(
                "--output {spec}: cannot tell the format: end the name in .json, .xml (junit), .sarif or .txt, or write FORMAT:FILE"
            ));
        }
    };
    Ok((format, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(inode: u64, local: &str, state: &str) -> crate::model::Socket {
        crate::model::Socket {
            proto: Proto::Unix,
            local: local.into(),
            remote: String::new(),
            state: state.into(),
            inode,
            fd: None,
            rx_queue: 0,
            tx_queue: 0,
        }
    }

    #[test]
    fn a_socketpair_held_whole_is_in_process_and_a_lone_socket_is_not() {
        let pair = Snapshot {
            sockets: vec![unix(100, "", "CONNECTED"), unix(101, "", "CONNECTED")],
            ..Default::default()
        };
        assert!(in_process_pair(&pair.sockets[0], &pair));
        assert!(in_process_pair(&pair.sockets[1], &pair));

        // One end only (the peer is another process), or a named socket beside it: judged.
        let lone = Snapshot {
            sockets: vec![
                unix(100, "", "CONNECTED"),
                unix(101, "/run/x.sock", "CONNECTED"),
            ],
            ..Default::default()
        };
        assert!(!in_process_pair(&lone.sockets[0], &lone));
        let apart = Snapshot {
            sockets: vec![unix(100, "", "CONNECTED"), unix(205, "", "CONNECTED")],
            ..Default::default()
        };
        assert!(!in_process_pair(&apart.sockets[0], &apart));
    }
    use crate::model::{Fd, ProbeData, Proto, Socket, Thread};

    fn finding(sev: Severity) -> Finding {
        Finding::new("x", sev, "s", "m")
    }

    #[test]
    fn exit_status_never_masks_the_command() {
        let ok = CommandExit {
            code: Some(0),
            signal: None,
        };
        let failed = CommandExit {
            code: Some(3),
            signal: None,
        };
        let killed = CommandExit {
            code: None,
            signal: Some(9),
        };
        let warn = [finding(Severity::Warning)];
        assert_eq!(exit_code(ok, &[], Severity::Warning), 0);
        assert_eq!(exit_code(ok, &warn, Severity::Warning), 1);
        assert_eq!(exit_code(ok, &warn, Severity::Error), 0);
        assert_eq!(exit_code(ok, &[finding(Severity::Info)], Severity::Info), 1);
        assert_eq!(exit_code(failed, &warn, Severity::Warning), 3);
        assert_eq!(exit_code(failed, &[], Severity::Warning), 3);
        assert_eq!(exit_code(killed, &[], Severity::Warning), 137);
    }

    #[test]
    fn output_specs() {
        assert_eq!(
            parse_output("junit:out/report").unwrap(),
            (ReportFormat::Junit, PathBuf::from("out/report"))
        );
        assert_eq!(parse_output("r.sarif").unwrap().0, ReportFormat::Sarif);
        assert_eq!(parse_output("r.xml").unwrap().0, ReportFormat::Junit);
        assert_eq!(parse_output("r.json").unwrap().0, ReportFormat::Json);
        assert!(parse_output("report").unwrap_err().contains(".sarif"));
        assert!(parse_output("sarif:").unwrap_err().contains("no file"));
        // A Windows-ish or odd prefix that is not a format is part of the path.
        assert_eq!(parse_output("c:/x.json").unwrap().0, ReportFormat::Json);
    }

    fn leftover(pid: u32, state: ProcState) -> Leftover {
        Leftover {
            pid,
            ppid: 1,
            state,
            cmd: "sleep 30".into(),
        }
    }

    #[test]
    fn leftovers_become_findings() {
        let left = Leftovers {
            zombies: vec![leftover(7, ProcState::Zombie)],
            alive: vec![leftover(8, ProcState::Sleeping)],
            killed: true,
            settle: Duration::from_secs(2),
        };
        let f = judge_leftovers(&left);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].rule, ORPHAN_CHILD);
        assert_eq!(f[0].subject, "pid:8");
        assert!(f[0].message.contains("killed"), "{}", f[0].message);
        assert_eq!(f[1].rule, ZOMBIE_CHILD);
        assert!(judge_leftovers(&Leftovers::default()).is_empty());
    }

    fn snap(fds: &[(i32, &str)], tids: &[u32]) -> Snapshot {
        Snapshot {
            pid: 100,
            fd_list: Some(
                fds.iter()
                    .map(|(fd, t)| Fd {
                        fd: *fd,
                        kind: if t.starts_with("socket:") {
                            FdKind::Socket
                        } else {
                            FdKind::File
                        },
                        target: t.to_string(),
                    })
                    .collect(),
            ),
            threads: tids
                .iter()
                .map(|tid| Thread {
                    tid: *tid,
                    name: format!("t{tid}"),
                    ..Default::default()
                })
                .collect(),
            sockets: vec![Socket {
                proto: Proto::Unix,
                local: "/tmp/lh/100.sock".into(),
                remote: String::new(),
                state: "LISTEN".into(),
                inode: 55,
                fd: Some(5),
                rx_queue: 0,
                tx_queue: 0,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_things_held_to_the_end_count() {
        let first = snap(&[(0, "/dev/null"), (3, "/etc/base")], &[100]);
        // fd 4 held in both final samples: a leak. fd 6 appears only in the last: work in
        // progress. fd 7 changed target between the two: reused, not held. fd 5 is the probe.
        let mid = snap(
            &[
                (3, "/etc/base"),
                (4, "/tmp/leak"),
                (5, "socket:[55]"),
                (7, "/tmp/a"),
            ],
            &[100, 101, 102],
        );
        let last = snap(
            &[
                (3, "/etc/base"),
                (4, "/tmp/leak"),
                (5, "socket:[55]"),
                (6, "/tmp/busy"),
                (7, "/tmp/b"),
            ],
            &[100, 101, 103],
        );
        let f = left_open(&[&first, &mid, &last], None, "/tmp/lh", false);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, vec!["fd:4", "thread:t101"]);
        assert!(f[0].message.contains("/tmp/leak"));
        // Too few samples to tell held from busy: say nothing.
        assert!(left_open(&[&first, &last], None, "/tmp/lh", false).is_empty());
        // Seen at the exit itself, fd 6 counts (opened late, never closed) and fd 4 does not
        // when it was closed before the exit.
        let exit = snap(&[(3, "/etc/base"), (6, "/tmp/busy")], &[100]);
        let f = left_open(&[&first, &mid, &last], Some(&exit), "/tmp/lh", false);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, vec!["fd:6"]);
    }

    #[test]
    fn a_shell_holding_the_script_it_sources_is_not_a_leak() {
        let as_shell = |mut s: Snapshot, name: &str| {
            s.process = Some(crate::model::Process {
                name: "wrapper".into(),
                cmd: format!("/usr/bin/{name} /usr/bin/wrapper --flag"),
                ..Default::default()
            });
            s
        };
        let first = snap(&[(255, "/usr/bin/wrapper")], &[100]);
        let fds = [(255, "/usr/lib/hooks/rehash.bash"), (4, "/tmp/out")];
        let exit = snap(&fds, &[100]);
        let subjects = |name: &str| -> Vec<String> {
            let (first, exit) = (as_shell(first.clone(), name), as_shell(exit.clone(), name));
            left_open(&[&first, &exit], Some(&exit), "/tmp/lh", false)
                .into_iter()
                .map(|f| f.subject)
                .collect()
        };
        // A bash script: the sourced hook on fd 255 is the shell's; fd 4 (a redirection) counts.
        assert_eq!(subjects("bash"), vec!["fd:4"]);
        // Any other program: both count.
        assert_eq!(subjects("python3"), vec!["fd:255", "fd:4"]);
    }

    #[test]
    fn a_tokio_runtime_left_running_is_named_and_a_naming_probe_vouches_for_unnamed_threads() {
        let tokio_view = |tids: &[u32], probe: Option<ProbeData>| {
            let mut s = snap(&[], tids);
            for t in s.threads.iter_mut().filter(|t| t.tid != 100) {
                t.name = "tokio-rt-worker".into();
            }
            s.probe = probe;
            s
        };
        // The Rust probe names no threads: /proc's names are judged, and tokio's are said so.
        let rust_probe = || Some(ProbeData::default());
        let first = tokio_view(&[100], rust_probe());
        let mid = tokio_view(&[100, 101], rust_probe());
        let last = tokio_view(&[100, 101], rust_probe());
        let f = left_open(&[&first, &mid, &last], None, "/tmp/lh", false);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject, "thread:tokio-rt-worker");
        assert!(f[0].message.contains("tokio runtime"), "{}", f[0].message);
        assert_eq!(f[0].evidence["runtime"], "tokio");
        // Several workers of one runtime: one finding that names every one of them.
        let mid = tokio_view(&[100, 101, 102, 103], rust_probe());
        let last = tokio_view(&[100, 101, 102, 103], rust_probe());
        let f = left_open(&[&first, &mid, &last], None, "/tmp/lh", false);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["tids"], serde_json::json!([101, 102, 103]));
        assert!(
            f[0].message
                .starts_with("3 threads 'tokio-rt-worker' (tids 101, 102, 103,"),
            "{}",
            f[0].message
        );
        // A probe that names threads and never named this one: its own, not judged.
        let naming = || {
            Some(ProbeData {
                threads: vec![crate::model::ProbeThread {
                    native_id: 100,
                    name: "MainThread".into(),
                    ..Default::default()
                }],
                ..ProbeData::default()
            })
        };
        let (first, mid, last) = (
            tokio_view(&[100], naming()),
            tokio_view(&[100, 101], naming()),
            tokio_view(&[100, 101], naming()),
        );
        assert!(left_open(&[&first, &mid, &last], None, "/tmp/lh", false).is_empty());
    }
}
