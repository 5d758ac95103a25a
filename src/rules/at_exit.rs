//! What the rules judged at exit ([`super::ExitRule`]) look at: the samples around a process's
//! exit ([`Held`]) and what was left under leakhound once the command was gone ([`Leftovers`]).

use crate::model::{ProcState, Snapshot};
use std::time::Duration;

/// What one exit-time judgement sees; a rule whose input is absent finds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exit<'a> {
    /// One process's first view and last samples.
    pub held: Option<Held<'a>>,
    /// The command's descendants after it exited.
    pub leftovers: Option<&'a Leftovers>,
}

/// A process found under leakhound after the command exited.
#[derive(Debug, Clone, PartialEq)]
pub struct Leftover {
    pub pid: u32,
    pub ppid: u32,
    pub state: ProcState,
    /// Command line, or `[comm]` when it is gone (zombies).
    pub cmd: String,
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

/// Descriptors and threads that appeared during the run and were still there at its end are
/// judged from these samples.
///
/// Precise rather than noisy. With `at_exit` (a sample taken while the process was stopped
/// inside `exit`) a thing counts when it is there and was absent from the first sample (the
/// baseline): whatever the program closed, however late, is gone by then. Without it, a thing
/// counts only when it was in the last sample and unchanged (same fd number and target, or
/// same thread id) in the one before — one sample catches work in progress, two catch things
/// held — which can still blame something closed in the last milliseconds. The std streams,
/// leakhound's own probe sockets (paths under `socket_dir`) and probe threads never count.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// Every sample given, oldest first (the first is the baseline).
    pub snapshots: &'a [&'a Snapshot],
    pub first: &'a Snapshot,
    pub last: &'a Snapshot,
    /// The sample a thing must also be in to count as held (`last` itself at the exit).
    pub before_last: &'a Snapshot,
    /// The folder of leakhound's own probe sockets.
    pub socket_dir: &'a str,
    /// Whether a probe sent its final report for this process.
    pub had_probe: bool,
}

impl<'a> Held<'a> {
    /// None when there is too little to tell held from busy (fewer than three samples and no
    /// view at the exit).
    pub fn new(
        snapshots: &'a [&'a Snapshot],
        at_exit: Option<&'a Snapshot>,
        socket_dir: &'a str,
        had_probe: bool,
    ) -> Option<Self> {
        let first = *snapshots.first()?;
        let (last, before_last) = match at_exit {
            Some(exit) => (exit, exit),
            None if snapshots.len() >= 3 => (
                snapshots[snapshots.len() - 1],
                snapshots[snapshots.len() - 2],
            ),
            None => return None,
        };
        Some(Held {
            snapshots,
            first,
            last,
            before_last,
            socket_dir,
            had_probe,
        })
    }

    /// Whether `path` is under leakhound's own socket folder.
    pub fn is_probe_path(&self, path: &str) -> bool {
        !self.socket_dir.is_empty() && path.starts_with(self.socket_dir)
    }
}
