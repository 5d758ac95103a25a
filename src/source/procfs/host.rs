//! What the /proc sources of one host share: the process table (for descendants) and the
//! socket tables of each network namespace, read once per tick for all targets instead of once
//! per target.
//!
//! A [`ProcSource`](super::ProcSource) alone walks every process of the host to find its own
//! descendants and reads whole socket tables to find its own sockets: both cost what the host
//! holds, not what the target holds (`/proc/net/tcp` costs ~10 ms on a big machine even
//! empty: the kernel walks its whole hash). Fifty targets, or the members of a process tree,
//! each doing that is the same work fifty times. Sources opened with one [`HostView`] share
//! one read per tick: the process table as a map from parent to children, each socket table
//! as an index from inode to row, and each target looks up its own rows.
//!
//! A tick is either a period of time ([`HostView::timed`], for independent samplers such as the
//! agent's collectors: at most one read of each thing per period) or whatever the owner says
//! ([`HostView::per_call`] and [`HostView::begin_tick`], for a tree sampled member after
//! member in one call). Within a tick the socket tables are paced as a lone source paces them:
//! re-read when a target holds sockets they predate, or after [`SOCKET_RESCAN_EVERY`]
//! (stretched by what a read costs), never twice in one tick.

use super::parse::{self, StatLine};
use super::{Pace, SOCKET_RESCAN_EVERY, SOCKET_TABLES, read_file, set_path};
use crate::model::Socket;
use rustix::fd::BorrowedFd;
use rustix::fs::CWD;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A socket namespace's tables stay cached this many ticks unused before they are dropped.
const FORGET_AFTER_TICKS: u64 = 16;

/// What tick it is.
#[derive(Debug)]
enum Clock {
    Timed { epoch: Instant, tick: Duration },
    PerCall(AtomicU64),
}

/// The process table and socket tables shared by every source opened with it. Cheap to share
/// (`Arc`), safe to use from many sampling threads: the first source to need a thing in a
/// tick reads it while the others wait for it.
#[derive(Debug)]
pub struct HostView {
    clock: Clock,
    processes: Mutex<Slot<ProcTable>>,
    /// By network namespace (inode of `/proc/PID/ns/net`) and table (index in SOCKET_TABLES).
    sockets: Mutex<HashMap<(u64, usize), Slot<SocketTable>>>,
    process_reads: AtomicU64,
    table_reads: AtomicU64,
}

#[derive(Debug)]
struct Slot<T> {
    data: Option<Arc<T>>,
    tick: u64,
    pace: Pace,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            data: None,
            tick: 0,
            pace: Pace::default(),
        }
    }
}

/// How many times each shared thing was read (tests, benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    pub process_tables: u64,
    pub socket_tables: u64,
}

impl HostView {
    /// Ticks of `tick` (the sampling interval): at most one read of each thing per period.
    pub fn timed(tick: Duration) -> Arc<HostView> {
        Self::with_clock(Clock::Timed {
            epoch: Instant::now(),
            tick: tick.max(Duration::from_millis(1)),
        })
    }

    /// Ticks when [`begin_tick`](Self::begin_tick) says so.
    pub fn per_call() -> Arc<HostView> {
        Self::with_clock(Clock::PerCall(AtomicU64::new(1)))
    }

    fn with_clock(clock: Clock) -> Arc<HostView> {
        Arc::new(HostView {
            clock,
            processes: Mutex::new(Slot::default()),
            sockets: Mutex::new(HashMap::new()),
            process_reads: AtomicU64::new(0),
            table_reads: AtomicU64::new(0),
        })
    }

