//! The snapshot model: what every source produces and every rule, view and report reads.
//!
//! The JSON form of [`Snapshot`] is a public interface documented in `docs/SNAPSHOT.md`;
//! renaming a field here is a breaking change.

mod probe;
mod process;
mod size;

pub use probe::*;
pub use process::*;
pub use size::HeapBytes;

use serde::{Deserialize, Serialize};

/// Everything known about one target at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Wall-clock time the sample was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// The root process id, or 0 when the target is not a local process (a remote endpoint).
    pub pid: u32,
    /// What produced this snapshot, e.g. `procfs+probe(python)`.
    pub source: String,
    /// The root process itself; `None` when the source has no OS view (remote console).
    pub process: Option<Process>,
    /// OS threads of the root process (`/proc/PID/task`), enriched by a probe when loaded.
    pub threads: Vec<Thread>,
    /// All descendants (children, grandchildren, …), zombies included.
    pub children: Vec<Child>,
    pub fds: FdSummary,
    /// Only filled when the full list was asked for (`--fds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_list: Option<Vec<Fd>>,
    pub sockets: Vec<Socket>,
    /// The in-process view, when a probe (Python, Rust or console-subscriber) answered.
    pub probe: Option<ProbeData>,
    /// Parts of the view that could not be read and why (a thread vanished mid-scan,
    /// permission denied on /proc/PID/fd, no probe found, …). Never fatal.
    pub notes: Vec<String>,
    /// A service's other processes: each descendant with a probe (a pre-fork server's worker),
    /// sampled as its own snapshot, when the target was opened as a process tree (`watch`,
    /// `snapshot`, `attach` on a PID). Absent for a single process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<Snapshot>,
    /// Descendants that ended since the previous sample, with how they ended and what replaced
    /// them (process-tree targets only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<Ended>,
}

impl Snapshot {
    pub fn tasks(&self) -> &[Task] {
        self.probe.as_ref().map_or(&[], |p| p.tasks.as_slice())
    }

    /// Number of sockets in the given state, e.g. [`SocketState::CloseWait`].
    pub fn sockets_in_state(&self, state: SocketState) -> usize {
        self.sockets.iter().filter(|s| s.state == state).count()
    }

    /// What this snapshot costs in memory, measured from what it holds (events, strings and
    /// chains included; see [`HeapBytes`]): what bounded histories are sized by.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + size::HeapBytes::heap_bytes(self)
    }

    pub fn zombies(&self) -> impl Iterator<Item = &Child> {
        self.children
            .iter()
            .filter(|c| c.state == ProcState::Zombie)
    }
}
