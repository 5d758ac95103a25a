//! The /proc view of any local process: threads, descendants, descriptors, limits, sockets.
//!
//! Linux only. All parsing is in [`parse`] (pure functions over bytes, property-tested); this
//! module does the reading. It holds an open descriptor on `/proc/PID`, so a PID reused by a
//! new process after the target exits reads as gone, never as the newcomer.
//!
//! Sampling runs at 1 Hz for as long as `watch` or the dashboard runs, so the costly parts are
//! paced by what they cost (see [`Pace`]): the descriptor count comes from one `stat` of
//! `/proc/PID/fd` (Linux ≥ 6.2 reports the count as the directory size) and the thread count
//! from the root's stat line, every sample; the per-thread reads, the per-descriptor `readlink`
//! scan, the socket tables and the /proc walk for descendants are redone when their count
//! changed, when asked for the full list, or at an idle rate that keeps each under ~0.4% of a
//! core (a socket can change state, or a descriptor be swapped, without a count moving).
//!
//! A one-shot snapshot of a big process is latency someone waits for: see [`FdJob::run`] for
//! the descriptor scan and `sample` for what runs side by side.
//!
//! The /proc walk and the socket tables cost what the host holds, not what the target holds:
//! sources sampled side by side (the agent's targets, a tree's members) share one read of them
//! per tick through a [`host::HostView`] (`ProcSource::with_host`).

pub mod host;
pub mod parse;

use super::api::{SampleOptions, Source, SourceError, now_ms};
use crate::model::{
    Child, Fd, FdKind, FdSummary, ProcState, Process, Proto, Snapshot, Socket, Thread,
};
use host::HostView;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redo the readlink scan at least this often even when the count is unchanged.
const FD_RESCAN_EVERY: Duration = Duration::from_secs(5);
/// Re-read the socket tables at least this often: states (CLOSE_WAIT) change in place.
const SOCKET_RESCAN_EVERY: Duration = Duration::from_secs(3);
/// Per-thread reads and the /proc walk: every sample while they are cheap. No base period: with
/// a 1 s one, a 1 Hz sampler (samples start 1 s apart, each scan a little later or earlier
/// within its sample) could skip every other sample, and a zombie reaped meanwhile stayed
/// listed, and aged, up to a second too long.
const THREADS_EVERY: Duration = Duration::ZERO;
const DESCENDANTS_EVERY: Duration = Duration::ZERO;
/// A part that costs `c` is redone at most every `c × IDLE_FACTOR` when nothing changed
/// (≤ 0.4% of a core each) …
const IDLE_FACTOR: u32 = 250;
/// … and every `c × CHANGED_FACTOR` when its count moved (≤ 5%).
const CHANGED_FACTOR: u32 = 20;

/// When a costly part of the sample is due again: its base period, stretched by what it cost
/// last time, so a process with 1,000 threads or 10,000 descriptors stays cheap to watch.
#[derive(Debug, Default)]
struct Pace {
    last: Option<Instant>,
    cost: Duration,
}

impl Pace {
    fn due(&self, changed: bool, base: Duration) -> bool {
        let Some(last) = self.last else {
            return true;
        };
        let since = last.elapsed();
        if changed {
            since >= self.cost * CHANGED_FACTOR
        } else {
            since >= base.max(self.cost * IDLE_FACTOR)
        }
    }

    fn done(&mut self, started: Instant) {
        self.last = Some(started);
        self.cost = started.elapsed();
    }
}

/// A source for one local PID, read through /proc. Public and composable: the probe source
/// wraps it and merges what the probe says into its snapshots.
pub struct ProcSource {
    pid: u32,
    dir: OwnedFd,
    ticks_per_sec: u64,
    page_size: u64,
    boot_epoch_ms: u64,
    buf: Vec<u8>,
    path: String,
    sampled_once: bool,
    fds: Option<FdScan>,
    fd_pace: Pace,
    sockets: Option<Vec<Socket>>,
    socket_pace: Pace,
    threads: Vec<Thread>,
    thread_pace: Pace,
    /// Descendants with their start time (epoch ms), so ages stay right between walks.
    descendants: Vec<(Child, u64)>,
    descendant_pace: Pace,
    /// The process and socket tables shared with other sources, when opened with one.
    host: Option<Arc<HostView>>,
    /// Socket inodes of ours that a shared table read after our descriptor scan did not list
    /// (netlink, packet, …): not a reason to read the tables again.
    unlisted: HashSet<u64>,
    /// What `sockets` was found in from shared tables: the descriptor scan and each table's
    /// read time. The same again gives the same rows, so they are not formatted again.
    shared_key: (Option<Instant>, Vec<(usize, Instant)>),
}

