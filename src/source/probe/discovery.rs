//! Finding the socket a probe of a PID listens on (PROTOCOL.md, "Where the socket is").

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
    let target_uid = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
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

/// The socket a probe of `pid` listens on, if one exists.
pub fn find_socket(pid: u32) -> Option<PathBuf> {
    socket_dirs(pid)
        .into_iter()
        .map(|d| d.join(format!("{pid}.sock")))
        .find(|p| is_socket(p))
}

pub(super) fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