    /// Starts a new tick (a [`per_call`](Self::per_call) view; a timed one ignores it).
    pub fn begin_tick(&self) {
        if let Clock::PerCall(n) = &self.clock {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current tick, from 1.
    fn tick(&self) -> u64 {
        match &self.clock {
            Clock::Timed { epoch, tick } => {
                1 + (epoch.elapsed().as_nanos() / tick.as_nanos().max(1)) as u64
            }
            Clock::PerCall(n) => n.load(Ordering::Relaxed),
        }
    }

    pub fn reads(&self) -> Reads {
        Reads {
            process_tables: self.process_reads.load(Ordering::Relaxed),
            socket_tables: self.table_reads.load(Ordering::Relaxed),
        }
    }

    /// The process table of this tick. Redone every tick while a walk is cheap; a costly one
    /// is paced by its cost as a lone source paces it.
    pub(super) fn processes(&self) -> std::io::Result<Arc<ProcTable>> {
        let tick = self.tick();
        let mut slot = self.processes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(table) = &slot.data
            && (slot.tick == tick || !slot.pace.due(false, super::DESCENDANTS_EVERY))
        {
            return Ok(Arc::clone(table));
        }
        let started = Instant::now();
        let table = Arc::new(ProcTable::read(None)?);
        self.process_reads.fetch_add(1, Ordering::Relaxed);
        slot.pace.done(started);
        slot.tick = tick;
        slot.data = Some(Arc::clone(&table));
        Ok(table)
    }

    /// Socket table `which` (an index in SOCKET_TABLES) of namespace `netns`, read through
    /// `dir` (`/proc/PID` of a process in it) when due. `needs_after`: the caller holds
    /// sockets the cached copy does not list, opened after this instant; the table is re-read
    /// if it is older, unless already read this tick.
    pub(super) fn socket_table(
        &self,
        netns: u64,
        which: usize,
        dir: BorrowedFd<'_>,
        needs_after: Option<Instant>,
    ) -> Arc<SocketTable> {
        let tick = self.tick();
        let mut tables = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        tables.retain(|_, slot| slot.tick + FORGET_AFTER_TICKS >= tick);
        let slot = tables.entry((netns, which)).or_default();
        if let Some(table) = &slot.data {
            // A table older than a caller's sockets is read again at its next tick, as a lone
            // source drops its cached rows when its socket set moves.
            let stale = needs_after.is_some_and(|t| table.read_at < t);
            if slot.tick == tick || (!stale && !slot.pace.due(false, SOCKET_RESCAN_EVERY)) {
                return Arc::clone(table);
            }
        }
        let started = Instant::now();
        let table = Arc::new(SocketTable::read(dir, which));
        self.table_reads.fetch_add(1, Ordering::Relaxed);
        slot.pace.done(started);
        slot.tick = tick;
        slot.data = Some(Arc::clone(&table));
        table
    }
}

/// Every process's stat line, by parent: one walk of /proc.
#[derive(Debug)]
pub(super) struct ProcTable {
    by_parent: HashMap<u32, Vec<StatLine>>,
}

impl ProcTable {
    /// Reads `/proc/*/stat`, leaving out `skip` (a lone source's own root). Processes come and
    /// go during the walk; one that vanished is simply not listed.
    pub(super) fn read(skip: Option<u32>) -> std::io::Result<ProcTable> {
        let (mut buf, mut path) = (Vec::with_capacity(1024), String::with_capacity(32));
        let mut by_parent: HashMap<u32, Vec<StatLine>> = HashMap::new();
        for pid in super::list_numeric_dir(CWD, "/proc")? {
            if Some(pid) == skip {
                continue;
            }
            set_path(&mut path, format_args!("/proc/{pid}/stat"));
            if let Some(stat) = read_file(CWD, &path, &mut buf)
                .ok()
                .and_then(|_| parse::parse_stat(&buf))
            {
                by_parent.entry(stat.ppid).or_default().push(stat);
            }
        }
        for kids in by_parent.values_mut() {
            kids.sort_by_key(|k| k.pid);
        }
        Ok(ProcTable { by_parent })
    }

    /// The descendants of `root`, parents before their children, each with its depth (1 for
    /// a child). A pid seen twice (reused while the walk ran) is listed once.
    pub(super) fn descendants(&self, root: u32) -> Vec<(&StatLine, u32)> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([root]);
        let mut queue = vec![(root, 0u32)];
        while let Some((parent, depth)) = queue.pop() {
            for kid in self.by_parent.get(&parent).into_iter().flatten() {
                if seen.insert(kid.pid) {
                    queue.push((kid.pid, depth + 1));
                    out.push((kid, depth + 1));
                }
            }
        }
        out
    }
}

/// One socket table as read, indexed by inode: each target formats only its own rows.
#[derive(Debug)]
pub(super) struct SocketTable {
    pub(super) read_at: Instant,
    which: usize,
    bytes: Vec<u8>,
    /// inode → the row's byte range.
    rows: HashMap<u64, (usize, usize)>,
    /// Why it could not be read (a missing table, e.g. IPv6 compiled out, is no error).
    pub(super) error: Option<String>,
}

impl SocketTable {
    fn read(dir: BorrowedFd<'_>, which: usize) -> SocketTable {
        let read_at = Instant::now();
        let (path, proto) = SOCKET_TABLES[which];
        let mut bytes = Vec::new();
        let error = match read_file(dir, path, &mut bytes) {
            Ok(()) => None,
            Err(e) if super::is_gone(&e) => None,
            Err(e) => Some(format!("socket table {path} unreadable: {e}")),
        };
        let mut rows = HashMap::new();
        let start = bytes.as_ptr() as usize;
        for line in parse::table_rows(&bytes) {
            let span = (line.as_ptr() as usize - start, line.len());
            let index = |inode| {
                rows.insert(inode, span);
                false
            };
            match proto {
                Some(proto) => parse::parse_inet_row(line, proto, index),
                None => parse::parse_unix_row(line, index),
            };
        }
        SocketTable {
            read_at,
            which,
            bytes,
            rows,
            error,
        }
    }

