//! Seeing a process at the instant it exits (I/O only).
//!
//! A sample taken every interval cannot tell a descriptor closed in the program's last
//! milliseconds from one never closed: both were open in the last sample. So `check` attaches
//! to the command's main thread with `PTRACE_SEIZE` and only `PTRACE_O_TRACEEXIT`: the kernel
//! stops the thread inside `exit`, before its descriptor table is released, and `check` takes
//! one /proc sample there. Nothing else is stopped: signals are passed straight through, and a
//! job-control stop stays a stop (`PTRACE_LISTEN`). Where ptrace is not allowed (a seccomp
//! profile, Yama scope 3), the caller falls back to the last samples.

use std::process::ExitStatus;

/// Attaches to `pid` (a child of this process that has just been started) and to every thread
/// it starts (`PTRACE_O_TRACECLONE`; child processes are not followed). False when the kernel
/// refuses (the error says why: `EPERM` when not permitted, `ESRCH` when the command already
/// ended); then nothing is changed and [`wait`] works like a plain `waitpid`.
#[cfg(target_os = "linux")]
pub fn seize(pid: u32) -> std::io::Result<()> {
    if let Err(e) = seize_one(pid as libc::pid_t) {
        // The kernel answers EPERM, not ESRCH, for a process that has already exited (a
        // zombie, `check -- true`): that is the command being quick, not ptrace refused.
        if e.raw_os_error() == Some(libc::EPERM) && !super::tree::is_running(pid) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        return Err(e);
    }
    // Threads the command started before we got here are not followed by TRACECLONE (it
    // applies to threads the traced ones create): seize them one by one. Every thread started
    // after this is created by a traced thread.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if tid != pid as i32 {
                let _ = seize_one(tid);
            }
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn seize_one(tid: libc::pid_t) -> std::io::Result<()> {
    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACECLONE;
    // SAFETY: PTRACE_SEIZE takes a pid and an options word; no memory is passed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            options as usize as *mut libc::c_void,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn seize(_pid: u32) -> std::io::Result<()> {
    Err(std::io::Error::other("exit tracing is Linux only"))
}

/// A thread that was still running when its process exited (it ended because the process
/// did, not by returning or calling `exit` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutThread {
    pub tid: u32,
    pub name: String,
}

/// How the traced command ended.
#[derive(Debug)]
pub struct Ending {
    pub status: ExitStatus,
    /// Threads cut short by the process exit, seen at their own exit stops.
    pub cut_threads: Vec<CutThread>,
}

/// Waits for `pid` to end. If it was seized, `at_exit` runs once while its main thread is
/// stopped at its exit (descriptors and threads still there), then it is let go; every other
/// thread is stopped at its exit too, long enough to tell whether it ended on its own (the
/// `exit` system call: returned or called pthread_exit) or was cut short by the process exit.
#[cfg(target_os = "linux")]
pub fn wait(pid: u32, traced: bool, mut at_exit: impl FnMut()) -> std::io::Result<Ending> {
    use std::os::unix::process::ExitStatusExt;
    let root = pid as libc::pid_t;
    let mut cut_threads = Vec::new();
    let mut exit_seen = false;
    loop {
        // Only the command's own threads are waited for (__WALL covers its threads, which
        // are our tracees); children re-parented to us are left to the settle step.
        let mut status: libc::c_int = 0;
        let waited = if traced { -1 } else { root };
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(waited, &mut status, libc::__WALL) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if r == root && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status)) {
            return Ok(Ending {
                status: ExitStatus::from_raw(status),
                cut_threads,
            });
        }
        if !libc::WIFSTOPPED(status) {
            continue; // a traced thread gone, or a re-parented child reaped
        }
        let event = (status >> 16) & 0xffff;
        let (request, signal) = if event == libc::PTRACE_EVENT_EXIT {
            if r == root {
                if !exit_seen {
                    exit_seen = true;
                    at_exit();
                }
            } else if !exited_by_itself(root, r)
                && let Ok(name) = std::fs::read_to_string(format!("/proc/{root}/task/{r}/comm"))
            {
                cut_threads.push(CutThread {
                    tid: r as u32,
                    name: name.trim_end().to_string(),
                });
            }
            (libc::PTRACE_CONT, 0)
        } else if event == libc::PTRACE_EVENT_STOP {
            // A group stop (SIGSTOP, SIGTSTP), or a new thread's first stop: as without us.
            let sig = libc::WSTOPSIG(status);
            if sig == libc::SIGSTOP
                || sig == libc::SIGTSTP
                || sig == libc::SIGTTIN
                || sig == libc::SIGTTOU
            {
                (libc::PTRACE_LISTEN, 0)
            } else {
                (libc::PTRACE_CONT, 0)
            }
        } else if event != 0 {
            (libc::PTRACE_CONT, 0) // PTRACE_EVENT_CLONE: the new thread is traced too
        } else {
            // A signal on its way to the program: deliver it unchanged.
            (libc::PTRACE_CONT, libc::WSTOPSIG(status))
        };
        // SAFETY: plain ptrace requests on our own tracee; no memory is passed.
        unsafe {
            libc::ptrace(
                request,
                r,
                std::ptr::null_mut::<libc::c_void>(),
                signal as usize as *mut libc::c_void,
            );
        }
    }
}

/// Whether a thread stopped at its exit got there through the `exit` system call (it returned
/// or called pthread_exit), rather than being killed because its process exited.
#[cfg(target_os = "linux")]
fn exited_by_itself(pid: libc::pid_t, tid: libc::pid_t) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
        return true; // cannot tell: do not blame it
    };
    let nr = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok());
    // exit: the thread ended itself; exit_group: it is the one that ended the process.
    nr == Some(libc::SYS_exit) || nr == Some(libc::SYS_exit_group)
}

#[cfg(not(target_os = "linux"))]
pub fn wait(pid: u32, _traced: bool, _at_exit: impl FnMut()) -> std::io::Result<Ending> {
    use std::os::unix::process::ExitStatusExt;
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-pointer for the duration of the call.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Ending {
        status: ExitStatus::from_raw(status),
        cut_threads: Vec::new(),
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// `check -- true`: the command can exit before it is seized. That must read as "already
    /// ended" (ESRCH), which `check` passes over, not as ptrace refused (EPERM).
    #[test]
    fn seizing_a_command_that_already_exited_is_esrch_not_eperm() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait (without reaping) until it is a zombie: waitid with WNOWAIT blocks until then.
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        assert!(!crate::check::tree::is_running(pid));
        let err = seize(pid).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
        let mut child = child;
        assert!(child.wait().unwrap().success());
    }
}