/// Result of the last readlink scan of `/proc/PID/fd`.
struct FdScan {
    open: u64,
    by_kind: BTreeMap<FdKind, u64>,
    /// socket inode → descriptor number.
    socket_fds: HashMap<u64, i32>,
    /// Only kept when the full list was asked for.
    list: Option<Vec<Fd>>,
}

impl ProcSource {
    /// Opens `/proc/PID`. Fails with [`SourceError::NoSuchProcess`] when there is no such
    /// process and [`SourceError::PermissionDenied`] when /proc hides it (hidepid).
    pub fn new(pid: u32) -> Result<Self, SourceError> {
        Self::open(pid, None)
    }

    /// As [`new`](Self::new), sharing the host-wide reads (process table, socket tables) with
    /// every other source opened with `host`: for many targets sampled side by side.
    pub fn with_host(pid: u32, host: Arc<HostView>) -> Result<Self, SourceError> {
        Self::open(pid, Some(host))
    }

    fn open(pid: u32, host: Option<Arc<HostView>>) -> Result<Self, SourceError> {
        let dir = rustix::fs::openat(
            CWD,
            format!("/proc/{pid}"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ACCESS | Errno::PERM => SourceError::PermissionDenied {
                pid,
                what: String::new(),
            },
            _ => SourceError::NoSuchProcess(pid),
        })?;
        let mut source = ProcSource {
            pid,
            dir,
            ticks_per_sec: rustix::param::clock_ticks_per_second().max(1),
            page_size: rustix::param::page_size() as u64,
            boot_epoch_ms: 0,
            buf: Vec::with_capacity(64 * 1024),
            path: String::with_capacity(64),
            sampled_once: false,
            fds: None,
            fd_pace: Pace::default(),
            sockets: None,
            socket_pace: Pace::default(),
            threads: Vec::new(),
            thread_pace: Pace::default(),
            descendants: Vec::new(),
            descendant_pace: Pace::default(),
            host,
            unlisted: HashSet::new(),
            shared_key: (None, Vec::new()),
        };
        source.boot_epoch_ms = source.read_boot_epoch_ms();
        Ok(source)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn read_boot_epoch_ms(&mut self) -> u64 {
        let now = now_ms();
        match read_file(CWD, "/proc/uptime", &mut self.buf)
            .ok()
            .and_then(|_| parse::parse_uptime(&self.buf))
        {
            Some(up) => now.saturating_sub((up * 1000.0) as u64),
            None => 0,
        }
    }

    fn ticks_to_ms(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1000) / self.ticks_per_sec
    }

    /// The root's stat line, or why the root is gone.
    fn read_root_stat(&mut self) -> Result<parse::StatLine, SourceError> {
        let gone = |pid: u32, first: bool, why: &str| {
            if first {
                SourceError::NoSuchProcess(pid)
            } else {
                SourceError::Gone(format!("pid {pid} {why}"))
            }
        };
        let first = !self.sampled_once;
        match read_file(self.dir.as_fd(), "stat", &mut self.buf) {
            Ok(()) => {}
            Err(e) if is_denied(&e) => {
                return Err(SourceError::PermissionDenied {
                    pid: self.pid,
                    what: "stat".into(),
                });
            }
            Err(_) => return Err(gone(self.pid, first, "exited")),
        }
        let stat = parse::parse_stat(&self.buf).ok_or_else(|| {
            SourceError::Other(format!(
                "/proc/{}/stat did not parse; please report this with the file's content",
                self.pid
            ))
        })?;
        if matches!(stat.state, ProcState::Zombie | ProcState::Dead) {
            return Err(gone(
                self.pid,
                first,
                "exited (a zombie until its parent reaps it)",
            ));
        }
        Ok(stat)
    }

    fn read_process(&mut self, stat: &parse::StatLine, notes: &mut Vec<String>) -> Process {
        let cmd = match read_file(self.dir.as_fd(), "cmdline", &mut self.buf) {
            Ok(()) => parse::parse_cmdline(&self.buf),
            Err(e) => {
                notes.push(format!("command line unreadable: {e}"));
                String::new()
            }
        };
        let uid = rustix::fs::fstat(&self.dir).map_or(0, |st| st.st_uid);
        Process {
            pid: self.pid,
            ppid: stat.ppid,
            name: stat.comm.clone(),
            cmd: parse::shown_cmd(cmd, &stat.comm),
            state: stat.state,
            start_time_ms: self.boot_epoch_ms + self.ticks_to_ms(stat.start_ticks),
            rss_bytes: stat.rss_pages.saturating_mul(self.page_size),
            cpu_time_ms: self.ticks_to_ms(stat.cpu_ticks),
            uid,
        }
    }

