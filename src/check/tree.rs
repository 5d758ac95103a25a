//! The process tree under leakhound itself (I/O only): what `check` reads once the command has
//! exited, when the command's own PID is gone and every descendant that outlived it has been
//! re-parented to leakhound (a child subreaper).

use crate::model::ProcState;
pub use crate::rules::at_exit::Leftover;

/// Every descendant of `root` (not `root` itself), parents before children.
#[cfg(target_os = "linux")]
pub fn descendants(root: u32) -> Vec<Leftover> {
    let mut all = Vec::new();
    let Ok(procs) = procfs::process::all_processes() else {
        return all;
    };
    for proc in procs.flatten() {
        // A process can vanish between listing and reading: skip it, it is not left over.
        let Ok(stat) = proc.stat() else { continue };
        let cmd = crate::source::procfs::parse::shown_cmd(
            proc.cmdline().map(|c| c.join(" ")).unwrap_or_default(),
            &stat.comm,
        );
        all.push(Leftover {
            pid: stat.pid as u32,
            ppid: stat.ppid as u32,
            state: ProcState::from_char(stat.state),
            cmd,
        });
    }
    let mut out: Vec<Leftover> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            if out.iter().all(|o| o.pid != p.pid) {
                frontier.push(p.pid);
                out.push(p.clone());
            }
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
pub fn descendants(_root: u32) -> Vec<Leftover> {
    Vec::new()
}

/// Makes this process a child subreaper, so orphaned descendants are re-parented to it
/// instead of to init and stay visible. Returns why not, when it could not.
pub fn become_subreaper() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER) failed: {e}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("child subreaper is Linux only: orphans are not followed on this system".into())
    }
}

/// Sends SIGTERM, waits up to `grace` for each to go, then SIGKILL; reaps what is ours.
pub fn kill_all(pids: &[u32], grace: std::time::Duration) {
    use rustix::process::{Pid, Signal, kill_process};
    let targets: Vec<Pid> = pids
        .iter()
        .filter_map(|p| Pid::from_raw(*p as i32))
        .collect();
    for pid in &targets {
        let _ = kill_process(*pid, Signal::TERM);
    }
    let deadline = std::time::Instant::now() + grace;
    let mut wait = std::time::Duration::from_millis(1);
    loop {
        reap_children();
        let alive: Vec<&Pid> = targets
            .iter()
            .filter(|p| is_running(p.as_raw_nonzero().get() as u32))
            .collect();
        if alive.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            for pid in alive {
                let _ = kill_process(*pid, Signal::KILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            reap_children();
            return;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Whether `pid` exists and has not exited (not a zombie).
pub fn is_running(pid: u32) -> bool {
    crate::source::procfs::parse::read_stat(pid, None)
        .is_some_and(|s| !matches!(s.state, ProcState::Zombie | ProcState::Dead))
}

/// Reaps every exited child of this process (re-parented zombies included), without blocking.
pub fn reap_children() {
    use rustix::process::{WaitOptions, waitpid};
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
}

/// Reaps one exited child, without blocking.
pub fn reap(pid: u32) {
    use rustix::process::{Pid, WaitOptions, waitpid};
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = waitpid(Some(pid), WaitOptions::NOHANG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::procfs::parse::hostile;

    #[test]
    fn a_process_with_a_hostile_comm_runs_until_it_is_a_zombie() {
        let child = hostile::spawn("/bin/sleep", &["60"]);
        let pid = child.pid();
        assert!(is_running(pid));
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        hostile::wait_until("not running", || !is_running(pid));
        drop(child);
    }
}
