//! Reading every Python thread's stack of a running CPython from outside, with the `py-spy`
//! crate: its memory reads go through `process_vm_readv`, and in blocking mode it stops the
//! target's threads with ptrace for the length of one read (then detaches, on every path: its
//! lock is released on drop).

use crate::model::PyStack;
use crate::source::SourceError;
use std::time::{Duration, Instant};

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
    /// `threading` name, when it was read.
    pub name: Option<String>,
    /// Innermost frame last.
    pub frames: Vec<Frame>,
    pub gil: bool,
    pub idle: bool,
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

/// Every Python thread of the target at one instant, and what reading it cost.
#[derive(Debug, Clone)]
pub struct Sample {
    pub threads: Vec<ThreadStack>,
    /// How long the read took; in blocking mode the target was stopped for at most this long.
    pub took: Duration,
    pub blocking: bool,
}

/// A handle on one interpreter: symbols and layout are found once, samples are cheap.
pub struct PyReader {
    pid: u32,
    spy: py_spy::PythonSpy,
    blocking: bool,
    version: String,
}

impl PyReader {
    /// Finds the interpreter in `pid`. `blocking`: stop the target's threads while a sample
    /// is read (consistent stacks) or not (the target never stops; a stack may be torn).
    /// `names`: read `threading` names too (one more read of the interpreter per second).
    pub fn open(pid: u32, blocking: bool, names: bool) -> Result<Self, SourceError> {
        let config = py_spy::Config {
            blocking: if blocking {
                py_spy::config::LockingStrategy::Lock
            } else {
                py_spy::config::LockingStrategy::NonBlocking
            },
            collect_thread_names: names,
            ..py_spy::Config::default()
        };
        let spy =
            py_spy::PythonSpy::new(pid as py_spy::Pid, &config).map_err(|e| classify(pid, &e))?;
        let version = spy.version.to_string();
        Ok(PyReader {
            pid,
            spy,
            blocking,
            version,
        })
    }

    /// The interpreter's version, e.g. `3.12.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn sample(&mut self) -> Result<Sample, SourceError> {
        let start = Instant::now();
        let traces = self
            .spy
            .get_stack_traces()
            .map_err(|e| classify(self.pid, &e))?;
        let took = start.elapsed();
        let threads = traces
            .into_iter()
            .map(|t| ThreadStack {
                tid: t.os_thread_id.and_then(|id| u32::try_from(id).ok()),
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
                idle: !t.active,
            })
            .collect();
        Ok(Sample {
            threads,
            took,
            blocking: self.blocking,
        })
    }
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
        return SourceError::Other(crate::launch::inject::ptrace_denied(pid));
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