    /// Threads, rescanned when their number changed or when due; cached otherwise.
    fn read_threads(&mut self, num_threads: u64, notes: &mut Vec<String>) -> Vec<Thread> {
        let changed = self.threads.len() as u64 != num_threads;
        if self.thread_pace.due(changed, THREADS_EVERY) {
            let started = Instant::now();
            self.threads = self.scan_threads(notes);
            self.thread_pace.done(started);
        }
        self.threads.clone()
    }

    fn scan_threads(&mut self, notes: &mut Vec<String>) -> Vec<Thread> {
        let tids = match list_numeric_dir(self.dir.as_fd(), "task") {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!("threads unreadable (/proc/{}/task): {e}", self.pid));
                return Vec::new();
            }
        };
        let (dir, ticks) = (self.dir.as_fd(), self.ticks_per_sec);
        let read: Vec<Option<Thread>> = in_parallel(&tids, |chunk| {
            let (mut buf, mut path) = (Vec::with_capacity(1024), String::with_capacity(32));
            chunk
                .iter()
                .map(|&tid| {
                    set_path(&mut path, format_args!("task/{tid}/stat"));
                    read_file(dir, &path, &mut buf).ok()?;
                    let stat = parse::parse_stat(&buf)?;
                    set_path(&mut path, format_args!("task/{tid}/wchan"));
                    let wchan = read_file(dir, &path, &mut buf)
                        .ok()
                        .and_then(|_| parse::parse_wchan(&buf));
                    Some(Thread {
                        tid,
                        name: stat.comm,
                        state: stat.state,
                        cpu_time_ms: stat.cpu_ticks.saturating_mul(1000) / ticks,
                        wchan,
                        ..Default::default()
                    })
                })
                .collect()
        });
        let vanished = read.iter().filter(|t| t.is_none()).count();
        let threads: Vec<Thread> = read.into_iter().flatten().collect();
        if vanished > 0 {
            notes.push(format!("{vanished} thread(s) exited during the scan"));
        }
        threads
    }

    /// Descendants, from a fresh /proc walk when due; ages are always current.
    fn read_descendants(&mut self, now: u64, notes: &mut Vec<String>) -> Vec<Child> {
        if self.descendant_pace.due(false, DESCENDANTS_EVERY) {
            let started = Instant::now();
            self.descendants = self.walk_descendants(notes);
            self.descendant_pace.done(started);
        }
        self.descendants
            .iter()
            .map(|(child, started)| Child {
                age_ms: now.saturating_sub(*started),
                ..child.clone()
            })
            .collect()
    }

    /// The tree under the root, from the shared process table or one walk of /proc.
    fn walk_descendants(&mut self, notes: &mut Vec<String>) -> Vec<(Child, u64)> {
        let table = match &self.host {
            Some(host) => host.processes(),
            None => host::ProcTable::read(Some(self.pid)).map(Arc::new),
        };
        let table = match table {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!("process list unreadable (/proc): {e}"));
                return Vec::new();
            }
        };
        let mut children = Vec::new();
        for (kid, depth) in table.descendants(self.pid) {
            set_path(&mut self.path, format_args!("/proc/{}/cmdline", kid.pid));
            let cmd = match read_file(CWD, &self.path, &mut self.buf) {
                Ok(()) => parse::parse_cmdline(&self.buf),
                // Listed by a walk earlier in the tick, gone since: said, not an error.
                Err(e) if is_gone(&e) => {
                    notes.push(format!("child {} exited during the scan", kid.pid));
                    continue;
                }
                Err(_) => String::new(),
            };
            let started = self.boot_epoch_ms + self.ticks_to_ms(kid.start_ticks);
            let child = Child {
                pid: kid.pid,
                ppid: kid.ppid,
                state: kid.state,
                cmd: parse::shown_cmd(cmd, &kid.comm),
                age_ms: 0,
                depth,
                has_probe: false,
            };
            children.push((child, started));
        }
        children.sort_by_key(|(c, _)| (c.depth, c.pid));
        children
    }

    fn read_limits(&mut self, summary: &mut FdSummary, notes: &mut Vec<String>) {
        match read_file(self.dir.as_fd(), "limits", &mut self.buf) {
            Ok(()) => match parse::parse_nofile_limits(&self.buf) {
                Some((soft, hard)) => {
                    summary.soft_limit = soft;
                    summary.hard_limit = hard;
                }
                None => notes.push(format!(
                    "/proc/{}/limits has no 'Max open files' line",
                    self.pid
                )),
            },
            Err(e) => notes.push(format!("descriptor limits unreadable: {e}")),
        }
    }

    /// The open count (cheap, every sample), and the readlink scan's job when it is due.
    fn plan_fds(&mut self, options: SampleOptions) -> Result<Option<FdJob>, SourceError> {
        let fast_count = match rustix::fs::statat(&self.dir, "fd", AtFlags::empty()) {
            Ok(st) if st.st_size > 0 => Some(st.st_size as u64),
            // Before Linux 6.2 (or no descriptors at all) the size is 0: count the entries,
            // still far cheaper than a readlink each.
            Ok(_) => match list_numeric_dir(self.dir.as_fd(), "fd") {
                Ok(fds) => Some(fds.len() as u64),
                Err(e) if is_denied(&e) => return Err(self.fd_denied()),
                Err(_) => None,
            },
            Err(Errno::ACCESS | Errno::PERM) => return Err(self.fd_denied()),
            Err(_) => return Err(SourceError::Gone(format!("pid {} exited", self.pid))),
        };
        let due = match (&mut self.fds, fast_count) {
            (None, _) | (_, None) => true,
            (Some(scan), Some(open)) => {
                let changed = scan.open != open;
                scan.open = open;
                (options.fd_list && scan.list.is_none())
                    || self.fd_pace.due(changed, FD_RESCAN_EVERY)
            }
        };
        if !due {
            return Ok(None);
        }
        let dir = rustix::fs::openat(
            &self.dir,
            "fd",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ACCESS | Errno::PERM => self.fd_denied(),
            _ => SourceError::Gone(format!("pid {} exited", self.pid)),
        })?;
        Ok(Some(FdJob {
            dir,
            expected: fast_count,
            with_list: options.fd_list,
            started: Instant::now(),
        }))
    }

    fn fd_denied(&self) -> SourceError {
        SourceError::PermissionDenied {
            pid: self.pid,
            what: "fd".into(),
        }
    }

    /// Keeps a finished scan, and drops the cached socket rows when the socket set moved.
    fn store_fd_scan(
        &mut self,
        started: Instant,
        scan: std::io::Result<FdScan>,
    ) -> Result<(), SourceError> {
        let scan = scan.map_err(|e| {
            if is_denied(&e) {
                self.fd_denied()
            } else {
                SourceError::Gone(format!("pid {} exited", self.pid))
            }
        })?;
        // Sockets follow the descriptors: a new set of socket inodes means new rows.
        let sockets_changed = self.fds.as_ref().is_none_or(|old| {
            old.socket_fds.len() != scan.socket_fds.len()
                || scan
                    .socket_fds
                    .keys()
                    .any(|k| !old.socket_fds.contains_key(k))
        });
        if sockets_changed {
            self.sockets = None;
        }
        self.fds = Some(scan);
        self.fd_pace.done(started);
        Ok(())
    }

    /// Every socket table, read ahead while the descriptor scan runs on another thread (which
    /// socket inodes to look for is known only after it). Reading a table costs mostly the
    /// kernel's walk of its hash buckets, whatever rows it holds. Shared tables are read ahead
    /// into the host view (this tick's copy, for every source), and `None` is returned.
    fn prefetch_socket_tables(&self) -> Option<Vec<std::io::Result<Vec<u8>>>> {
        if let Some(host) = &self.host {
            if let Some(netns) = self.netns() {
                for which in 0..SOCKET_TABLES.len() {
                    host.socket_table(netns, which, self.dir.as_fd(), None);
                }
            }
            return None;
        }
        let tables = SOCKET_TABLES
            .iter()
            .map(|(path, _)| {
                let mut buf = Vec::new();
                read_file(self.dir.as_fd(), path, &mut buf).map(|()| buf)
            })
            .collect();
        Some(tables)
    }

    /// The rows of the target's own network namespace tables that its descriptors hold.
    /// `prefetched` holds the tables in [`SOCKET_TABLES`] order when they were read ahead.
    fn read_sockets(
        &mut self,
        notes: &mut Vec<String>,
        mut prefetched: Option<Vec<std::io::Result<Vec<u8>>>>,
    ) -> Vec<Socket> {
        if let Some(host) = self.host.clone()
            && let Some(netns) = self.netns()
        {
            return self.shared_sockets(&host, netns, notes);
        }
        let Some(fds) = self.fds.as_ref() else {
            return Vec::new();
        };
        if let Some(cached) = &self.sockets
            && prefetched.is_none()
            && !self.socket_pace.due(false, SOCKET_RESCAN_EVERY)
        {
            return cached.clone();
        }
        let started = Instant::now();
        let wanted = &fds.socket_fds;
        let mut sockets = Vec::new();
        if !wanted.is_empty() {
            for (i, (path, proto)) in SOCKET_TABLES.into_iter().enumerate() {
                // Every socket accounted for: the remaining tables cannot add any.
                if sockets.len() >= wanted.len() {
                    break;
                }
                let ahead = prefetched
                    .as_mut()
                    .and_then(|tables| tables.get_mut(i))
                    .map(|table| std::mem::replace(table, Ok(Vec::new())));
                let table = match ahead {
                    Some(table) => table.map(std::borrow::Cow::Owned),
                    None => read_file(self.dir.as_fd(), path, &mut self.buf)
                        .map(|()| std::borrow::Cow::Borrowed(&self.buf[..])),
                };
                let table = match table {
                    Ok(table) => table,
                    Err(e) => {
                        // IPv6 or unix support may be compiled out; only other errors are worth
                        // a note.
                        if !is_gone(&e) {
                            notes.push(format!(
                                "socket table /proc/{}/{path} unreadable: {e}",
                                self.pid
                            ));
                        }
                        continue;
                    }
                };
                let push = |e: parse::NetEntry| {
                    let fd = wanted.get(&e.inode).copied();
                    sockets.push(socket_of(e, fd))
                };
                let is_wanted = |inode: u64| wanted.contains_key(&inode);
                match proto {
                    Some(proto) => parse::parse_inet_table(&table, proto, is_wanted, push),
                    None => parse::parse_unix_table(&table, is_wanted, push),
                }
            }
            sockets.sort_by_key(|s| (s.fd, s.inode));
        }
        self.sockets = Some(sockets.clone());
        self.socket_pace.done(started);
        sockets
    }

    /// The network namespace the target is in (the inode of `/proc/PID/ns/net`), which says
    /// whose socket tables it shares; `None` when not allowed to look.
    fn netns(&self) -> Option<u64> {
        let link = rustix::fs::readlinkat(&self.dir, "ns/net", Vec::new()).ok()?;
        parse::parse_netns_link(link.as_bytes())
    }

    /// Our sockets' rows from the tables shared through `host`. A table read before our last
    /// descriptor scan that misses sockets we hold (opened since) is read again, at most once
    /// a tick; a socket no table lists even then (netlink, packet) is remembered, so it does
    /// not bring every later sample back to the tables.
    fn shared_sockets(
        &mut self,
        host: &HostView,
        netns: u64,
        notes: &mut Vec<String>,
    ) -> Vec<Socket> {
        let Some(fds) = self.fds.as_ref() else {
            return Vec::new();
        };
        let wanted = &fds.socket_fds;
        let scanned_at = self.fd_pace.last;
        if let Some(rows) = &self.sockets
            && self.shared_key.0 == scanned_at
            && self.shared_key.1.iter().all(|&(which, at)| {
                host.socket_table(netns, which, self.dir.as_fd(), None)
                    .read_at
                    == at
            })
        {
            return rows.clone();
        }
        let mut needs_after = None;
        loop {
            let mut sockets = Vec::new();
            let mut used = Vec::new();
            for which in 0..SOCKET_TABLES.len() {
                // Every socket accounted for: the remaining tables cannot add any.
                if sockets.len() >= wanted.len() {
                    break;
                }
                let table = host.socket_table(netns, which, self.dir.as_fd(), needs_after);
                if let Some(e) = &table.error {
                    notes.push(format!("{e} (read through /proc/{})", self.pid));
                }
                used.push((which, table.read_at));
                table.lookup(wanted, &mut sockets);
            }
            let oldest = used.iter().map(|&(_, at)| at).min();
            let found: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
            let missing = wanted.keys().filter(|i| !found.contains(i));
            let predates = matches!((oldest, scanned_at), (Some(o), Some(s)) if o < s);
            let incomplete = predates && missing.clone().any(|i| !self.unlisted.contains(i));
            if needs_after.is_none() && incomplete {
                needs_after = scanned_at;
                continue;
            }
            if !predates {
                self.unlisted = missing.copied().collect();
            }
            sockets.sort_by_key(|s| (s.fd, s.inode));
            // Rows still waiting for a newer table are not kept: the next tick reads one.
            self.sockets = (!incomplete).then(|| sockets.clone());
            self.shared_key = (scanned_at, used);
            return sockets;
        }
    }
}

