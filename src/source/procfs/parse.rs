//! Pure parsers for the /proc files leakhound reads. Each takes bytes as the kernel wrote them
//! and never panics on anything else: a hostile `comm` (`) `, newlines, non-UTF-8), a
//! truncated read or garbage gives `None` or skips the line. The property tests in
//! `tests/procfs_parse_props.rs` feed them arbitrary bytes. [`read_stat`] is the one reader
//! here: every place outside the sampler that wants a field of a stat file goes through it, so
//! none splits the line by hand.

use crate::model::{FdKind, ProcState, Proto, SocketState};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) leakhound uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    pub pid: u32,
    /// `comm`, lossily decoded; may contain anything but NUL.
    pub comm: String,
    pub state: ProcState,
    pub ppid: u32,
    /// User + system time, clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, clock ticks.
    pub start_ticks: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
    /// Threads in the process (`num_threads`).
    pub num_threads: u64,
    /// The wait status a zombie leaves (`exit_code`, field 52); `None` when the line stops
    /// before it (kernels before 3.5).
    pub exit_code: Option<i32>,
}

/// Parses a stat line. `comm` sits between the first `(` and the LAST `)`: the kernel does
/// not escape it, so `)` and spaces inside it are only told apart by position.
pub fn parse_stat(bytes: &[u8]) -> Option<StatLine> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(&bytes[..open])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&bytes[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field numbers below are those of proc(5) minus 3 (pid, comm, then state is index 0).
    let state = fields.next()?.chars().next().map(ProcState::from_char)?;
    let rest: Vec<&str> = fields.take(49).collect();
    let num = |i: usize| rest.get(i).and_then(|f| f.parse::<u64>().ok());
    let signed = |i: usize| rest.get(i).and_then(|f| f.parse::<i64>().ok());
    Some(StatLine {
        pid,
        comm,
        state,
        ppid: u32::try_from(num(0)?).ok()?,
        cpu_ticks: num(10)?.saturating_add(num(11)?),
        start_ticks: num(18)?,
        // rss is signed in the kernel's format; a negative value never happens in practice.
        rss_pages: signed(20).map_or(0, |v| v.max(0) as u64),
        num_threads: num(16).unwrap_or(0),
        exit_code: rest.get(48).and_then(|f| f.parse().ok()),
    })
}

/// Reads and parses `/proc/PID/stat`, or `/proc/PID/task/TID/stat` with a `tid`: `None` once
/// it is gone or when the line does not parse. Read as bytes, since `comm` need not be UTF-8.
pub fn read_stat(pid: u32, tid: Option<u32>) -> Option<StatLine> {
    let path = match tid {
        Some(tid) => format!("/proc/{pid}/task/{tid}/stat"),
        None => format!("/proc/{pid}/stat"),
    };
    parse_stat(&std::fs::read(path).ok()?)
}

