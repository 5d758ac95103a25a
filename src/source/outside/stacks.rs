//! Reading every Python thread's stack of a running CPython from outside, with the `py-spy`
//! crate: its memory reads go through `process_vm_readv`. py-spy always reads without
//! stopping the target; in blocking mode every thread of the target is stopped for the length
//! of one read by our own lock ([`super::lock`]: all threads at once, where py-spy's stops them
//! one by one), and let go on every path.

use super::lock::{self, StopError, task_ids, thread_state};
use super::run_once::{IterationRead, IterationReader};
use crate::model::{ProcState, PyStack};
use crate::source::SourceError;
use std::time::{Duration, Instant};

/// How long a blocking read waits for the target's threads to stop; a thread that takes
/// longer (an uninterruptible wait in the kernel) makes it a non-blocking read.
pub const STOP_DEADLINE: Duration = Duration::from_millis(200);

/// One Python frame, as py-spy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub func: String,
    pub file: String,
    pub line: i32,
}

impl Frame {
    /// The function's own name without its class (`run_forever` for
    /// `BaseEventLoop.run_forever`, which 3.11+ reports as the qualified name).
    pub fn short_func(&self) -> &str {
        self.func.rsplit('.').next().unwrap_or(&self.func)
    }

    /// Slash-separated path ends, so a Windows-looking path never matters here.
    pub fn file_ends_with(&self, tail: &str) -> bool {
        self.file.ends_with(tail)
    }
}

impl std::fmt::Display for Frame {
    /// `file:line in func`, the form every stack in the model has.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} in {}", self.file, self.line, self.func)
    }
}

/// One Python thread at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadStack {
    /// OS thread id (what /proc shows); `None` when py-spy could not map the thread.
    pub tid: Option<u32>,
    /// The interpreter's id for the thread (its `pthread_t`, `threading.get_ident()`).
    pub python_id: u64,
    /// `threading` name, when it was read.
    pub name: Option<String>,
    /// Innermost frame last.
    pub frames: Vec<Frame>,
    pub gil: bool,
    pub idle: bool,
    /// asyncio only, when read with locals: `loop.time()` (CLOCK_MONOTONIC seconds) at which
    /// the loop's current iteration began (`_run_once`'s `end_time` local, minus nothing: it
    /// is `time() + clock_resolution`, a nanosecond off).
    pub iteration_started: Option<f64>,
}

impl ThreadStack {
    pub fn to_model(&self) -> PyStack {
        PyStack {
            frames: self.frames.iter().map(Frame::to_string).collect(),
            gil: self.gil,
            idle: self.idle,
        }
    }
}

/// `_run_once`'s `end_time` local (asyncio's base_events), when py-spy read the locals.
fn iteration_started(frame: &py_spy::Frame) -> Option<f64> {
    let short = frame.name.rsplit('.').next().unwrap_or(&frame.name);
    if short != "_run_once" || !frame.filename.ends_with("asyncio/base_events.py") {
        return None;
    }
    frame
        .locals
        .as_ref()?
        .iter()
        .find(|l| l.name == "end_time")?
        .repr
        .as_deref()?
        .parse()
        .ok()
}

/// CLOCK_MONOTONIC now, in seconds: the clock `loop.time()` reads in every process.
pub fn monotonic_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Every Python thread of the target at one instant, and what reading it cost.
#[derive(Debug, Clone)]
pub struct Sample {
    pub threads: Vec<ThreadStack>,
    /// How long the read took; in blocking mode the target was stopped for at most this long.
    pub took: Duration,
    /// Whether the target was stopped for the read (asked for, and every thread stopped in
    /// time).
    pub blocking: bool,
}

/// A handle on one interpreter: symbols and layout are found once, samples are cheap.
pub struct PyReader {
    pid: u32,
    spy: py_spy::PythonSpy,
    blocking: bool,
    version: String,
    /// Before 3.11 the interpreter does not store the OS thread id, and py-spy finds it only
    /// with libunwind; we read it from glibc's/musl's thread descriptor instead (see
    /// [`TidFinder`]).
    tids: TidFinder,
    /// Before 3.11, read each thread's /proc state per sample to tell idle threads (one
    /// read per thread: worth it for a one-shot view, not at tens of Hz). Blocking reads
    /// always read the states, before stopping the threads.
    pub precise_idle: bool,
    /// A second handle that also reads frame locals (costlier), made on first use.
    with_locals: Option<py_spy::PythonSpy>,
    config: py_spy::Config,
    /// Reads an asyncio iteration's start alone (a few reads, not every local of every
    /// frame); `None` for a version it has no layout for, or once it stopped finding it.
    iterations: Option<IterationReader>,
    /// Reads in a row in which `iterations` found no `_run_once` where py-spy saw one.
    iteration_misses: u32,
}

