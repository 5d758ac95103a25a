//! `leakhound check -- CMD`: run a command under observation and decide a verdict for CI.
//!
//! The runner (I/O) starts the command with the probes told where to listen, samples it while
//! it runs (source → History → rules), and when it ends looks at what is left: descendants
//! still alive, zombies, descriptors and threads that appeared during the run and were still
//! there at the end, and the probes' final reports. The judging is pure functions over that
//! data (the exit-time rules in `rules`, [`crate::verdict::exit_code`]), so it is tested
//! without processes; which findings are kept is [`dedup`], the pytest plugin's report
//! [`pytest`].

pub mod dedup;
pub mod exit_stop;
pub mod ignore;
pub mod pytest;
pub mod settings;
pub mod tree;

use crate::config::Config;
use crate::findings::{Finding, Severity, sort_findings};
use crate::judge::Judge;
use crate::model::{ProcState, Snapshot};
use crate::rules::at_exit::{Leftover, Leftovers};
use crate::rules::{judge_leftovers, left_open};
use crate::source::{SampleOptions, Target};
use crate::verdict::{CheckReport, CommandExit, exit_code, interrupted_exit_code, signal_name};
use dedup::Collected;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Everything `check` needs to run, already validated.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub command: Vec<String>,
    pub config: Config,
    pub interval: Duration,
    pub settle: Duration,
    pub keep_orphans: bool,
    pub fail_on: Severity,
    /// The severity of daemon threads left running at exit (info unless the user asks).
    pub daemon_threads: Severity,
    pub ignores: Vec<ignore::Ignore>,
    /// Polled while the command runs and while it settles: the SIGINT or SIGTERM leakhound
    /// received, if any (the CLI's signal handler; `|| None` for none).
    pub interrupt: fn() -> Option<Interrupt>,
}

/// A signal that asks `check` to stop: a CI cancel (SIGTERM) or Ctrl-C (SIGINT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    pub signal: i32,
    /// The terminal sent it (Ctrl-C): it reached the command's process group already, so it
    /// is not sent to the command again.
    pub from_terminal: bool,
    /// How many such signals have come since the handler was installed: a second one means
    /// "stop waiting".
    pub count: u32,
}

/// How long the command gets to end after an interruption is passed on, shared with the
/// settle step so the whole run ends within about `settle` (plus the kill grace) of the signal.
struct Stopping {
    signal: Interrupt,
    deadline: Instant,
    /// leakhound killed the command: the deadline passed, or a second signal came.
    killed: bool,
    /// It was the second signal, before the deadline.
    cut_short: bool,
}

/// One process under observation: its source, its history for the rules, and the samples the
/// exit-time diff needs (the first, as the baseline, and the last two).
struct Watched {
    pid: u32,
    source: Option<Box<dyn crate::source::Source>>,
    /// History → rules → tracker, the stage `watch` and the dashboard judge with.
    judge: Judge,
    baseline: Option<Snapshot>,
    recent: Vec<Snapshot>,
    /// When leakhound started this process itself (the command), ms since the epoch.
    started_ms: Option<u64>,
    /// For the command itself: its first view (see [`start_view`]).
    start_view: Option<Snapshot>,
}

impl Watched {
    fn new(pid: u32, source: Box<dyn crate::source::Source>, config: &Config) -> Self {
        Watched {
            source: Some(source),
            ..Watched::closed(pid, config)
        }
    }

    fn closed(pid: u32, config: &Config) -> Self {
        Watched {
            pid,
            source: None,
            judge: Judge::new(config.clone()),
            baseline: None,
            recent: Vec::new(),
            started_ms: None,
            start_view: None,
        }
    }

