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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Socket {
    pub proto: Proto,
    /// `ip:port`, `[ip6]:port`, or a unix path (empty when unnamed).
    pub local: String,
    pub remote: String,
    /// The kernel's name for the state: `LISTEN`, `ESTABLISHED`, `CLOSE_WAIT`, … For unix
    /// sockets: `UNCONNECTED`, `CONNECTING`, `CONNECTED`, `DISCONNECTING`, `LISTEN`.
    pub state: String,
    pub inode: u64,
    /// The descriptor of the root process holding it, when joined by inode.
    pub fd: Option<i32>,
    #[serde(default)]
    pub rx_queue: u64,
    #[serde(default)]
    pub tx_queue: u64,
}