/// Soft and hard `Max open files` from `/proc/PID/limits`; `None` inside means unlimited.
pub fn parse_nofile_limits(text: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
    let text = String::from_utf8_lossy(text);
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_ascii_whitespace();
    let limit = |f: Option<&str>| -> Option<Option<u64>> {
        match f? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some((limit(fields.next())?, limit(fields.next())?))
}

/// The kind of a descriptor from its `/proc/PID/fd/N` link target, and the socket inode
/// when it is a socket.
pub fn classify_fd_target(target: &[u8]) -> (FdKind, Option<u64>) {
    if let Some(inode) = bracketed(target, b"socket:[") {
        return (FdKind::Socket, Some(inode));
    }
    if target.starts_with(b"pipe:[") {
        return (FdKind::Pipe, None);
    }
    if let Some(anon) = target.strip_prefix(b"anon_inode:") {
        let kind = match anon {
            b"[eventfd]" => FdKind::Eventfd,
            b"[eventpoll]" => FdKind::Epoll,
            b"[timerfd]" => FdKind::Timerfd,
            _ => FdKind::Anon,
        };
        return (kind, None);
    }
    if target.starts_with(b"/") {
        return (FdKind::File, None);
    }
    (FdKind::Other, None)
}

/// The namespace inode of a `/proc/PID/ns/net` link (`net:[4026531840]`).
pub fn parse_netns_link(target: &[u8]) -> Option<u64> {
    bracketed(target, b"net:[")
}

fn bracketed(target: &[u8], prefix: &[u8]) -> Option<u64> {
    let inner = target.strip_prefix(prefix)?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// `/proc/PID/task/TID/wchan`: the symbol, or `None` when empty or hidden (`0`).
pub fn parse_wchan(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() || text == "0" {
        None
    } else {
        Some(text.to_string())
    }
}

/// The command a person is shown for a process: its command line, or `[comm]` when that is
/// empty (a kernel thread, a zombie, a process that cleared it), as `ps` shows them.
pub fn shown_cmd(cmdline: String, comm: &str) -> String {
    if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        cmdline
    }
}

/// The command line from `/proc/PID/cmdline`: NUL-separated arguments joined by spaces.
pub fn parse_cmdline(bytes: &[u8]) -> String {
    let trimmed = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// Seconds since boot from `/proc/uptime`.
pub fn parse_uptime(bytes: &[u8]) -> Option<f64> {
    std::str::from_utf8(bytes)
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// One row of a socket table, before it is joined to a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEntry {
    pub proto: Proto,
    pub local: String,
    pub remote: String,
    pub state: SocketState,
    pub inode: u64,
    pub tx_queue: u64,
    pub rx_queue: u64,
}

/// The state of a TCP state code (`include/net/tcp_states.h`); UDP uses the same codes
/// (`CLOSE` is an unconnected UDP socket, `ESTABLISHED` a connected one).
pub fn tcp_state_name(code: u8) -> SocketState {
    match code {
        0x01 => SocketState::Established,
        0x02 => SocketState::SynSent,
        0x03 => SocketState::SynRecv,
        0x04 => SocketState::FinWait1,
        0x05 => SocketState::FinWait2,
        0x06 => SocketState::TimeWait,
        0x07 => SocketState::Close,
        0x08 => SocketState::CloseWait,
        0x09 => SocketState::LastAck,
        0x0A => SocketState::Listen,
        0x0B => SocketState::Closing,
        0x0C => SocketState::NewSynRecv,
        _ => SocketState::Unknown,
    }
}

/// The rows of a socket table: every line after the header.
pub fn table_rows(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'\n').skip(1)
}

/// Calls `each` for every well-formed row of `/proc/PID/net/{tcp,tcp6,udp,udp6}`; rows that
/// do not parse are skipped. `wanted` filters by inode before the addresses are formatted,
/// which is most of the cost on a busy host.
pub fn parse_inet_table(
    bytes: &[u8],
    proto: Proto,
    wanted: impl Fn(u64) -> bool,
    mut each: impl FnMut(NetEntry),
) {
    for line in table_rows(bytes) {
        if let Some(entry) = parse_inet_row(line, proto, &wanted) {
            each(entry);
        }
    }
}

/// One row of an inet table, when it is well formed and `wanted` says yes to its inode (asked
/// before anything else is parsed: an index of the table is built by a `wanted` that records
/// the inode and says no).
pub fn parse_inet_row(
    line: &[u8],
    proto: Proto,
    wanted: impl FnOnce(u64) -> bool,
) -> Option<NetEntry> {
    let v6 = matches!(proto, Proto::Tcp6 | Proto::Udp6);
    let line = std::str::from_utf8(line).ok()?;
    let mut f = line.split_ascii_whitespace();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    let (Some(_sl), Some(local), Some(remote), Some(st), Some(queues)) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return None;
    };
    let inode = f.nth(4)?.parse::<u64>().ok()?;
    if !wanted(inode) {
        return None;
    }
    let (Some(local), Some(remote), Ok(state)) = (
        parse_inet_addr(local, v6),
        parse_inet_addr(remote, v6),
        u8::from_str_radix(st, 16),
    ) else {
        return None;
    };
    let (tx, rx) = queues.split_once(':').unwrap_or(("0", "0"));
    Some(NetEntry {
        proto,
        local,
        remote,
        state: tcp_state_name(state),
        inode,
        tx_queue: u64::from_str_radix(tx, 16).unwrap_or(0),
        rx_queue: u64::from_str_radix(rx, 16).unwrap_or(0),
    })
}

/// `0100007F:1F90` → `127.0.0.1:8080`; the v6 form → `[::1]:8080`. The address is the
/// kernel's `__be32` words printed as host-order integers, so each word's native bytes are
/// the address bytes.
pub fn parse_inet_addr(text: &str, v6: bool) -> Option<String> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !addr.is_ascii() {
        return None;
    }
    if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        let ip = Ipv6Addr::from(bytes);
        Some(match ip.to_ipv4_mapped() {
            // Dual-stack sockets show v4 peers as ::ffff:a.b.c.d, as ss does.
            Some(v4) => format!("[::ffff:{v4}]:{port}"),
            None => format!("[{ip}]:{port}"),
        })
    } else {
        if addr.len() != 8 {
            return None;
        }
        let word = u32::from_str_radix(addr, 16).ok()?;
        Some(format!("{}:{port}", Ipv4Addr::from(word.to_ne_bytes())))
    }
}

