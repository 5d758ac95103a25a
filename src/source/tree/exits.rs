//! How a process ended, for processes leakhound did not start (a service's workers are the
//! master's children, not ours, so `waitpid` is not ours to call).
//!
//! Two ways, best first:
//! - the kernel's process-events connector (netlink `NETLINK_CONNECTOR`, `CN_IDX_PROC`): an
//!   exit event carries the wait status of every process that ends, even one the parent reaps
//!   at once. It needs CAP_NET_ADMIN (root, most containers' root included); a thread reads it
//!   and keeps the statuses of the pids it is told to care about;
//! - a zombie's `/proc/PID/stat` (field 52, `exit_code`), when a sample catches it before the
//!   parent reaps it.
//!
//! Otherwise the status is unknown, and the finding says so.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A wait status (`waitpid`'s form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub i32);

impl Status {
    /// The exit code, when the process exited.
    pub fn code(self) -> Option<i32> {
        (self.0 & 0x7f == 0).then_some((self.0 >> 8) & 0xff)
    }

    /// The signal that ended it, when one did.
    pub fn signal(self) -> Option<i32> {
        let sig = self.0 & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }

    pub fn core_dumped(self) -> bool {
        self.signal().is_some() && self.0 & 0x80 != 0
    }
}

/// Statuses the connector thread saw, for the pids of interest; bounded.
#[derive(Default)]
struct Shared {
    interest: HashSet<u32>,
    seen: HashMap<u32, Status>,
}

/// The most statuses kept that nobody asked for yet.
const KEPT: usize = 4096;

/// The connector listener. Dropping it stops its thread (within a receive timeout).
pub struct ExitWatch {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl ExitWatch {
    /// Starts listening; `Err` says why the connector cannot be used here (one line).
    #[cfg(target_os = "linux")]
    pub fn start() -> Result<ExitWatch, String> {
        let fd = connector::listen()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("leakhound-exits".into())
            .spawn(move || {
                connector::read_loop(fd, &st, |pid, status| {
                    let mut shared = s.lock().unwrap_or_else(|e| e.into_inner());
                    if shared.interest.contains(&pid) {
                        if shared.seen.len() >= KEPT {
                            shared.seen.clear();
                        }
                        shared.seen.insert(pid, status);
                    }
                })
            })
            .map_err(|e| format!("cannot start the exit listener thread: {e}"))?;
        Ok(ExitWatch { shared, stop })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn start() -> Result<ExitWatch, String> {
        Err("process exit events are Linux only".into())
    }

    /// The pids whose end matters from now on (the others' events are not kept).
    pub fn set_interest(&self, pids: impl IntoIterator<Item = u32>) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.interest.clear();
        shared.interest.extend(pids);
    }

    /// The status seen for `pid`, if its exit event came (taken out: asked once).
    pub fn take(&self, pid: u32) -> Option<Status> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.seen.remove(&pid)
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The wait status a zombie leaves in `/proc/PID/stat` (field 52), if it is one now.
pub fn zombie_status(pid: u32) -> Option<Status> {
    let stat = crate::source::procfs::parse::read_stat(pid, None)?;
    if stat.state != crate::model::ProcState::Zombie {
        return None;
    }
    stat.exit_code.map(Status)
}

#[cfg(target_os = "linux")]
mod connector {
    use super::Status;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, Ordering};

    const NETLINK_CONNECTOR: i32 = 11;
    const CN_IDX_PROC: u32 = 1;
    const CN_VAL_PROC: u32 = 1;
    const PROC_CN_MCAST_LISTEN: u32 = 1;
    const PROC_EVENT_EXIT: u32 = 0x8000_0000;
    const NLMSG_DONE: u16 = 3;
    /// nlmsghdr (16) + cn_msg header (20).
    const EVENT_AT: usize = 36;