    /// Takes one sample and runs the rules; false when there was nothing to sample (gone).
    fn sample(&mut self, out: &mut Collected) -> bool {
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
        if self.judge.history().is_empty()
            && let Some(started_ms) = self.started_ms
        {
            // The command had no children before it started. Saying so keeps zombie-child
            // from crediting a child caught as a zombie in the first sample with its whole
            // age (right when leakhound attaches to a process of unknown past, not here).
            self.judge.push(Snapshot {
                taken_at_ms: started_ms.min(snapshot.taken_at_ms.saturating_sub(1)),
                children: Vec::new(),
                ..snapshot.clone()
            });
        }
        self.judge(snapshot.clone(), out);
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
    fn judge_final(&mut self, data: crate::model::ProbeData, out: &mut Collected) {
        let mut last = self
            .judge
            .history()
            .latest()
            .cloned()
            .unwrap_or_else(|| Snapshot {
                pid: self.pid,
                ..Default::default()
            });
        last.taken_at_ms = crate::source::now_ms().max(last.taken_at_ms);
        last.probe = Some(data);
        self.judge(last, out);
    }

    /// The one judging step while the command runs: the view joins the history, the rules run
    /// over it, and what they find is collected for this process.
    fn judge(&mut self, view: Snapshot, out: &mut Collected) {
        out.add(self.pid, self.judge.observe(view).current);
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
    // Probes listen only in a private folder (tempfile makes it 0755): private from the start,
    // not only when inject() gets to it.
    std::fs::set_permissions(
        socket_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
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

    let mut collected = Collected::default();
    let mut samples = 0u64;
    let mut root = match crate::source::open(&Target::Pid(pid)) {
        Ok(s) => Watched {
            started_ms: Some(spawned_ms),
            ..Watched::new(pid, s, &options.config)
        },
        Err(e) => {
            notes.push(format!("no samples while the command ran: {e}"));
            Watched::closed(pid, &options.config)
        }
    };
    // Descendants that loaded a probe (a socket `<pid>.sock` in the folder), by pid.
    let mut probed: BTreeMap<u32, Watched> = BTreeMap::new();
    let mut stopping: Option<Stopping> = None;
    let status = loop {
        if root.sample(&mut collected) {
            samples += 1;
        }
        for child_pid in probe_pids(socket_dir.path()) {
            if child_pid == pid || probed.contains_key(&child_pid) {
                continue;
            }
            if let Ok(src) = crate::source::open(&Target::Pid(child_pid)) {
                probed.insert(child_pid, Watched::new(child_pid, src, &options.config));
            }
        }
        for watched in probed.values_mut() {
            watched.sample(&mut collected);
        }
        // Wait for the next sample in short slices, so a signal is passed on at once.
        let next = Instant::now() + options.interval;
        let ended = loop {
            pass_on_interrupt(options, pid, &mut stopping);
            let slice = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            match rx.recv_timeout(slice) {
                Ok(status) => break Some(status),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() >= next => {
                    break None;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("lost track of the command (pid {pid}): its waiter thread ended")
                }
            }
        };
        if let Some(status) = ended {
            break status;
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
                .or_insert_with(|| Watched::closed(report.pid, &options.config))
        };
        watched.judge_final(report.data, &mut collected);
    }
    // The /proc diff only adds what the probes did not already say (theirs has stacks).
    let root_window = root.window();
    collected.add_new(
        pid,
        left_open(
            &root_window,
            at_exit.as_ref(),
            &socket_dir_str,
            final_pids.contains(&pid),
        ),
    );
    for (child_pid, watched) in &probed {
        let window = watched.window();
        collected.add_new(
            *child_pid,
            left_open(
                &window,
                None,
                &socket_dir_str,
                final_pids.contains(child_pid),
            ),
        );
    }
    // The pytest plugin's per-test findings, each naming its test. They say better what the
    // process-wide view says of the same process (which test, where), so they replace it.
    let (tests, test_notes) = pytest::read_test_findings(socket_dir.path());
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
    let settle_until = stopping
        .as_ref()
        .map_or_else(|| Instant::now() + options.settle, |s| s.deadline);
    let leftovers = settle_leftovers(options, exit_view, settle_until);
    collected.add(pid, judge_leftovers(&leftovers));
    // A signal while the command ran, or one that came while it settled.
    let interrupt = stopping
        .as_ref()
        .map(|s| s.signal)
        .or_else(|| (options.interrupt)());
    if let Some(signal) = interrupt {
        notes.push(interruption_note(
            signal,
            stopping.as_ref(),
            exit,
            options.settle,
        ));
    }

    let mut findings: Vec<Finding> = collected.into_findings();
    crate::rules::thread_leak::set_daemon_severity(&mut findings, options.daemon_threads);
    sort_findings(&mut findings);
    let applied = ignore::apply(&options.ignores, findings);
    let exit_code = match interrupt {
        Some(i) => interrupted_exit_code(exit, i.signal),
        None => exit_code(exit, &applied.kept, options.fail_on),
    };
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
        interrupted: interrupt.map(|i| signal_name(i.signal)),
        exit_code,
    })
}

/// Looks at what is left under leakhound, waiting with bounded exponential backoff (1 ms,
/// 2 ms, … capped at 100 ms, for at most `settle`) for descendants still running to finish;
/// a clean command costs one scan. Children that finish while we wait are reaped and not
/// blamed; zombies present at the first look are.
///
/// `exit_view`: the command's descendants as seen when it exited (the sample at its exit,
/// else its last sample). Zombies in it are the children it left unreaped; they are blamed
/// even if they were re-parented and reaped since. A child that ends just after the command
/// (a helper that stops when its parent's pipe closes) is a zombie at the first look too, but
/// it was not left unreaped. Without any sample, every zombie at the first look is blamed.
///
/// An interruption (see [`CheckOptions::interrupt`]) ends the wait: what is still running is
/// killed then, `--keep-orphans` or not, since a cancelled run must not leave its tree behind.
fn settle_leftovers(
    options: &CheckOptions,
    exit_view: Option<&Snapshot>,
    deadline: Instant,
) -> Leftovers {
    let me = std::process::id();
    let began = Instant::now();
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
        if alive.is_empty() || Instant::now() >= deadline || (options.interrupt)().is_some() {
            break;
        }
        std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
        wait = (wait * 2).min(Duration::from_millis(100));
    }
    let interrupted = (options.interrupt)().is_some();
    let killed = !alive.is_empty() && (!options.keep_orphans || interrupted);
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
        // Interrupted, the wait ended early: the findings say how long they really had.
        settle: if interrupted {
            began.elapsed().min(options.settle)
        } else {
            options.settle
        },
    }
}

