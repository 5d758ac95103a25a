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

/// Attaches to `pid` (a child of this process that has just been started). False when the
/// kernel refuses; then nothing is changed and [`wait`] works like a plain `waitpid`.
#[cfg(target_os = "linux")]
pub fn seize(pid: u32) -> bool {
    // SAFETY: PTRACE_SEIZE takes a pid and an options word; no memory is passed.
    unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            libc::PTRACE_O_TRACEEXIT as usize as *mut libc::c_void,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
pub fn seize(_pid: u32) -> bool {
    false
}

/// Waits for `pid` to end. If it was seized, `at_exit` runs once while it is stopped at its
/// exit (descriptors and the exiting thread still there), then it is let go.
#[cfg(target_os = "linux")]
pub fn wait(pid: u32, mut at_exit: impl FnMut()) -> std::io::Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let raw_pid = pid as libc::pid_t;
    let mut exit_seen = false;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(raw_pid, &mut status, libc::__WALL) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok(ExitStatus::from_raw(status));
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let event = (status >> 16) & 0xffff;
        let (request, signal) = if event == libc::PTRACE_EVENT_EXIT {
            if !exit_seen {
                exit_seen = true;
                at_exit();
            }
            (libc::PTRACE_CONT, 0)
        } else if event == libc::PTRACE_EVENT_STOP {
            // A group stop (SIGSTOP, SIGTSTP): stay stopped, as without us.
            (libc::PTRACE_LISTEN, 0)
        } else {
            // A signal on its way to the program: deliver it unchanged.
            (libc::PTRACE_CONT, libc::WSTOPSIG(status))
        };
        // SAFETY: plain ptrace requests on our own tracee; no memory is passed.
        unsafe {
            libc::ptrace(
                request,
                raw_pid,
                std::ptr::null_mut::<libc::c_void>(),
                signal as usize as *mut libc::c_void,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn wait(pid: u32, _at_exit: impl FnMut()) -> std::io::Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-pointer for the duration of the call.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ExitStatus::from_raw(status))
}