    /// Appends the rows of the sockets in `wanted` (inode → descriptor) that this table
    /// lists; returns how many.
    pub(super) fn lookup(&self, wanted: &HashMap<u64, i32>, out: &mut Vec<Socket>) -> usize {
        let proto = SOCKET_TABLES[self.which].1;
        let before = out.len();
        for (&inode, &fd) in wanted {
            let Some(&(at, len)) = self.rows.get(&inode) else {
                continue;
            };
            let line = &self.bytes[at..at + len];
            let entry = match proto {
                Some(proto) => parse::parse_inet_row(line, proto, |_| true),
                None => parse::parse_unix_row(line, |_| true),
            };
            if let Some(e) = entry {
                out.push(super::socket_of(e, Some(fd)));
            }
        }
        out.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::procfs::ProcSource;
    use crate::source::{SampleOptions, Source, SourceError};
    use std::os::fd::AsRawFd;

    fn sample(source: &mut ProcSource) -> Result<crate::model::Snapshot, SourceError> {
        source.sample(SampleOptions::default())
    }

    /// `sleep 30` holding `listener` (inherited), which this process then closes.
    fn child_holding(listener: std::net::TcpListener) -> std::process::Child {
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        drop(listener);
        let comm = format!("/proc/{}/comm", child.id());
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            std::thread::yield_now();
        }
        child
    }

    fn row(snap: &crate::model::Snapshot, port: u16) -> Option<&Socket> {
        let port = format!(":{port}");
        snap.sockets.iter().find(|s| s.local.ends_with(&port))
    }