/// After this many misses in a row, the iteration reader is taken for wrong about this
/// interpreter (an unexpected build) and frame locals are read with py-spy instead.
const ITERATION_MISSES_MAX: u32 = 20;

impl PyReader {
    /// Finds the interpreter in `pid`. `blocking`: stop the target's threads while a sample
    /// is read (consistent stacks) or not (the target never stops; a stack may be torn).
    /// `names`: read `threading` names too (one more read of the interpreter per second).
    pub fn open(pid: u32, blocking: bool, names: bool) -> Result<Self, SourceError> {
        let config = py_spy::Config {
            // Blocking reads hold our own lock around py-spy's read (see `read`).
            blocking: py_spy::config::LockingStrategy::NonBlocking,
            collect_thread_names: names,
            ..py_spy::Config::default()
        };
        let spy =
            py_spy::PythonSpy::new(pid as py_spy::Pid, &config).map_err(|e| classify(pid, &e))?;
        let config = py_spy::Config {
            dump_locals: 1,
            ..config
        };
        let version = spy.version.to_string();
        let iterations = IterationReader::new(
            pid,
            spy.version.major,
            spy.version.minor,
            spy.addresses.interpreter_address,
        );
        Ok(PyReader {
            pid,
            spy,
            blocking,
            version,
            tids: TidFinder::default(),
            precise_idle: true,
            with_locals: None,
            config,
            iterations,
            iteration_misses: 0,
        })
    }

    /// The interpreter's version, e.g. `3.12.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn sample(&mut self) -> Result<Sample, SourceError> {
        self.sample_with(false)
    }

    /// Whether [`PyReader::iteration_started`] can time asyncio iterations (else only a
    /// read with locals can).
    pub fn times_iterations(&self) -> bool {
        self.iterations.is_some()
    }

    /// When the asyncio iteration running on the thread `python_id` began, read alone, now:
    /// a CLOCK_MONOTONIC time, or `at` when the loop is between iterations (in its selector:
    /// no iteration running began before). Call it for a thread a sample just showed inside
    /// `_run_once`; `None` when nothing could be read.
    pub fn iteration_started(&mut self, python_id: u64, at: f64) -> Option<f64> {
        match self.iteration(python_id) {
            IterationRead::Started(start) => Some(start),
            IterationRead::NotStarted => Some(at),
            IterationRead::Unknown => None,
        }
    }

    /// What [`PyReader::iteration_started`] reads, as read: `Unknown` also when this reader
    /// does not time iterations.
    pub fn iteration(&mut self, python_id: u64) -> IterationRead {
        let Some(iterations) = self.iterations.as_mut() else {
            return IterationRead::Unknown;
        };
        let found = iterations.read(python_id);
        if found != IterationRead::Unknown {
            self.iteration_misses = 0;
        } else {
            self.iteration_misses += 1;
            if self.iteration_misses >= ITERATION_MISSES_MAX {
                self.iterations = None;
            }
        }
        found
    }

    /// A sample that also reads frame locals, to learn when each asyncio loop's current
    /// iteration began ([`ThreadStack::iteration_started`]).
    pub fn sample_with_locals(&mut self) -> Result<Sample, SourceError> {
        self.sample_with(true)
    }

    fn sample_with(&mut self, locals: bool) -> Result<Sample, SourceError> {
        // Which threads are on a CPU, read before the read: py-spy reads the states itself,
        // but inside a blocking read every thread is stopped (`t`), and before 3.11 it cannot
        // map its threads to tids.
        let before_311 = self.spy.version.major == 3 && self.spy.version.minor < 11;
        let running: Option<std::collections::HashMap<u32, bool>> =
            (self.blocking || (self.precise_idle && before_311)).then(|| {
                task_ids(self.pid)
                    .into_iter()
                    .map(|tid| {
                        (
                            tid,
                            thread_state(self.pid, tid).is_none_or(|s| s == ProcState::Running),
                        )
                    })
                    .collect()
            });
        let start = Instant::now();
        let spy = if locals {
            if self.with_locals.is_none() {
                self.with_locals = Some(
                    py_spy::PythonSpy::new(self.pid as py_spy::Pid, &self.config)
                        .map_err(|e| classify(self.pid, &e))?,
                );
            }
            self.with_locals.as_mut().expect("set above")
        } else {
            &mut self.spy
        };
        let (traces, blocking) = read(self.pid, spy, self.blocking)?;
        let took = start.elapsed();
        if traces.iter().any(|t| t.os_thread_id.is_none()) {
            let handles: Vec<u64> = traces.iter().map(|t| t.thread_id).collect();
            self.tids.learn(self.pid, &handles);
        }
        let threads = traces
            .into_iter()
            .map(|t| {
                let tid = t.os_thread_id.and_then(|id| u32::try_from(id).ok());
                let tid = tid.or_else(|| self.tids.get(t.thread_id));
                // py-spy's own state read is wrong inside a blocking read, and missing
                // without the tid: the states read before it say, and py-spy's heuristic.
                let active = match (&running, tid) {
                    (Some(running), Some(tid)) => {
                        running.get(&tid).copied().unwrap_or(true) && !waits(&t.frames)
                    }
                    _ => t.active,
                };
                (t, tid, active)
            })
            .map(|(t, tid, active)| ThreadStack {
                tid,
                python_id: t.thread_id,
                iteration_started: t.frames.iter().find_map(iteration_started),
                name: t.thread_name,
                // py-spy lists the innermost frame first; the model wants it last.
                frames: t
                    .frames
                    .into_iter()
                    .rev()
                    .map(|f| Frame {
                        func: f.name,
                        file: f.filename,
                        line: f.line,
                    })
                    .collect(),
                gil: t.owns_gil,
                idle: !active,
            })
            .collect();
        Ok(Sample {
            threads,
            took,
            blocking,
        })
    }
}

