//! Finding the socket a probe of a PID listens on (PROTOCOL.md, "Where the socket is"), and
//! deciding whether to trust it (docs/RELIABILITY.md, "Who may connect to what").
//!
//! Anyone on the host can make a folder under /tmp and put a socket named `<pid>.sock` in it;
//! a socket found by its name is used only when the kernel says it belongs to the target: the
//! folder and the socket owned by the target's uid (or root), not writable by others, the
//! folder no symbolic link, and (checked on connect, [`check_peer`]) the listener the target
//! itself or a process of its uid.

use super::client::Peer;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Folders a probe of `pid` may listen in (PROTOCOL.md), most specific first: the target's own
/// `LEAKHOUND_SOCKET_DIR` / `XDG_RUNTIME_DIR` (read from /proc/PID/environ when allowed), ours,
/// then `/tmp/leakhound-<uid>` for the target's uid and ours.
pub fn socket_dirs(pid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let from_target = |key: &str| -> Option<String> {
        environ.split(|&b| b == 0).find_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (k, v) = text.split_once('=')?;
            (k == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    let ours = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    for value in [
        from_target("LEAKHOUND_SOCKET_DIR"),
        ours("LEAKHOUND_SOCKET_DIR"),
    ]
    .into_iter()
    .flatten()
    {
        dirs.push(PathBuf::from(value));
    }
    for value in [from_target("XDG_RUNTIME_DIR"), ours("XDG_RUNTIME_DIR")]
        .into_iter()
        .flatten()
    {
        dirs.push(Path::new(&value).join("leakhound"));
    }
    let target_uid = uid_of(pid);
    for uid in [target_uid, Some(rustix::process::getuid().as_raw())]
        .into_iter()
        .flatten()
    {
        dirs.push(PathBuf::from(format!("/tmp/leakhound-{uid}")));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// What looking for the probe of a PID found: the socket to use, and one note per socket that
/// was there but not trusted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub socket: Option<PathBuf>,
    pub ignored: Vec<String>,
}

/// The socket a probe of `pid` listens on, if one exists and is trusted: first at the guessed
/// paths ([`socket_dirs`]), then where a probe that refused those folders went instead (its
/// listening sockets in /proc, or `/tmp/leakhound-<uid>-*/`).
pub fn find_socket(pid: u32) -> Found {
    let target_uid = uid_of(pid);
    let mut found = Found::default();
    let guessed = socket_dirs(pid)
        .into_iter()
        .map(|d| d.join(format!("{pid}.sock")));
    let mut seen = std::collections::HashSet::new();
    // The fallback reads every descriptor's link (thousands in a loaded worker): only when
    // no guessed path holds a trusted socket.
    let fallback = std::iter::once_with(|| fallback_sockets(pid, target_uid)).flatten();
    for path in guessed.chain(fallback) {
        if !seen.insert(path.clone()) || !is_socket(&path) {
            continue;
        }
        match target_uid.map_or(Ok(()), |uid| check_socket(&path, uid)) {
            Ok(()) => {
                found.socket = Some(path);
                return found;
            }
            Err(why) => found.ignored.push(why),
        }
    }
    found
}

/// The uid a process runs as (its effective uid in /proc/PID/status; the owner of its /proc
/// folder, which is root for a non-dumpable process, only when status cannot be read).
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    effective_uid(&status).or_else(|| {
        std::fs::metadata(format!("/proc/{pid}"))
            .ok()
            .map(|m| m.uid())
    })
}

/// The second field of the `Uid:` line (real, effective, saved, filesystem).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sockets a probe of `pid` may listen on outside the guessed folders (PROTOCOL.md, "Which
/// folder a probe trusts"): the target's own listening Unix sockets named `<pid>.sock` (or the
/// hidden `.<pid>.sock.new` it binds first), else `/tmp/leakhound-<uid>-*/<pid>.sock`.
fn fallback_sockets(pid: u32, target_uid: Option<u32>) -> Vec<PathBuf> {
    let name = format!("{pid}.sock");
    let hidden = format!(".{pid}.sock.new");
    let mut paths: Vec<PathBuf> = listening_unix_paths(pid)
        .into_iter()
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?;
            (file == name || file == hidden).then(|| p.with_file_name(&name))
        })
        .collect();
    if paths.is_empty()
        && let Some(uid) = target_uid
        && let Ok(entries) = std::fs::read_dir("/tmp")
    {
        let prefix = format!("leakhound-{uid}-");
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .map(|e| e.path().join(&name))
            .take(256)
            .collect();
        dirs.sort();
        paths.extend(dirs);
    }
    paths
}

/// Paths of the Unix sockets `pid` listens on: lines of /proc/PID/net/unix in the listening
/// state whose inode is one of the process's descriptors. Empty when not allowed to look.
fn listening_unix_paths(pid: u32) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashSet<u64> = fds
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let text = link.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    parse_listening(&table, &inodes)
}