    #[test]
    fn two_targets_read_from_one_parse_what_each_reads_alone() {
        let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let theirs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (my_port, their_port) = (
            mine.local_addr().unwrap().port(),
            theirs.local_addr().unwrap().port(),
        );
        let mut child = child_holding(theirs);
        let me = std::process::id();
        let host = HostView::per_call();
        let shared_me = sample(&mut ProcSource::with_host(me, Arc::clone(&host)).unwrap()).unwrap();
        let shared_child =
            sample(&mut ProcSource::with_host(child.id(), Arc::clone(&host)).unwrap()).unwrap();
        let reads = host.reads();
        let alone_me = sample(&mut ProcSource::new(me).unwrap()).unwrap();
        let alone_child = sample(&mut ProcSource::new(child.id()).unwrap()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();

        let ours = row(&shared_me, my_port).expect("our listener, shared");
        assert_eq!(
            (ours.state.as_str(), ours.fd),
            ("LISTEN", Some(mine.as_raw_fd()))
        );
        assert_eq!(Some(ours), row(&alone_me, my_port), "shared row = own read");
        let child_row = row(&shared_child, their_port).expect("the child's listener, shared");
        assert_eq!(child_row.state, "LISTEN");
        assert_eq!(Some(child_row), row(&alone_child, their_port));
        // Each target gets its own sockets only.
        assert!(
            row(&shared_me, their_port).is_none(),
            "{:?}",
            shared_me.sockets
        );
        assert!(
            row(&shared_child, my_port).is_none(),
            "{:?}",
            shared_child.sockets
        );
        // Two targets, one tick: one walk of /proc, each table read at most once.
        assert_eq!(reads.process_tables, 1, "{reads:?}");
        assert!(
            (1..=SOCKET_TABLES.len() as u64).contains(&reads.socket_tables),
            "{reads:?}"
        );
    }

    #[test]
    fn a_pid_gone_since_the_tick_read_is_a_note_not_an_error() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let (me, pid) = (std::process::id(), child.id());
        let host = HostView::per_call();
        let mut gone_target = ProcSource::with_host(pid, Arc::clone(&host)).unwrap();
        let before = sample(&mut ProcSource::with_host(me, Arc::clone(&host)).unwrap()).unwrap();
        assert!(before.children.iter().any(|c| c.pid == pid), "listed");
        child.kill().unwrap();
        child.wait().unwrap();
        // Same tick: the table still lists the child, which is gone.
        let after = sample(&mut ProcSource::with_host(me, Arc::clone(&host)).unwrap())
            .expect("a descendant gone mid-tick is no error");
        assert!(after.children.iter().all(|c| c.pid != pid));
        let note = format!("child {pid} exited during the scan");
        assert!(after.notes.contains(&note), "{:?}", after.notes);
        // The gone pid as a target of its own: that target is gone, nothing else is.
        assert!(matches!(
            sample(&mut gone_target),
            Err(SourceError::NoSuchProcess(_) | SourceError::Gone(_))
        ));
        assert_eq!(host.reads().process_tables, 1);
    }

    #[test]
    fn a_socket_newer_than_the_tables_is_read_at_the_next_tick_not_twice_in_one() {
        let me = std::process::id();
        let host = HostView::per_call();
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let snap = sample(&mut ProcSource::with_host(me, Arc::clone(&host)).unwrap()).unwrap();
        assert!(row(&snap, first.local_addr().unwrap().port()).is_some());
        let new = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = new.local_addr().unwrap().port();
        // A fresh source scans its descriptors after the tables were read: the new socket is
        // missing from them (the tables it had not needed yet are read), but no table is read
        // twice in one tick.
        for _ in 0..2 {
            let snap = sample(&mut ProcSource::with_host(me, Arc::clone(&host)).unwrap()).unwrap();
            assert!(row(&snap, port).is_none(), "{:?}", snap.sockets);
        }
        let read = host.reads().socket_tables;
        assert!(read <= SOCKET_TABLES.len() as u64, "{read}");
        host.begin_tick();
        let snap = sample(&mut ProcSource::with_host(me, Arc::clone(&host)).unwrap()).unwrap();
        let found = row(&snap, port).expect("read again at the next tick");
        assert_eq!(
            (found.state.as_str(), found.fd),
            ("LISTEN", Some(new.as_raw_fd()))
        );
        assert!(host.reads().socket_tables > read);
    }

    #[test]
    fn a_source_keeps_no_rows_that_wait_for_a_newer_table() {
        let me = std::process::id();
        let host = HostView::per_call();
        let mut source = ProcSource::with_host(me, Arc::clone(&host)).unwrap();
        sample(&mut source).unwrap();
        let new = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = new.local_addr().unwrap().port();
        // Asking for the descriptor list makes this sample scan the descriptors again.
        let with_list = SampleOptions {
            fd_list: true,
            stacks: false,
        };
        let snap = source.sample(with_list).unwrap();
        assert!(
            row(&snap, port).is_none(),
            "same tick: the tables predate it"
        );
        host.begin_tick();
        let snap = sample(&mut source).unwrap();
        let found = row(&snap, port).expect("not the rows of the tick before");
        assert_eq!(found.fd, Some(new.as_raw_fd()));
    }
}
