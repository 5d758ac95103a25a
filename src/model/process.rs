//! The OS view: what /proc (or the portable process table) tells about any process.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kernel scheduling state, as the single letter of `/proc/PID/stat` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    Running,
    Sleeping,
    DiskSleep,
    Stopped,
    TracingStop,
    Zombie,
    Dead,
    Idle,
    #[default]
    Unknown,
}

impl ProcState {
    pub fn from_char(c: char) -> Self {
        match c {
            'R' => Self::Running,
            'S' => Self::Sleeping,
            'D' => Self::DiskSleep,
            'T' => Self::Stopped,
            't' => Self::TracingStop,
            'Z' => Self::Zombie,
            'X' | 'x' => Self::Dead,
            'I' => Self::Idle,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::DiskSleep => "disk_sleep",
            Self::Stopped => "stopped",
            Self::TracingStop => "tracing_stop",
            Self::Zombie => "zombie",
            Self::Dead => "dead",
            Self::Idle => "idle",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// `comm`: the kernel's 15-byte name.
    pub name: String,
    /// The command line joined by spaces (empty for kernel threads and zombies).
    pub cmd: String,
    pub state: ProcState,
    /// Start time, milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    pub rss_bytes: u64,
    /// User + system CPU time consumed so far.
    pub cpu_time_ms: u64,
    pub uid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// OS thread id: what /proc shows, what `tid=` in log lines carries.
    pub tid: u32,
    /// `comm` of the thread (15 bytes at most, set by `prctl(PR_SET_NAME)`).
    pub name: String,
    pub state: ProcState,
    pub cpu_time_ms: u64,
    /// Kernel function the thread sleeps in, where readable (`0` hidden by kptr_restrict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// From a probe: the runtime's own name for the thread (Python `Thread.name` is not
    /// limited to 15 bytes), whether it is a daemon, and its stack when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// The thread's Python stack read from outside the process (no probe needed), when asked
    /// (`--stacks`) or while the outside loop sampler runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub py_stack: Option<PyStack>,
}

/// A Python thread's stack as read from the interpreter's memory by the outside view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PyStack {
    /// `file:line in func`, innermost frame last (the same form as probe stacks).
    pub frames: Vec<String>,
    /// This thread held the GIL when the stack was read.
    pub gil: bool,
    /// Waiting rather than running (the OS says so, or it sits in a known wait such as a
    /// selector's `select` or `threading` `wait`).
    pub idle: bool,
}

/// A descendant of the root process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Child {
    pub pid: u32,
    pub ppid: u32,
    pub state: ProcState,
    /// Command line, or `[comm]` when the command line is gone (zombies).
    pub cmd: String,
    /// How long it has existed, milliseconds.
    pub age_ms: u64,
    /// 1 for a direct child, 2 for a grandchild, …
    pub depth: u32,
    /// Set when a probe socket for this pid exists (drill-in possible).
    #[serde(default)]
    pub has_probe: bool,
}

/// A descendant that ended (a worker that exited or was killed), as a process-tree source saw
/// it go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    pub pid: u32,
    pub ppid: u32,
    pub cmd: String,
    /// It had a probe socket while it ran.
    pub had_probe: bool,
    /// How long it had existed when last seen, milliseconds.
    pub age_ms: u64,
    /// When it was found gone, ms since the epoch.
    pub ended_at_ms: u64,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    #[serde(default)]
    pub core_dumped: bool,
    /// The descendant of the same parent that appeared after it ended (a pre-fork server's
    /// replacement worker).
    pub replaced_by: Option<u32>,
}

/// What kind of object a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    File,
    Socket,
    Pipe,
    Eventfd,
    Epoll,
    Timerfd,
    Anon,
    Other,
}