/// `Num RefCount Protocol Flags Type St Inode Path`: a listening socket has the
/// `__SO_ACCEPTCON` flag (0x10000).
fn parse_listening(table: &str, inodes: &std::collections::HashSet<u64>) -> Vec<PathBuf> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            let inode: u64 = cols.get(6)?.parse().ok()?;
            let path = cols.get(7)?;
            (flags & 0x10000 != 0 && inodes.contains(&inode) && path.starts_with('/'))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// Whether a socket found for a process of `target_uid` may be used: the folder a real folder
/// (not a symbolic link), the folder and the socket owned by `target_uid` or root, neither
/// writable by others (the folder not by its group either). The reason when not, one line.
pub fn check_socket(path: &Path, target_uid: u32) -> Result<(), String> {
    let shown = path.display();
    let folder = path.parent().unwrap_or(Path::new("/"));
    let trusted = |uid: u32| uid == target_uid || uid == 0;
    let dir = std::fs::symlink_metadata(folder)
        .map_err(|e| format!("ignored probe socket {shown}: cannot inspect its folder: {e}"))?;
    if dir.file_type().is_symlink() {
        return Err(format!(
            "ignored probe socket {shown}: its folder {} is a symbolic link",
            folder.display()
        ));
    }
    if !trusted(dir.uid()) {
        return Err(format!(
            "ignored probe socket {shown}: its folder is owned by uid {}, not the target's uid {target_uid}",
            dir.uid()
        ));
    }
    if dir.mode() & 0o022 != 0 {
        return Err(format!(
            "ignored probe socket {shown}: its folder has mode {:04o}, writable by others (a probe's folder is 0700)",
            dir.mode() & 0o7777
        ));
    }
    let sock = std::fs::symlink_metadata(path)
        .map_err(|e| format!("ignored probe socket {shown}: {e}"))?;
    if !sock.file_type().is_socket() {
        return Err(format!(
            "ignored probe socket {shown}: it is not a socket (a symbolic link or a file)"
        ));
    }
    if !trusted(sock.uid()) {
        return Err(format!(
            "ignored probe socket {shown}: owned by uid {}, not the target's uid {target_uid}",
            sock.uid()
        ));
    }
    if sock.mode() & 0o002 != 0 {
        return Err(format!(
            "ignored probe socket {shown}: it has mode {:04o}, writable by others (a probe's socket is 0600)",
            sock.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Whether the process listening on a socket found for `pid` may speak for it: the target
/// itself, or a process of the target's uid (a probe serves from the target, but a forked
/// worker's socket may be reached through its parent's folder), or root.
pub fn check_peer(
    path: &Path,
    peer: Option<Peer>,
    pid: u32,
    target_uid: u32,
) -> Result<(), String> {
    match peer {
        Some(p) if p.pid == pid || p.uid == target_uid || p.uid == 0 => Ok(()),
        Some(p) => Err(format!(
            "ignored probe socket {}: it is served by pid {} of uid {}, not the target (pid {pid}, uid {target_uid})",
            path.display(),
            p.pid,
            p.uid
        )),
        None => Err(format!(
            "ignored probe socket {}: the kernel did not say who serves it (SO_PEERCRED)",
            path.display()
        )),
    }
}

pub(super) fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_told_from_connected_ones() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /tmp/leakhound-0-ab12/7.sock
0000000000000000: 00000003 00000000 00000000 0001 03 1002 /tmp/leakhound-0-ab12/7.sock
0000000000000000: 00000002 00000000 00010000 0001 01 1003 @abstract
0000000000000000: 00000002 00000000 00010000 0001 01 1004 /run/other.sock
0000000000000000: 00000002 00000000 00010000 0001 01 1005
";
        let ours: std::collections::HashSet<u64> = [1001, 1002, 1003, 1005].into();
        assert_eq!(
            parse_listening(table, &ours),
            vec![PathBuf::from("/tmp/leakhound-0-ab12/7.sock")]
        );
    }

    #[test]
    fn the_effective_uid_is_read_from_status() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1000\t1000\nGid:\t5\t5\t5\t5\n";
        assert_eq!(effective_uid(status), Some(1001));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert_eq!(
            uid_of(std::process::id()),
            Some(rustix::process::geteuid().as_raw())
        );
    }

    #[test]
    fn a_peer_of_another_uid_is_refused_with_who_it_is() {
        let path = Path::new("/tmp/x/5.sock");
        assert!(check_peer(path, Some(Peer { pid: 5, uid: 1000 }), 5, 1000).is_ok());
        assert!(check_peer(path, Some(Peer { pid: 9, uid: 1000 }), 5, 1000).is_ok());
        let err = check_peer(path, Some(Peer { pid: 9, uid: 1001 }), 5, 1000).unwrap_err();
        assert!(err.contains("pid 9 of uid 1001"), "{err}");
        assert!(check_peer(path, None, 5, 1000).is_err());
    }
}