/// One read with py-spy, holding every thread of the target stopped when `blocking`; and
/// whether it did. A thread that will not stop in time makes it a non-blocking read.
fn read(
    pid: u32,
    spy: &mut py_spy::PythonSpy,
    blocking: bool,
) -> Result<(Vec<py_spy::StackTrace>, bool), SourceError> {
    // A read of memory the target is changing under us can trip an assertion inside
    // py-spy: that is a torn read (dropped, read again), never the end of the sampler.
    let mut read_now = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spy.get_stack_traces()))
            .map_err(|_| torn(pid))?
            .map_err(|e| torn_or_classify(pid, &e))
    };
    if !blocking {
        return Ok((read_now()?, false));
    }
    match lock::with_stopped(pid, STOP_DEADLINE, &mut read_now) {
        Ok(traces) => Ok((traces?, true)),
        Err(StopError::Slow { .. }) => Ok((read_now()?, false)),
        Err(StopError::Denied) => Err(SourceError::Other(crate::source::ptrace_denied(pid))),
        Err(StopError::Gone) => Err(SourceError::NoSuchProcess(pid)),
        Err(e @ StopError::Traced { .. }) => Err(SourceError::Other(format!(
            "pid {pid} cannot be stopped for a consistent read: {e} (a debugger?); read it \
             without stopping it: --nonblocking"
        ))),
        Err(e) => Err(SourceError::Other(format!("pid {pid}: {e}"))),
    }
}

/// A read that followed a pointer the target had just freed fails with EFAULT: a torn read
/// (the target changed its stacks mid-read), not a missing interpreter.
fn torn_or_classify(pid: u32, error: &anyhow::Error) -> SourceError {
    let fault = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EFAULT)
    });
    if fault && std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return torn(pid);
    }
    classify(pid, error)
}

fn torn(pid: u32) -> SourceError {
    SourceError::Other(format!(
        "pid {pid}: a Python stack read was torn (the target changed it mid-read)"
    ))
}

/// py-spy's guess that a thread on a CPU is about to wait (`_heuristic_is_thread_idle`): its
/// innermost frame is a known wait. Matched on the function's own name: 3.11+ reports the
/// qualified one (`Condition.wait`), which py-spy's exact match misses.
fn waits(frames: &[py_spy::Frame]) -> bool {
    let Some(top) = frames.first() else {
        return false;
    };
    let name = top.name.rsplit('.').next().unwrap_or(&top.name);
    let file = &top.filename;
    (name == "wait" && file.ends_with("threading.py"))
        || (name == "select" && file.ends_with("selectors.py"))
        || (name == "poll"
            && (file.ends_with("asyncore.py")
                || file.contains("zmq")
                || file.contains("gevent")
                || file.contains("tornado")))
}

/// One line naming the problem and the fix, from py-spy's error chain.
pub fn classify(pid: u32, error: &anyhow::Error) -> SourceError {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return SourceError::NoSuchProcess(pid);
    }
    let text = format!("{error:#}");
    let denied = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EPERM || code == libc::EACCES)
    }) || text.contains("Operation not permitted")
        || text.contains("Permission denied");
    if denied {
        return SourceError::Other(crate::source::ptrace_denied(pid));
    }
    // py-spy's last cause is the specific one ("Failed to find python version ..."); keep
    // it on the same line.
    let cause = error
        .chain()
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
    let cause = cause.lines().next().unwrap_or_default();
    SourceError::Other(format!(
        "no Python interpreter found in pid {pid} (is it CPython 3.9+?): {cause}"
    ))
}