impl FdKind {
    pub const ALL: [FdKind; 8] = [
        FdKind::File,
        FdKind::Socket,
        FdKind::Pipe,
        FdKind::Eventfd,
        FdKind::Epoll,
        FdKind::Timerfd,
        FdKind::Anon,
        FdKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::Eventfd => "eventfd",
            FdKind::Epoll => "epoll",
            FdKind::Timerfd => "timerfd",
            FdKind::Anon => "anon",
            FdKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FdSummary {
    pub open: u64,
    /// Soft RLIMIT_NOFILE; `None` means unlimited or unreadable.
    pub soft_limit: Option<u64>,
    pub hard_limit: Option<u64>,
    /// Counts by kind; empty when the descriptors could not be listed (permission).
    pub by_kind: BTreeMap<FdKind, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fd {
    pub fd: i32,
    pub kind: FdKind,
    /// The link target as /proc shows it: a path, `socket:[123]`, `anon_inode:[eventfd]`, …
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
    Unix,
}

/// A socket's state, written as the kernel names it (`include/net/tcp_states.h`; UDP uses the
/// same codes: `CLOSE` is an unconnected UDP socket, `ESTABLISHED` a connected one). Unix
/// sockets: `UNCONNECTED`, `CONNECTING`, `CONNECTED`, `DISCONNECTING`, `LISTEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SocketState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    Unconnected,
    Connecting,
    Connected,
    Disconnecting,
    /// A code or name leakhound does not know.
    #[serde(other)]
    Unknown,
}

impl SocketState {
    pub const ALL: [SocketState; 17] = [
        SocketState::Established,
        SocketState::SynSent,
        SocketState::SynRecv,
        SocketState::FinWait1,
        SocketState::FinWait2,
        SocketState::TimeWait,
        SocketState::Close,
        SocketState::CloseWait,
        SocketState::LastAck,
        SocketState::Listen,
        SocketState::Closing,
        SocketState::NewSynRecv,
        SocketState::Unconnected,
        SocketState::Connecting,
        SocketState::Connected,
        SocketState::Disconnecting,
        SocketState::Unknown,
    ];

    /// The kernel's name: `CLOSE_WAIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketState::Established => "ESTABLISHED",
            SocketState::SynSent => "SYN_SENT",
            SocketState::SynRecv => "SYN_RECV",
            SocketState::FinWait1 => "FIN_WAIT1",
            SocketState::FinWait2 => "FIN_WAIT2",
            SocketState::TimeWait => "TIME_WAIT",
            SocketState::Close => "CLOSE",
            SocketState::CloseWait => "CLOSE_WAIT",
            SocketState::LastAck => "LAST_ACK",
            SocketState::Listen => "LISTEN",
            SocketState::Closing => "CLOSING",
            SocketState::NewSynRecv => "NEW_SYN_RECV",
            SocketState::Unconnected => "UNCONNECTED",
            SocketState::Connecting => "CONNECTING",
            SocketState::Connected => "CONNECTED",
            SocketState::Disconnecting => "DISCONNECTING",
            SocketState::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for SocketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// From the kernel's name; a name it does not know is `Unknown`.
impl From<&str> for SocketState {
    fn from(name: &str) -> Self {
        SocketState::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .unwrap_or(SocketState::Unknown)
    }
}

/// Compares with the kernel's name, as tests and messages spell it.
impl PartialEq<&str> for SocketState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Socket {
    pub proto: Proto,
    /// `ip:port`, `[ip6]:port`, or a unix path (empty when unnamed).
    pub local: String,
    pub remote: String,
    /// Written as the kernel names it: `LISTEN`, `ESTABLISHED`, `CLOSE_WAIT`, …
    pub state: SocketState,
    pub inode: u64,
    /// The descriptor of the root process holding it, when joined by inode.
    pub fd: Option<i32>,
    #[serde(default)]
    pub rx_queue: u64,
    #[serde(default)]
    pub tx_queue: u64,
}

#[cfg(test)]
mod socket_state_tests {
    use super::SocketState;

    #[test]
    fn states_read_and_write_as_the_kernel_names_them() {
        for state in SocketState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<SocketState>(&json).unwrap(), state);
            assert_eq!(SocketState::from(state.as_str()), state);
        }
        assert_eq!(
            serde_json::from_str::<SocketState>("\"BOUND_INACTIVE\"").unwrap(),
            SocketState::Unknown
        );
        assert_eq!(SocketState::from("bogus"), SocketState::Unknown);
    }
}
