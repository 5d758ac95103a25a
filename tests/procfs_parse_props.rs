//! The /proc parsers never panic, whatever the bytes, and hostile names survive a round trip.

use leakhound::model::{FdKind, Proto};
use leakhound::source::procfs::parse::*;
use proptest::prelude::*;

/// A stat line as the kernel would print it for a process whose comm is `comm`.
fn stat_line(
    pid: u32,
    comm: &[u8],
    state: char,
    ppid: u32,
    utime: u64,
    start: u64,
    rss: u64,
) -> Vec<u8> {
    let mut line = format!("{pid} (").into_bytes();
    line.extend_from_slice(comm);
    line.extend_from_slice(
        format!(") {state} {ppid} 1 1 0 -1 4194560 100 0 0 0 {utime} 7 0 0 20 0 1 0 {start} 1000 {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n")
            .as_bytes(),
    );
    line
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_stat(&bytes);
        let _ = parse_nofile_limits(&bytes);
        let _ = classify_fd_target(&bytes);
        let _ = parse_wchan(&bytes);
        let _ = parse_cmdline(&bytes);
        let _ = parse_uptime(&bytes);
        for proto in [Proto::Tcp, Proto::Tcp6, Proto::Udp, Proto::Udp6] {
            parse_inet_table(&bytes, proto, |_| true, |_| {});
        }
        parse_unix_table(&bytes, |_| true, |_| {});
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = parse_inet_addr(text, false);
            let _ = parse_inet_addr(text, true);
        }
    }

    #[test]
    fn arbitrary_text_lines_never_panic(lines in proptest::collection::vec("[0-9A-Fa-f: ()\\[\\]a-z/@\t-]{0,80}", 0..8)) {
        let text = lines.join("\n");
        let _ = parse_stat(text.as_bytes());
        let _ = parse_nofile_limits(text.as_bytes());
        for proto in [Proto::Tcp, Proto::Tcp6] {
            parse_inet_table(text.as_bytes(), proto, |_| true, |_| {});
        }
        parse_unix_table(text.as_bytes(), |_| true, |_| {});
    }

    /// Any comm the kernel allows (up to 15 bytes, anything but NUL: `) `, newlines, parens,
    /// invalid UTF-8) parses back with every number intact.
    #[test]
    fn hostile_comm_round_trips(
        comm in proptest::collection::vec(1u8..=255, 0..16),
        pid in 1u32..4_194_304,
        ppid in 0u32..4_194_304,
        state in prop::sample::select(vec!['R', 'S', 'D', 'Z', 'T', 't', 'X', 'I']),
        utime in 0u64..1 << 40,
        start in 0u64..1 << 40,
        rss in 0u64..1 << 30,
    ) {
        let parsed = parse_stat(&stat_line(pid, &comm, state, ppid, utime, start, rss)).unwrap();
        prop_assert_eq!(parsed.pid, pid);
        prop_assert_eq!(parsed.comm, String::from_utf8_lossy(&comm).into_owned());
        prop_assert_eq!(parsed.ppid, ppid);
        prop_assert_eq!(parsed.cpu_ticks, utime + 7);
        prop_assert_eq!(parsed.start_ticks, start);
        prop_assert_eq!(parsed.rss_pages, rss);
    }

    #[test]
    fn socket_rows_round_trip(a in any::<[u8; 4]>(), port in any::<u16>(), rport in any::<u16>(), st in 1u8..=12, inode in any::<u64>()) {
        let word = u32::from_ne_bytes(a);
        let row = format!(
            "  sl  local_address rem_address   st\n   0: {word:08X}:{port:04X} 0100007F:{rport:04X} {st:02X} 00000000:00000000 00:00000000 00000000  0  0 {inode} 1\n"
        );
        let mut seen = Vec::new();
        parse_inet_table(row.as_bytes(), Proto::Tcp, |_| true, |e| seen.push(e));
        prop_assert_eq!(seen.len(), 1);
        prop_assert_eq!(&seen[0].local, &format!("{}.{}.{}.{}:{port}", a[0], a[1], a[2], a[3]));
        prop_assert_eq!(&seen[0].remote, &format!("127.0.0.1:{rport}"));
        prop_assert_eq!(seen[0].inode, inode);
        prop_assert_eq!(seen[0].state, tcp_state_name(st));
        prop_assert!(seen[0].state != "UNKNOWN");
    }

    #[test]
    fn fd_targets_with_hostile_paths(path in proptest::collection::vec(any::<u8>(), 0..200), inode in any::<u64>()) {
        let mut file = b"/".to_vec();
        file.extend_from_slice(&path);
        prop_assert_eq!(classify_fd_target(&file).0, FdKind::File);
        let socket = format!("socket:[{inode}]");
        prop_assert_eq!(classify_fd_target(socket.as_bytes()), (FdKind::Socket, Some(inode)));
    }

    #[test]
    fn unix_paths_with_spaces_survive(path in "[ -~]{1,60}", inode in any::<u64>()) {
        let row = format!("Num RefCount Protocol Flags Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 {inode} /{path}\n");
        let mut seen = Vec::new();
        parse_unix_table(row.as_bytes(), |_| true, |e| seen.push(e));
        prop_assert_eq!(seen.len(), 1);
        prop_assert_eq!(&seen[0].local, &format!("/{path}").trim().to_string());
        prop_assert_eq!(seen[0].state, "LISTEN");
    }
}