/// Passes a signal leakhound received on to the command (unless the terminal already sent it
/// to the whole process group), then kills the command once the settle time has passed
/// without it ending, or at once on a second signal (Ctrl-C pressed again). The waiter thread
/// reaps it either way.
fn pass_on_interrupt(options: &CheckOptions, pid: u32, stopping: &mut Option<Stopping>) {
    if stopping.is_none()
        && let Some(signal) = (options.interrupt)()
    {
        if !signal.from_terminal {
            // SAFETY: kill(2) with our own child's pid; the result only says whether it was
            // still there.
            unsafe { libc::kill(pid as libc::pid_t, signal.signal) };
        }
        *stopping = Some(Stopping {
            signal,
            deadline: Instant::now() + options.settle,
            killed: false,
            cut_short: false,
        });
    }
    let Some(s) = stopping.as_mut().filter(|s| !s.killed) else {
        return;
    };
    // Counted since the handler was installed: any after the first is a second.
    let again = (options.interrupt)().is_some_and(|now| now.count > 1);
    if again || Instant::now() >= s.deadline {
        s.cut_short = Instant::now() < s.deadline;
        // SAFETY: as above; SIGKILL cannot be caught, so the waiter sees it end.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        s.killed = true;
    }
}

/// What the reports say about an interruption: which signal, and what became of the command.
fn interruption_note(
    signal: Interrupt,
    stopping: Option<&Stopping>,
    exit: CommandExit,
    settle: Duration,
) -> String {
    let name = signal_name(signal.signal);
    let how = match stopping {
        None => "it came after the command had ended; what was still running was killed".into(),
        Some(s) if s.cut_short => "a second signal came before the command ended, and \
             leakhound killed it and what it had started"
            .into(),
        Some(s) if s.killed => format!(
            "the command did not end within {:.1} s (--settle) and leakhound killed it and \
             what it had started",
            settle.as_secs_f64()
        ),
        Some(_) if signal.from_terminal => format!(
            "the terminal sent it to the command too, which ended with {}",
            exit.describe()
        ),
        Some(_) => format!(
            "leakhound passed it on to the command, which ended with {}",
            exit.describe()
        ),
    };
    format!("interrupted by {name}: {how}; the findings are what was seen until then")
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