/// `__SO_ACCEPTCON` in the Flags column: a listening unix socket.
const UNIX_ACCEPTCON: u32 = 0x0001_0000;

/// Calls `each` for every well-formed row of `/proc/PID/net/unix`. The path (last column)
/// may contain spaces; abstract names start with `@`.
pub fn parse_unix_table(
    bytes: &[u8],
    wanted: impl Fn(u64) -> bool,
    mut each: impl FnMut(NetEntry),
) {
    for line in table_rows(bytes) {
        if let Some(entry) = parse_unix_row(line, &wanted) {
            each(entry);
        }
    }
}

/// One row of the unix table, as [`parse_inet_row`].
pub fn parse_unix_row(line: &[u8], wanted: impl FnOnce(u64) -> bool) -> Option<NetEntry> {
    let text = String::from_utf8_lossy(line);
    // Num RefCount Protocol Flags Type St Inode [Path]
    let mut f = text
        .splitn(8, |c: char| c.is_ascii_whitespace())
        .filter(|s| !s.is_empty());
    let (Some(_num), Some(_refs), Some(_proto), Some(flags), Some(_ty), Some(st), Some(inode)) = (
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
    ) else {
        return None;
    };
    let (Ok(flags), Ok(st), Ok(inode)) = (
        u32::from_str_radix(flags, 16),
        u8::from_str_radix(st, 16),
        inode.parse::<u64>(),
    ) else {
        return None;
    };
    if !wanted(inode) {
        return None;
    }
    let path = f.next().unwrap_or("").trim().to_string();
    let state = if flags & UNIX_ACCEPTCON != 0 {
        SocketState::Listen
    } else {
        match st {
            1 => SocketState::Unconnected,
            2 => SocketState::Connecting,
            3 => SocketState::Connected,
            4 => SocketState::Disconnecting,
            _ => SocketState::Unknown,
        }
    };
    Some(NetEntry {
        proto: Proto::Unix,
        local: path,
        remote: String::new(),
        state,
        inode,
        tx_queue: 0,
        rx_queue: 0,
    })
}

/// Children whose `comm` is hostile, for the tests of the code that reads their stat files.
#[cfg(test)]
pub(crate) mod hostile {
    use std::os::unix::ffi::OsStrExt;

    /// The name the kernel puts in `comm` as is: not UTF-8, with `) ` and a state letter in
    /// it, so a line read as text, or split at the first `)`, misreads it.
    pub const COMM: &[u8] = b"\xff) Z 1 (x";

    /// A child named [`COMM`], killed and reaped when dropped (a failed test included).
    pub struct Child {
        child: std::process::Child,
        _dir: tempfile::TempDir,
    }

    impl Child {
        pub fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs `program` through a symlink named [`COMM`] (`comm` is the name it was run by).
    pub fn spawn(program: &str, args: &[&str]) -> Child {
        let dir = tempfile::tempdir().expect("temporary folder");
        let link = dir.path().join(std::ffi::OsStr::from_bytes(COMM));
        std::os::unix::fs::symlink(program, &link).expect("symlink");
        let child = std::process::Command::new(&link)
            .args(args)
            .spawn()
            .expect("spawn through the symlink");
        Child { child, _dir: dir }
    }