/// A socket table's row as a socket, held by descriptor `fd` when one was found.
fn socket_of(e: parse::NetEntry, fd: Option<i32>) -> Socket {
    Socket {
        proto: e.proto,
        local: e.local,
        remote: e.remote,
        state: e.state,
        inode: e.inode,
        fd,
        rx_queue: e.rx_queue,
        tx_queue: e.tx_queue,
    }
}

/// The socket tables of the target's network namespace, in the order they are searched.
const SOCKET_TABLES: [(&str, Option<Proto>); 5] = [
    ("net/tcp", Some(Proto::Tcp)),
    ("net/tcp6", Some(Proto::Tcp6)),
    ("net/udp", Some(Proto::Udp)),
    ("net/udp6", Some(Proto::Udp6)),
    ("net/unix", None),
];

/// A due readlink scan of `/proc/PID/fd`: owns what it needs, so it can run on its own thread
/// while the sampler reads the threads.
struct FdJob {
    dir: OwnedFd,
    /// The open count, when the directory's size gives it (Linux ≥ 6.2).
    expected: Option<u64>,
    with_list: bool,
    started: Instant,
}

/// Free descriptor numbers tried before the direct scan gives up and lists the directory.
const FD_PROBE_MISSES: u64 = 64;

impl FdJob {
    /// Reads every descriptor's link. Descriptors are handed out lowest-free-first, so when the
    /// open count is known, the numbers 0, 1, 2, … are read directly until that many were
    /// found (or too many numbers were free): that skips most of the directory listing, which
    /// builds a dentry per entry and costs a quarter of the scan at 10,000 descriptors. The
    /// listing then covers only the numbers not tried, e.g. a descriptor `dup2`'d high.
    fn run(self) -> std::io::Result<FdScan> {
        let (mut link, mut name) = ([0u8; 4096], String::with_capacity(12));
        let mut links = Vec::with_capacity(self.expected.unwrap_or(64) as usize);
        let mut read = |fd: i32, links: &mut Vec<(i32, FdKind, Option<u64>, Option<String>)>| {
            set_path(&mut name, format_args!("{fd}"));
            // A descriptor closed between listing and readlink is simply not counted.
            let Ok(len) = rustix::fs::readlinkat_raw(&self.dir, name.as_str(), &mut link[..])
            else {
                return false;
            };
            let target = &link[..len.min(link.len())];
            let (kind, inode) = parse::classify_fd_target(target);
            let target = self
                .with_list
                .then(|| String::from_utf8_lossy(target).into_owned());
            links.push((fd, kind, inode, target));
            true
        };
        // Numbers below `next` were each read directly; the listing covers the rest, so a
        // descriptor open throughout the scan is never missed, even when others open and close
        // meanwhile and the count is reached early.
        let mut next = 0i32;
        if let Some(expected) = self.expected {
            let budget = FD_PROBE_MISSES + expected / 16;
            let mut misses = 0;
            while (links.len() as u64) < expected && misses <= budget {
                if !read(next, &mut links) {
                    misses += 1;
                }
                next += 1;
            }
        }
        let mut entries = rustix::fs::Dir::read_from(&self.dir)?;
        // In /proc/PID/fd a directory offset is the descriptor number + 2 (after . and ..):
        // the listing starts where the direct reads stopped, so it costs next to nothing
        // when the table is dense. Were the offset ever not honoured, the filter keeps the
        // result right.
        if next > 0 {
            entries.seek(i64::from(next) + 2)?;
        }
        while let Some(entry) = entries.read() {
            if let Some(fd) = std::str::from_utf8(entry?.file_name().to_bytes())
                .ok()
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|&fd| fd >= next)
            {
                read(fd, &mut links);
            }
        }
        let mut scan = FdScan {
            open: 0,
            by_kind: BTreeMap::new(),
            socket_fds: HashMap::new(),
            list: self.with_list.then(|| Vec::with_capacity(links.len())),
        };
        for (fd, kind, inode, target) in links {
            scan.open += 1;
            *scan.by_kind.entry(kind).or_default() += 1;
            if let Some(inode) = inode {
                scan.socket_fds.insert(inode, fd);
            }
            if let (Some(list), Some(target)) = (scan.list.as_mut(), target) {
                list.push(Fd { fd, kind, target });
            }
        }
        if let Some(list) = scan.list.as_mut() {
            list.sort_by_key(|f| f.fd);
        }
        Ok(scan)
    }
}