    pub fn listen() -> Result<OwnedFd, String> {
        // SAFETY: plain socket calls on a descriptor we own; the buffers outlive the calls.
        unsafe {
            let raw = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            );
            if raw < 0 {
                return Err(format!(
                    "no process-events connector: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_groups = CN_IDX_PROC;
            if libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) < 0
            {
                return Err(format!(
                    "cannot join the process-events connector (it needs CAP_NET_ADMIN): {}",
                    std::io::Error::last_os_error()
                ));
            }
            let mut msg = Vec::with_capacity(40);
            msg.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
            msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
            msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
            msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
            msg.extend_from_slice(&0u32.to_ne_bytes()); // pid (the kernel fills it)
            msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
            msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
            msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
            msg.extend_from_slice(&4u16.to_ne_bytes()); // len
            msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
            msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
            if libc::send(raw, msg.as_ptr().cast(), msg.len(), 0) < 0 {
                return Err(format!(
                    "the process-events connector refused to listen: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // A timeout so the thread notices it was asked to stop.
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 500_000,
            };
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            Ok(fd)
        }
    }

    /// Reads events until `stop`; calls `on_exit(pid, status)` for each process (not thread)
    /// that ends.
    pub fn read_loop(fd: OwnedFd, stop: &AtomicBool, mut on_exit: impl FnMut(u32, Status)) {
        let mut buf = vec![0u8; 8192];
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                    // Events were lost under load (ENOBUFS): keep reading the next ones.
                    Some(libc::ENOBUFS) => continue,
                    _ => return,
                }
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + 16 <= n {
                let len = u32_at(&buf, at) as usize;
                if len < 16 || at + len > n {
                    break;
                }
                if let Some((pid, status)) = parse_exit(&buf[at..at + len]) {
                    on_exit(pid, status);
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// A process exit event: (pid, wait status); None for anything else (thread exits too).
    pub fn parse_exit(msg: &[u8]) -> Option<(u32, Status)> {
        if msg.len() < EVENT_AT + 32 || u32_at(msg, EVENT_AT) != PROC_EVENT_EXIT {
            return None;
        }
        // proc_event: what, cpu, timestamp_ns (u64), then exit_proc_event: pid, tgid,
        // exit_code, exit_signal.
        let data = EVENT_AT + 16;
        let (pid, tgid) = (u32_at(msg, data), u32_at(msg, data + 4));
        (pid == tgid).then(|| (pid, Status(u32_at(msg, data + 8) as i32)))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn event(what: u32, pid: u32, tgid: u32, code: u32) -> Vec<u8> {
            let mut m = vec![0u8; EVENT_AT];
            m.extend_from_slice(&what.to_ne_bytes());
            m.extend_from_slice(&[0u8; 12]);
            for v in [pid, tgid, code, 17] {
                m.extend_from_slice(&v.to_ne_bytes());
            }
            m
        }

        #[test]
        fn reads_process_exits_and_skips_threads_and_other_events() {
            assert_eq!(
                parse_exit(&event(PROC_EVENT_EXIT, 42, 42, 9)),
                Some((42, Status(9)))
            );
            assert_eq!(parse_exit(&event(PROC_EVENT_EXIT, 43, 42, 0)), None);
            assert_eq!(parse_exit(&event(1, 42, 42, 0)), None);
            assert_eq!(parse_exit(&event(PROC_EVENT_EXIT, 42, 42, 0)[..40]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::procfs::parse::{hostile, read_stat};

    #[test]
    fn a_zombie_with_a_hostile_comm_gives_its_status() {
        let child = hostile::spawn("/bin/sh", &["-c", "exit 3"]);
        let pid = child.pid();
        hostile::wait_until("a zombie", || {
            read_stat(pid, None).is_some_and(|s| s.state == crate::model::ProcState::Zombie)
        });
        assert_eq!(zombie_status(pid).and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn wait_statuses_decode() {
        assert_eq!((Status(9).code(), Status(9).signal()), (None, Some(9)));
        assert_eq!(
            (Status(3 << 8).code(), Status(3 << 8).signal()),
            (Some(3), None)
        );
        assert!(Status(11 | 0x80).core_dumped());
        assert!(!Status(0).core_dumped());
        assert_eq!(Status(0).code(), Some(0));
    }
}
