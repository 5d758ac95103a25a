//! Stopping every thread of a process at once, for one consistent read of its memory.
//!
//! py-spy's own lock (remoteprocess's `Process::lock`) stops the threads one after another:
//! seize, interrupt, wait until it stops, next. 100 threads are 100 round trips through the
//! scheduler, and the first thread stays stopped through all of them (50-90 ms measured on a
//! loaded machine, benches/python_outside.md). Here every thread is seized first (which does
//! not stop it), then all are interrupted, then all are waited for: they stop in parallel.
//! /proc/PID/task is read again until it lists no thread that is not stopped yet (one started
//! meanwhile), and every thread is detached when the lock is dropped.
//!
//! ptrace ties a tracee to the tracer *thread*, and the kernel detaches a thread's tracees
//! when it exits. [`with_stopped`] takes the lock and runs the read on a thread of its own:
//! whatever happens (an error, a panic, a thread of the target that does not stop before the
//! deadline and so cannot be detached yet), the target is not left stopped once it returns.

use crate::model::ProcState;
use crate::source::procfs::parse::read_stat;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Why the target's threads could not all be stopped; the lock is released in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopError {
    /// ptrace refused a live thread (ptrace_scope, another user, no CAP_SYS_PTRACE).
    Denied,
    /// Another tracer (a debugger, strace) holds the thread.
    Traced { tid: u32, tracer: u32 },
    /// No thread of the process is left.
    Gone,
    /// A thread had not stopped by the deadline (e.g. in an uninterruptible wait).
    Slow { tid: u32, waited: Duration },
    /// Any other ptrace or wait error.
    Os(String),
}

impl std::fmt::Display for StopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopError::Denied => write!(f, "ptrace was refused"),
            StopError::Traced { tid, tracer } => {
                write!(f, "thread {tid} is already traced by pid {tracer}")
            }
            StopError::Gone => write!(f, "the process has exited"),
            StopError::Slow { tid, waited } => write!(
                f,
                "thread {tid} did not stop within {} ms",
                waited.as_millis()
            ),
            StopError::Os(e) => write!(f, "{e}"),
        }
    }
}