impl Source for ProcSource {
    fn describe(&self) -> String {
        format!("pid {} (procfs)", self.pid)
    }

    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
        let taken_at_ms = now_ms();
        let stat = self.read_root_stat()?;
        let mut notes = Vec::new();
        let process = self.read_process(&stat, &mut notes);
        let mut fds = FdSummary::default();
        self.read_limits(&mut fds, &mut notes);
        let fd_job = self.plan_fds(options)?;
        // For a big process the descriptor scan runs on its own thread beside the per-thread
        // reads and the socket tables (which are then read whole, ahead of knowing which rows
        // are wanted): a one-shot snapshot waits for the longer side, not the sum. The two
        // sides share some kernel locks, so the overlap saves about a third, not half. A
        // small process is not worth a thread.
        let side_by_side = fd_job
            .as_ref()
            .is_some_and(|job| job.expected.is_none_or(|n| n >= SIDE_BY_SIDE_MIN_FDS))
            && stat.num_threads >= SIDE_BY_SIDE_MIN_THREADS;
        let (scan, threads, children, tables) = match fd_job {
            Some(job) if side_by_side => std::thread::scope(|scope| {
                let started = job.started;
                let scan = scope.spawn(move || job.run());
                let threads = self.read_threads(stat.num_threads, &mut notes);
                let children = self.read_descendants(taken_at_ms, &mut notes);
                let tables = self.prefetch_socket_tables();
                let scan = scan
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the descriptor scan panicked")));
                (Some((started, scan)), threads, children, tables)
            }),
            job => {
                let threads = self.read_threads(stat.num_threads, &mut notes);
                let children = self.read_descendants(taken_at_ms, &mut notes);
                (
                    job.map(|job| (job.started, job.run())),
                    threads,
                    children,
                    None,
                )
            }
        };
        if let Some((started, scan)) = scan {
            self.store_fd_scan(started, scan)?;
        }
        let scan = self
            .fds
            .as_ref()
            .expect("a first sample always scans the descriptors");
        fds.open = scan.open;
        fds.by_kind = scan.by_kind.clone();
        let fd_list = if options.fd_list {
            scan.list.clone()
        } else {
            None
        };
        let sockets = self.read_sockets(&mut notes, tables);
        // The root vanishing mid-scan leaves a torn snapshot: report it as gone instead.
        self.read_root_stat()?;
        self.sampled_once = true;
        Ok(Snapshot {
            taken_at_ms,
            pid: self.pid,
            source: "procfs".into(),
            process: Some(process),
            threads,
            children,
            fds,
            fd_list,
            sockets,
            probe: None,
            notes,
            ..Snapshot::default()
        })
    }
}