/// Maps a Python thread's `pthread_t` (what `threading.get_ident()` returns: the address of
/// the C library's thread descriptor) to its OS thread id, which the descriptor holds at a
/// fixed offset: glibc x86_64 0x2d0, musl 64-bit 0x30. The offset is checked, not assumed: it
/// must give every Python thread a distinct tid that /proc lists; otherwise others are tried.
#[derive(Debug, Default)]
struct TidFinder {
    offset: Option<u64>,
    known: std::collections::HashMap<u64, u32>,
}

impl TidFinder {
    const LIKELY: [u64; 2] = [0x2d0, 0x30];
    const SCAN_END: u64 = 0x800;

    fn get(&self, handle: u64) -> Option<u32> {
        self.known.get(&handle).copied()
    }

    fn learn(&mut self, pid: u32, handles: &[u64]) {
        let new: Vec<u64> = handles
            .iter()
            .copied()
            .filter(|h| *h != 0 && !self.known.contains_key(h))
            .collect();
        if new.is_empty() {
            return;
        }
        let tasks = task_ids(pid);
        let try_offset = |offset: u64| -> Option<Vec<(u64, u32)>> {
            let mut found = Vec::with_capacity(new.len());
            for &h in &new {
                let tid = read_i32(pid, h.checked_add(offset)?)?;
                let tid = u32::try_from(tid).ok()?;
                if !tasks.contains(&tid) || found.iter().any(|(_, t)| *t == tid) {
                    return None;
                }
                found.push((h, tid));
            }
            Some(found)
        };
        let candidates = self
            .offset
            .into_iter()
            .chain(Self::LIKELY)
            .chain((0..Self::SCAN_END).step_by(4));
        for offset in candidates {
            if let Some(found) = try_offset(offset) {
                self.offset = Some(offset);
                self.known.extend(found);
                return;
            }
        }
    }
}

/// Four bytes of another process's memory (the same access py-spy's reads need).
fn read_i32(pid: u32, address: u64) -> Option<i32> {
    let mut value = [0u8; 4];
    super::run_once::read(pid as libc::pid_t, address as usize, &mut value)
        .then(|| i32::from_ne_bytes(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// A blocking read stops every thread, so each one's state must be read before: a thread
    /// spinning on a CPU is active, one waiting on an Event is idle (both before 3.11, where
    /// tids come from the thread descriptors, and after, where py-spy gives them).
    #[test]
    fn a_blocking_read_tells_running_threads_from_waiting_ones() {
        const SPIN_AND_WAIT: &str = r#"
import sys, threading
def spin():
    while True:
        pass
threading.Thread(target=spin, name="spinner", daemon=True).start()
threading.Thread(target=threading.Event().wait, name="waiter", daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;
        let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
        let pythons = [
            "python3".to_string(),
            format!("{root}/versions/3.10.13/bin/python3"),
        ];
        for python in pythons
            .iter()
            .filter(|p| !p.contains('/') || std::path::Path::new(p).exists())
        {
            let mut child = Command::new(python)
                .args(["-c", SPIN_AND_WAIT])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python runs");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let mut reader = PyReader::open(child.id(), true, true).expect("a Python");
            let sample = reader.sample().expect("a read");
            let _ = child.kill();
            let _ = child.wait();
            assert!(sample.blocking, "{python}: every thread stopped in time");
            let named = |name: &str| {
                sample
                    .threads
                    .iter()
                    .find(|t| t.name.as_deref() == Some(name))
                    .unwrap_or_else(|| panic!("{python}: no {name}: {:?}", sample.threads))
            };
            assert!(!named("spinner").idle, "{python}: {:?}", named("spinner"));
            assert!(named("waiter").idle, "{python}: {:?}", named("waiter"));
            assert!(named("spinner").tid.is_some() && named("waiter").tid.is_some());
        }
    }

    #[test]
    fn py_spy_errors_become_one_line_errors_naming_the_fix() {
        let me = std::process::id();
        let denied = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::EPERM))
            .context("Failed to open process - check if it is running.");
        let text = classify(me, &denied).to_string();
        assert!(text.contains("not permitted to trace or read"), "{text}");
        assert!(text.contains("CAP_SYS_PTRACE"), "{text}");
        let not_python = anyhow::anyhow!("Failed to find python version from target process");
        let text = classify(me, &not_python).to_string();
        assert!(text.starts_with("no Python interpreter found"), "{text}");
        assert!(text.ends_with("Failed to find python version from target process"));
        for e in [&denied, &not_python] {
            assert!(!classify(me, e).to_string().contains('\n'));
        }
        // A pid that does not exist is named as such, whatever py-spy said.
        assert!(matches!(
            classify(u32::MAX - 1, &not_python),
            SourceError::NoSuchProcess(_)
        ));
    }
}