    /// Waits (up to a minute, then fails) until `ready` holds: the kernel changes a state in
    /// its own time.
    pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ready() {
            assert!(std::time::Instant::now() < deadline, "never {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"4242 (my) proc\nx) S 1 4242 4242 0 -1 4194304 100 0 0 0 150 50 0 0 20 0 3 0 98765 10000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_with_a_hostile_comm() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "my) proc\nx");
        assert_eq!(s.state, ProcState::Sleeping);
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks, 200);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(s.rss_pages, 2560);
        assert_eq!(s.num_threads, 3);
        assert_eq!(
            s.exit_code, None,
            "a line that stops at field 44, as before 3.5"
        );
        let zombie = b"7 (a) b) Z 1 7 7 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 256\n";
        let zombie = parse_stat(zombie).unwrap();
        assert_eq!(
            (zombie.comm.as_str(), zombie.state),
            ("a) b", ProcState::Zombie)
        );
        assert_eq!(zombie.exit_code, Some(256));
        let mut non_utf8 = STAT.to_vec();
        non_utf8[6] = 0xff;
        assert_eq!(parse_stat(&non_utf8).unwrap().comm, "\u{fffd}y) proc\nx");
        assert!(parse_stat(b"12 (x) Z").is_none(), "truncated");
        assert!(parse_stat(b")(").is_none());
    }

    #[test]
    fn a_live_stat_file_with_a_hostile_comm_reads_whole() {
        let child = hostile::spawn("/bin/sleep", &["60"]);
        let pid = child.pid();
        let stat = read_stat(pid, None).expect("the stat file parses");
        assert_eq!(
            stat.comm.as_bytes(),
            String::from_utf8_lossy(hostile::COMM).as_bytes()
        );
        assert_eq!(stat.pid, pid);
        assert_eq!(stat.ppid, std::process::id());
        assert!(stat.start_ticks > 0);
        drop(child);
        assert!(read_stat(pid, None).is_none(), "gone once reaped");
    }

    #[test]
    fn limits() {
        let text =
            b"Limit                     Soft Limit           Hard Limit           Units     \n\
Max processes             63471                63471                processes \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile_limits(text), Some((Some(1024), Some(524288))));
        let unlimited =
            b"Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile_limits(unlimited), Some((None, None)));
        assert_eq!(parse_nofile_limits(b"Max open files  12"), None);
    }

    #[test]
    fn fd_kinds() {
        assert_eq!(
            classify_fd_target(b"socket:[12345]"),
            (FdKind::Socket, Some(12345))
        );
        assert_eq!(classify_fd_target(b"pipe:[9]").0, FdKind::Pipe);
        assert_eq!(
            classify_fd_target(b"anon_inode:[eventfd]").0,
            FdKind::Eventfd
        );
        assert_eq!(
            classify_fd_target(b"anon_inode:[eventpoll]").0,
            FdKind::Epoll
        );
        assert_eq!(
            classify_fd_target(b"anon_inode:[timerfd]").0,
            FdKind::Timerfd
        );
        assert_eq!(classify_fd_target(b"anon_inode:inotify").0, FdKind::Anon);
        assert_eq!(
            classify_fd_target(b"/tmp/a b\xff (deleted)").0,
            FdKind::File
        );
        assert_eq!(classify_fd_target(b"net:[4026531840]").0, FdKind::Other);
        assert_eq!(classify_fd_target(b"socket:[nope]"), (FdKind::Other, None));
    }

    #[test]
    fn inet_tables() {
        let tcp = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 08 00000002:00000010 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1\n   2: garbage\n";
        let mut rows = Vec::new();
        parse_inet_table(tcp, Proto::Tcp, |_| true, |e| rows.push(e));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].local, "127.0.0.1:8080");
        assert_eq!(rows[0].state, "LISTEN");
        assert_eq!(rows[1].remote, "127.0.0.1:54321");
        assert_eq!(rows[1].state, "CLOSE_WAIT");
        assert_eq!((rows[1].tx_queue, rows[1].rx_queue), (2, 16));
        let mut only = Vec::new();
        parse_inet_table(tcp, Proto::Tcp, |i| i == 222, |e| only.push(e.inode));
        assert_eq!(only, vec![222]);

        let tcp6 = b"header\n   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n";
        let mut rows = Vec::new();
        parse_inet_table(tcp6, Proto::Tcp6, |_| true, |e| rows.push(e));
        assert_eq!(rows[0].local, "[::1]:8080");
        assert_eq!(rows[0].remote, "[::ffff:127.0.0.1]:54321");
        assert_eq!(rows[0].state, "ESTABLISHED");
    }

    #[test]
    fn unix_table() {
        let unix = b"Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/a b.sock\n\
0000000000000000: 00000003 00000000 00000000 0001 03 1002\n\
0000000000000000: 00000003 00000000 00000000 0001 03 1003 @abstract\n";
        let mut rows = Vec::new();
        parse_unix_table(unix, |_| true, |e| rows.push(e));
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].local.as_str(), rows[0].state.as_str()),
            ("/run/a b.sock", "LISTEN")
        );
        assert_eq!(
            (rows[1].local.as_str(), rows[1].state.as_str()),
            ("", "CONNECTED")
        );
        assert_eq!(rows[2].local, "@abstract");
    }

    #[test]
    fn small_files() {
        assert_eq!(parse_wchan(b"do_epoll_wait"), Some("do_epoll_wait".into()));
        assert_eq!(parse_wchan(b"0"), None);
        assert_eq!(parse_cmdline(b"python3\0-c\0x = 1\0"), "python3 -c x = 1");
        assert_eq!(parse_uptime(b"12345.67 999.0\n"), Some(12345.67));
        assert_eq!(parse_uptime(b"nan 1"), None);
    }
}