/// Stops every thread of `pid`, runs `read`, and lets the threads go. A thread that has not
/// stopped within `deadline` fails the lock (`StopError::Slow`) without running `read`.
/// A panic in `read` is passed on once every thread is let go.
pub fn with_stopped<T: Send>(
    pid: u32,
    deadline: Duration,
    read: impl FnOnce() -> T + Send,
) -> Result<T, StopError> {
    std::thread::scope(|scope| {
        let tracer = std::thread::Builder::new()
            .name("leakhound-ptrace".into())
            .spawn_scoped(scope, move || {
                let lock = Lock::stop(pid, deadline)?;
                let out = read();
                drop(lock);
                Ok(out)
            })
            .map_err(|e| StopError::Os(format!("no thread to stop the target from: {e}")))?;
        tracer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Seized and interrupted, not seen stopped yet.
    Pending,
    Stopped,
    /// Exited (or not our tracee any more): nothing to detach.
    Gone,
}

struct Tracee {
    tid: libc::pid_t,
    state: State,
}

/// The target's threads, each seized by the current thread. Not `Send`: ptrace answers only
/// the thread that seized.
struct Lock {
    threads: Vec<Tracee>,
    _tracer_thread: std::marker::PhantomData<*const ()>,
}

/// What one `waitpid(WNOHANG)` saw of a tracee.
enum Seen {
    Running,
    Stopped,
    Gone,
    /// A signal on its way to the thread (not ours): deliver it and keep waiting.
    Signal(libc::c_int),
}

impl Lock {
    fn stop(pid: u32, deadline: Duration) -> Result<Lock, StopError> {
        let until = Instant::now() + deadline;
        let mut lock = Lock {
            threads: Vec::new(),
            _tracer_thread: std::marker::PhantomData,
        };
        let mut tried = HashSet::new();
        loop {
            let new: Vec<u32> = task_ids(pid)
                .into_iter()
                .filter(|tid| tried.insert(*tid))
                .collect();
            if new.is_empty() {
                break;
            }
            let first = lock.threads.len();
            // Seizing does not stop a thread: seize them all, then interrupt them all, so
            // that they stop together.
            for tid in new {
                match seize(tid) {
                    Ok(()) => lock.threads.push(Tracee {
                        tid: tid as libc::pid_t,
                        state: State::Pending,
                    }),
                    // Exited, or exiting (a zombie cannot be traced: EPERM).
                    Err(e) if e == libc::ESRCH || !alive(pid, tid) => {}
                    Err(libc::EPERM) => {
                        return Err(match tracer_of(pid, tid) {
                            Some(tracer) => StopError::Traced { tid, tracer },
                            None => StopError::Denied,
                        });
                    }
                    Err(e) => {
                        return Err(StopError::Os(format!(
                            "ptrace seize of thread {tid}: {}",
                            std::io::Error::from_raw_os_error(e)
                        )));
                    }
                }
            }
            for t in &lock.threads[first..] {
                // A thread that exited since is seen as such by the wait below.
                // SAFETY: PTRACE_INTERRUPT takes no pointers.
                unsafe { libc::ptrace(libc::PTRACE_INTERRUPT as _, t.tid, 0usize, 0usize) };
            }
            lock.wait(until, deadline)?;
        }
        if lock.threads.iter().all(|t| t.state == State::Gone) {
            return Err(StopError::Gone);
        }
        Ok(lock)
    }

    /// Waits until no thread is pending, polling (a blocking waitpid has no deadline).
    fn wait(&mut self, until: Instant, deadline: Duration) -> Result<(), StopError> {
        let mut nap = Duration::from_micros(20);
        loop {
            let mut pending = None;
            let mut progress = false;
            for t in self
                .threads
                .iter_mut()
                .filter(|t| t.state == State::Pending)
            {
                match poll(t.tid) {
                    Seen::Running => {
                        pending.get_or_insert(t.tid);
                        continue;
                    }
                    Seen::Stopped => t.state = State::Stopped,
                    Seen::Gone => t.state = State::Gone,
                    Seen::Signal(sig) => {
                        // Re-injected; the interrupt is still pending and stops it next.
                        // SAFETY: PTRACE_CONT takes the signal number as data, no pointers.
                        let r = unsafe {
                            libc::ptrace(libc::PTRACE_CONT as _, t.tid, 0usize, sig as usize)
                        };
                        if r == -1 && errno() == libc::ESRCH {
                            t.state = State::Gone;
                        } else {
                            pending.get_or_insert(t.tid);
                        }
                    }
                }
                progress = true;
            }
            let Some(tid) = pending else {
                return Ok(());
            };
            if Instant::now() >= until {
                return Err(StopError::Slow {
                    tid: tid as u32,
                    waited: deadline,
                });
            }
            if progress {
                nap = Duration::from_micros(20);
            } else {
                // The threads to stop need the CPU that a busy poll would take.
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        for t in &mut self.threads {
            let signal = match t.state {
                State::Gone => continue,
                State::Stopped => 0,
                // Not seen stopped: one last look. Still running, it is detached by the
                // kernel when this (tracer) thread exits (see `with_stopped`).
                State::Pending => match poll(t.tid) {
                    Seen::Stopped => 0,
                    Seen::Signal(sig) => sig,
                    Seen::Running | Seen::Gone => continue,
                },
            };
            // SAFETY: PTRACE_DETACH takes the signal to deliver as data, no pointers.
            let r =
                unsafe { libc::ptrace(libc::PTRACE_DETACH as _, t.tid, 0usize, signal as usize) };
            if r == -1 {
                // Killed meanwhile: collect its exit status, if it is there yet.
                poll(t.tid);
            }
            t.state = State::Gone;
        }
    }
}

fn errno() -> libc::c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// PTRACE_SEIZE, stopping at exit too (PTRACE_O_TRACEEXIT, as remoteprocess does: an exiting
/// thread then stops where its wait status can be read, rather than turning zombie).
fn seize(tid: u32) -> Result<(), libc::c_int> {
    // SAFETY: PTRACE_SEIZE takes the options as data, no pointers.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE as _,
            tid as libc::pid_t,
            0usize,
            libc::PTRACE_O_TRACEEXIT as usize,
        )
    };
    if r == -1 { Err(errno()) } else { Ok(()) }
}

fn poll(tid: libc::pid_t) -> Seen {
    let mut status = 0;
    // SAFETY: waitpid writes the status it is given.
    let r = unsafe { libc::waitpid(tid, &mut status, libc::WNOHANG | libc::__WALL) };
    if r == 0 || (r == -1 && errno() == libc::EINTR) {
        return Seen::Running;
    }
    if r == -1 || libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        // ECHILD: not our tracee (any more).
        return Seen::Gone;
    }
    if !libc::WIFSTOPPED(status) {
        return Seen::Running;
    }
    let event = (status >> 16) & 0xff;
    if event == libc::PTRACE_EVENT_STOP || event == libc::PTRACE_EVENT_EXIT {
        Seen::Stopped
    } else {
        Seen::Signal(libc::WSTOPSIG(status))
    }
}

/// The threads of `pid`, as /proc lists them now (empty once it has exited).
pub fn task_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A thread's state from /proc (running, sleeping, tracing stop, ...), if it is still listed.
pub fn thread_state(pid: u32, tid: u32) -> Option<ProcState> {
    read_stat(pid, Some(tid)).map(|stat| stat.state)
}

/// Listed and not dead or a zombie.
fn alive(pid: u32, tid: u32) -> bool {
    thread_state(pid, tid).is_some_and(|s| !matches!(s, ProcState::Zombie | ProcState::Dead))
}

/// The pid tracing the thread, when one is (`TracerPid` in its status).
fn tracer_of(pid: u32, tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
        .filter(|tracer| *tracer != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    #[test]
    fn a_thread_with_a_hostile_comm_has_a_state() {
        let child = crate::source::procfs::parse::hostile::spawn("/bin/sleep", &["60"]);
        let pid = child.pid();
        let state = thread_state(pid, pid);
        assert!(alive(pid, pid), "{state:?}");
        assert!(
            matches!(state, Some(ProcState::Sleeping | ProcState::Running)),
            "{state:?}"
        );
    }

    /// 50 threads that each count their ticks (1 ms apart), and a line on stdin asks for the
    /// counts. `churn`: one more thread keeps starting short-lived threads. `vfork`: one more
    /// thread waits for a vfork child that sleeps a minute (state D: a ptrace interrupt does
    /// not stop it until the child is gone).
    const TICKERS: &str = r#"
import sys, threading, time
ticks = [0] * 50
def tick(i):
    while True:
        ticks[i] += 1
        time.sleep(0.001)
for i in range(50):
    threading.Thread(target=tick, args=(i,), daemon=True).start()
def churn():
    while True:
        t = threading.Thread(target=time.sleep, args=(0.0005,), daemon=True)
        t.start()
        t.join()
def vfork():
    import ctypes
    libc = ctypes.CDLL(None)
    if libc.vfork() == 0:
        libc.usleep(60000000)
        libc._exit(0)
if sys.argv[1:] == ["churn"]:
    threading.Thread(target=churn, daemon=True).start()
if sys.argv[1:] == ["vfork"]:
    threading.Thread(target=vfork, daemon=True).start()
print("ready", flush=True)
for _ in sys.stdin:
    print(" ".join(map(str, ticks)), flush=True)
"#;

    struct Tickers {
        child: Child,
        ask: ChildStdin,
        answers: BufReader<ChildStdout>,
    }

    impl Tickers {
        fn start(args: &[&str]) -> Tickers {
            let mut child = Command::new("python3")
                .args(["-c", TICKERS])
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 runs");
            let ask = child.stdin.take().unwrap();
            let mut answers = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            answers.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
            Tickers {
                child,
                ask,
                answers,
            }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        fn ticks(&mut self) -> Vec<u64> {
            writeln!(self.ask).unwrap();
            let mut line = String::new();
            self.answers.read_line(&mut line).unwrap();
            line.split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        }

        /// Every ticker ticks again after `before`, and no thread is traced any more. Bounded
        /// generously: a thread left stopped never ticks.
        fn all_run_again(&mut self, before: &[u64]) {
            let give_up = Instant::now() + Duration::from_secs(30);
            loop {
                let now = self.ticks();
                let traced: Vec<u32> = task_ids(self.pid())
                    .into_iter()
                    .filter(|tid| tracer_of(self.pid(), *tid).is_some())
                    .collect();
                let behind = before.iter().zip(&now).filter(|(b, n)| n <= b).count();
                if behind == 0 && traced.is_empty() {
                    return;
                }
                assert!(
                    Instant::now() < give_up,
                    "{behind} tickers stopped for good, threads still traced: {traced:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Tickers {
        fn drop(&mut self) {
            // The vfork child first (it outlives its parent).
            for tid in task_ids(self.pid()) {
                let children =
                    std::fs::read_to_string(format!("/proc/{}/task/{tid}/children", self.pid()));
                for child in children.unwrap_or_default().split_whitespace() {
                    if let Ok(child) = child.parse::<i32>() {
                        // SAFETY: kill takes no pointers.
                        unsafe { libc::kill(child, libc::SIGKILL) };
                    }
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Every thread's state while the lock is held, and how many.
    /// Every thread read is in tracing stop.
    fn assert_all_stopped(states: &[(u32, Option<ProcState>)]) {
        let running: Vec<_> = states
            .iter()
            .filter(|(_, s)| *s != Some(ProcState::TracingStop))
            .collect();
        assert!(running.is_empty(), "not stopped: {running:?}");
    }

    fn states_while_stopped(pid: u32) -> Result<Vec<(u32, Option<ProcState>)>, StopError> {
        with_stopped(pid, Duration::from_secs(5), || {
            task_ids(pid)
                .into_iter()
                .map(|tid| (tid, thread_state(pid, tid)))
                .collect()
        })
    }

    #[test]
    fn every_thread_is_stopped_during_the_read_and_runs_again_after() {
        let mut target = Tickers::start(&[]);
        let before = target.ticks();
        let states = states_while_stopped(target.pid()).expect("stopped");
        assert!(states.len() > 50, "{states:?}");
        assert_all_stopped(&states);
        target.all_run_again(&before);
    }

    #[test]
    fn threads_started_and_ended_meanwhile_are_stopped_too_and_all_let_go() {
        let mut target = Tickers::start(&["churn"]);
        for _ in 0..20 {
            let before = target.ticks();
            let states = states_while_stopped(target.pid()).expect("stopped");
            // Every thread /proc lists is stopped (an exiting one stops at its exit).
            assert_all_stopped(&states);
            target.all_run_again(&before);
        }
    }

    #[test]
    fn a_panic_in_the_read_or_a_missed_deadline_still_lets_every_thread_go() {
        let mut target = Tickers::start(&[]);
        let pid = target.pid();
        let before = target.ticks();
        let panicked = std::panic::catch_unwind(|| {
            with_stopped(pid, Duration::from_secs(5), || panic!("a torn read"))
        });
        assert!(panicked.is_err());
        target.all_run_again(&before);
        // No time at all to stop: either some thread is still on its way (Slow) or, rarely,
        // all stopped at once; the read runs only in the second case, and either way the
        // threads go on.
        let before = target.ticks();
        match with_stopped(pid, Duration::ZERO, || ()) {
            Ok(()) | Err(StopError::Slow { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        target.all_run_again(&before);
    }

    #[test]
    fn a_thread_that_cannot_stop_fails_the_lock_at_the_deadline_and_the_others_run_on() {
        let mut target = Tickers::start(&["vfork"]);
        let pid = target.pid();
        let give_up = Instant::now() + Duration::from_secs(30);
        let waiting = loop {
            let d = task_ids(pid)
                .into_iter()
                .find(|tid| thread_state(pid, *tid) == Some(ProcState::DiskSleep));
            if let Some(tid) = d {
                break tid;
            }
            assert!(
                Instant::now() < give_up,
                "no thread waits for its vfork child"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let before = target.ticks();
        // Without the deadline this would wait for the child (a minute), then succeed.
        let read = with_stopped(pid, Duration::from_millis(200), || ());
        assert_eq!(
            read,
            Err(StopError::Slow {
                tid: waiting,
                waited: Duration::from_millis(200)
            })
        );
        target.all_run_again(&before);
    }

    #[test]
    fn a_process_that_is_gone_or_traced_already_is_named_as_such() {
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        assert_eq!(
            with_stopped(pid, Duration::from_secs(1), || ()),
            Err(StopError::Gone)
        );
        let target = Tickers::start(&[]);
        let pid = target.pid();
        // While one lock holds the target, a second (from another thread, as another
        // tracer would be) is refused, naming the first one's tracer thread.
        let (first, second) = with_stopped(pid, Duration::from_secs(5), || {
            // SAFETY: gettid has no preconditions.
            let me = unsafe { libc::gettid() } as u32;
            (me, with_stopped(pid, Duration::from_secs(5), || ()))
        })
        .expect("the first lock");
        match second {
            Err(StopError::Traced { tracer, .. }) => assert_eq!(tracer, first),
            other => panic!("{other:?}"),
        }
    }
}