/// Below these, the descriptor scan runs on the sampling thread: a thread costs more than the
/// overlap saves.
const SIDE_BY_SIDE_MIN_FDS: u64 = 512;
const SIDE_BY_SIDE_MIN_THREADS: u64 = 64;

/// Items per thread below which a scan is not split: a thread costs more than it saves.
const PER_THREAD_MIN: usize = 1024;

/// Maps `work` over `items`, split across up to 4 threads when there are thousands: the
/// per-item cost of a big scan is all system calls, and a one-shot snapshot of a process with
/// 10,000 descriptors is latency the user waits for. Order is kept.
fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(items.len() / PER_THREAD_MIN)
        .max(1);
    if threads == 1 {
        return work(items);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|chunk| scope.spawn(move || work(chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn set_path(path: &mut String, args: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    path.clear();
    let _ = path.write_fmt(args);
}

const SHORT_READ_IS_WHOLE: usize = 1024;

/// Reads a whole file relative to `dir` into `buf`, reusing its allocation.
fn read_file(dir: BorrowedFd<'_>, path: &str, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let fd = rustix::fs::openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut file = std::fs::File::from(fd);
    // Small /proc files (stat, wchan) come whole in one read, so a short first read means the
    // end and the extra read that would return 0 is skipped. Only under 1 KiB: a seq_file
    // (the socket tables) hands out up to a page per read however large the buffer.
    // A one-page window: zeroing the whole (possibly large) buffer per read would cost more
    // than the read.
    buf.resize(4096, 0);
    let n = loop {
        match file.read(buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        }
    };
    buf.truncate(n);
    if n < SHORT_READ_IS_WHOLE {
        return Ok(());
    }
    file.read_to_end(buf)?;
    Ok(())
}

/// Numeric entries of a directory (PIDs, TIDs), sorted.
fn list_numeric_dir(dir: BorrowedFd<'_>, path: &str) -> std::io::Result<Vec<u32>> {
    let fd = rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut entries = rustix::fs::Dir::read_from(&fd)?;
    let mut out = Vec::new();
    while let Some(entry) = entries.read() {
        let entry = entry?;
        if let Some(n) = std::str::from_utf8(entry.file_name().to_bytes())
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn samples_itself() {
        let mut source = ProcSource::new(std::process::id()).unwrap();
        let _keep = std::fs::File::open("/proc/self/stat").unwrap();
        let snap = source
            .sample(SampleOptions {
                fd_list: true,
                stacks: false,
            })
            .unwrap();
        let process = snap.process.as_ref().unwrap();
        assert_eq!(process.pid, std::process::id());
        assert!(process.rss_bytes > 0);
        assert!(snap.threads.iter().any(|t| t.tid == std::process::id()));
        assert!(snap.fds.open >= 1);
        let list = snap.fd_list.as_ref().unwrap();
        assert!(list.iter().any(|f| f.target.ends_with("/stat")), "{list:?}");
        assert!(snap.fds.by_kind.get(&FdKind::File).copied().unwrap_or(0) >= 1);
        let start = process.start_time_ms;
        assert!(start <= now_ms() && start > now_ms() - 3_600_000, "{start}");
    }

    #[test]
    fn threads_and_children_vanishing_mid_scan_are_not_errors() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let churn = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                // Bounded: at most a few thousand short threads and children.
                for i in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::spawn(|| {}).join().unwrap();
                    if i % 50 == 0 {
                        let _ = std::process::Command::new("true").status();
                    }
                }
            })
        };
        let mut seen_threads = 0;
        for _ in 0..40 {
            // A fresh source each time: every part is scanned, nothing cached.
            let snap = ProcSource::new(std::process::id())
                .unwrap()
                .sample(SampleOptions::default())
                .expect("a vanishing thread or child is never an error");
            seen_threads = seen_threads.max(snap.threads.len());
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        assert!(seen_threads >= 2);
    }

    fn fd_job(expected: Option<u64>) -> FdJob {
        FdJob {
            dir: rustix::fs::openat(
                CWD,
                "/proc/self/fd",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            expected,
            with_list: true,
            started: Instant::now(),
        }
    }

    #[test]
    fn a_descriptor_far_above_the_rest_is_found() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        let high = (limit.rlim_cur.min(1_000) - 1) as i32;
        // SAFETY: dup2 onto a number this test owns; closed below.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), high) }, high);
        let open = rustix::fs::stat("/proc/self/fd").unwrap().st_size as u64;
        // The direct scan gives up on the gap below `high` and lists the rest; the listing
        // alone (no count known) finds it too.
        for expected in [Some(open), None] {
            let scan = fd_job(expected).run().unwrap();
            let list = scan.list.unwrap();
            assert!(
                list.iter()
                    .any(|f| f.fd == high && f.target.ends_with("/stat")),
                "fd {high} missing with expected={expected:?}: {list:?}"
            );
            assert!(list.windows(2).all(|w| w[0].fd < w[1].fd), "{list:?}");
        }
        // SAFETY: closes the number dup2'd above.
        unsafe { libc::close(high) };
    }

    #[test]
    fn the_direct_scan_reads_what_the_listing_reads() {
        let _held: Vec<_> = (0..40)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let open = rustix::fs::stat("/proc/self/fd").unwrap().st_size as u64;
        let direct = fd_job(Some(open)).run().unwrap();
        let listed = fd_job(None).run().unwrap();
        let nulls = |scan: &FdScan| {
            scan.list
                .as_ref()
                .unwrap()
                .iter()
                .filter(|f| f.target == "/dev/null")
                .count()
        };
        // Other tests open and close descriptors meanwhile: ours are in both.
        assert!(nulls(&direct) >= 40 && nulls(&listed) >= 40);
        assert!(direct.open >= 40 && direct.by_kind[&FdKind::File] >= 40);
    }

    #[test]
    fn a_big_process_is_scanned_side_by_side_with_its_sockets() {
        // Enough descriptors and threads for the descriptor scan to get its own thread, and
        // the socket tables read ahead.
        let files: Vec<_> = (0..SIDE_BY_SIDE_MIN_FDS + 8)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (park, parked) = std::sync::mpsc::channel::<()>();
        let parked = std::sync::Arc::new(std::sync::Mutex::new(parked));
        let threads: Vec<_> = (0..SIDE_BY_SIDE_MIN_THREADS)
            .map(|_| {
                let parked = std::sync::Arc::clone(&parked);
                std::thread::spawn(move || {
                    let _ = parked.lock().unwrap().recv();
                })
            })
            .collect();
        let snap = ProcSource::new(std::process::id())
            .unwrap()
            .sample(SampleOptions {
                fd_list: true,
                stacks: false,
            })
            .unwrap();
        drop(park);
        threads.into_iter().for_each(|t| t.join().unwrap());
        let list = snap.fd_list.unwrap();
        let nulls = list.iter().filter(|f| f.target == "/dev/null").count();
        assert!(nulls >= files.len(), "{nulls} of {}", files.len());
        assert!(snap.threads.len() as u64 > SIDE_BY_SIDE_MIN_THREADS);
        let ours = snap
            .sockets
            .iter()
            .find(|s| s.local.ends_with(&format!(":{port}")))
            .unwrap_or_else(|| panic!("listener :{port} missing: {:?}", snap.sockets));
        assert_eq!(ours.state, "LISTEN");
        assert_eq!(ours.fd, Some(listener.as_raw_fd()));
    }

    #[test]
    fn nonexistent_pid() {
        // PIDs above pid_max (at most 2^22) never exist.
        assert!(matches!(
            ProcSource::new(4_194_305 + 17),
            Err(SourceError::NoSuchProcess(_))
        ));
    }
}
