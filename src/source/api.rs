//! What every source implements and returns: the [`Source`] trait, [`SampleOptions`],
//! [`SourceError`], [`now_ms`]. A leaf module, so the sources import it without importing
//! `source/mod.rs` (which opens them): no cycle between `source` and its sources.

use crate::model::Snapshot;

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

/// The one-line error for a target whose memory we may not read or trace.
pub fn ptrace_denied(pid: u32) -> String {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| format!("kernel.yama.ptrace_scope is {}", s.trim()))
        .unwrap_or_else(|_| "ptrace is restricted".to_string());
    format!(
        "not permitted to trace or read pid {pid} ({scope}): run leakhound as root or as the \
         target's user with `sysctl kernel.yama.ptrace_scope=0`, or in a container add \
         CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE)"
    )
}
