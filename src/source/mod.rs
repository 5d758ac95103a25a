//! Where snapshots come from: one trait, one module per kind of target.
//!
//! A source only observes; it never judges (that is `rules/`).

use crate::model::Snapshot;

pub mod collector;
#[cfg(target_os = "linux")]
pub mod console;
#[cfg(all(target_os = "linux", feature = "pystacks"))]
pub mod outside;
pub mod probe;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod replay;
mod target;
pub use collector::{Collector, CollectorEvent};
pub use target::Target;

/// What a caller wants in the next sample beyond the defaults; the costly parts are opt-in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleOptions {
    /// The full descriptor list with link targets (`--fds`), not only counts by kind.
    pub fd_list: bool,
    /// Thread stacks from a probe (every thread, not only implicated ones).
    pub stacks: bool,
}

/// Why a sample could not be taken. Each message is one line naming the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no process with PID {0}: it may have exited; check the PID with `ps -p {0}`")]
    NoSuchProcess(u32),
    #[error(
        "permission denied reading /proc/{pid}/{what}: run leakhound as the user that owns PID {pid}, or as root"
    )]
    PermissionDenied { pid: u32, what: String },
    /// The target went away after at least one good sample: the normal end of `watch`.
    #[error("target exited: {0}")]
    Gone(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Other(String),
}

pub trait Source: Send {
    /// Short description for status lines: `pid 1234 (procfs+probe python)`.
    fn describe(&self) -> String;
    /// One snapshot now. A part that cannot be read goes into `Snapshot::notes`; only a
    /// root target that is gone or unreadable is an error.
    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError>;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the source that reaches a target, to be sampled again and again (a PID without a
/// probe gets the outside view's loop sampler).
pub fn open(target: &Target) -> Result<Box<dyn Source>, SourceError> {
    open_pid_or(target, true, false)
}

/// Opens a target for a single sample: Python stacks from outside only when asked, stopping
/// the target for that read unless `nonblocking`.
pub fn open_once(target: &Target, nonblocking: bool) -> Result<Box<dyn Source>, SourceError> {
    open_pid_or(target, false, nonblocking)
}

#[cfg_attr(
    not(all(target_os = "linux", feature = "pystacks")),
    allow(unused_variables)
)]
fn open_pid_or(
    target: &Target,
    loop_sampler: bool,
    nonblocking: bool,
) -> Result<Box<dyn Source>, SourceError> {
    match target {
        #[cfg(target_os = "linux")]
        Target::Pid(pid) => {
            let with_probe = probe::WithProbe::new(procfs::ProcSource::new(*pid)?, *pid);
            #[cfg(feature = "pystacks")]
            {
                let options = if loop_sampler {
                    outside::Options::watching()
                } else {
                    outside::Options::once(!nonblocking)
                };
                Ok(Box::new(outside::WithOutside::new(
                    with_probe, *pid, options,
                )))
            }
            #[cfg(not(feature = "pystacks"))]
            Ok(Box::new(with_probe))
        }
        Target::ProbeSocket(path) => Ok(Box::new(probe::ProbeSocketSource::new(path)?)),
        #[cfg(target_os = "linux")]
        Target::Console(url) => Ok(Box::new(console::ConsoleSource::open(url)?)),
        Target::Recording(path) => Ok(Box::new(replay::ReplaySource::open(path)?)),
        #[allow(unreachable_patterns)] // reached off Linux, where Pid and Console are absent
        other => Err(SourceError::Other(format!(
            "targets like '{other}' are not supported by this build"
        ))),
    }
}
