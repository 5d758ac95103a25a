//! The socket folder (probes/PROTOCOL.md, "Where the socket is"): used only when it is ours,
//! private (0700) and not a symbolic link, checked on the opened folder itself (`O_NOFOLLOW`,
//! then `fstat`), so a link planted at the path or a folder swapped in after a look is never
//! used. Otherwise the probe listens in a private folder of its own and says where.
//! Sockets left by processes that are gone are swept when the probe starts.

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Seconds of clock slack when telling a reused pid from the process that made a file.
const STALE_MARGIN_S: f64 = 2.0;
/// A fallback folder unchanged this long may be swept when nothing alive is in it.
const FALLBACK_MIN_AGE: Duration = Duration::from_secs(60);

/// A listening socket and where it is.
pub(crate) struct Bound {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// Set when the probe listens in its fallback folder: why, and where (the folder is
    /// removed with the probe when nothing else is left in it).
    pub note: Option<String>,
}

/// Binds `<pid>.sock` in `dir`, or, when `dir` cannot be trusted or used, in a fresh private
/// folder `/tmp/leakhound-<uid>-<random>`, with a line on stderr saying so.
pub(crate) fn bind(dir: &Path) -> std::io::Result<Bound> {
    let refused = match bind_in(dir) {
        Ok((listener, path)) => {
            return Ok(Bound {
                listener,
                path,
                note: None,
            });
        }
        Err(e) => e,
    };
    let uid = rustix::process::getuid().as_raw();
    sweep_fallback_folders(
        Path::new("/tmp"),
        &format!("leakhound-{uid}-"),
        FALLBACK_MIN_AGE,
    );
    let fallback = fallback_folder()?;
    let (listener, path) = bind_in(&fallback).inspect_err(|_| {
        let _ = std::fs::remove_dir(&fallback);
    })?;
    let note = format!("{refused}; listening at {} instead", path.display());
    eprintln!("leakhound-probe: {note}");
    Ok(Bound {
        listener,
        path,
        note: Some(note),
    })
}

fn bind_in(dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    let folder = open_private(dir)?;
    let name = format!("{}.sock", std::process::id());
    let path = dir.join(&name);
    sweep_stale(&folder, dir);
    // A socket left by an earlier process with our pid (pid reuse) is stale.
    let _ = rustix::fs::unlinkat(&folder, &name, AtFlags::empty());
    let listener = UnixListener::bind(&path)?;
    // Bound by path (collectors and /proc/net/unix see that path): make sure it still led
    // into the folder checked above. The folder is 0700: no one else reaches the socket
    // before its mode is set.
    let now = rustix::fs::lstat(dir)?;
    let checked = rustix::fs::fstat(&folder)?;
    if (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino) {
        return Err(std::io::Error::other(format!(
            "{} was replaced while the probe started",
            dir.display()
        )));
    }
    rustix::fs::chmodat(&folder, &name, Mode::from_raw_mode(0o600), AtFlags::empty())?;
    listener.set_nonblocking(true)?;
    Ok((listener, path))
}

/// Opens `dir` (created 0700 when missing) when it is ours, 0700 and not a symbolic link.
pub(crate) fn open_private(dir: &Path) -> std::io::Result<OwnedFd> {
    if let Some(parent) = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.is_dir())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let created = match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(refuse(format!("cannot create {}: {e}", dir.display()))),
    };
    open_existing_private(dir, created)
}

fn refuse(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}

/// Opens `dir` when it is ours, 0700 and not a symbolic link; `created`: we just made it
/// (then its mode is set to 0700 whatever the umask made of it).
fn open_existing_private(dir: &Path, created: bool) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let folder = match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(_) if dir.is_symlink() => {
            return Err(refuse(format!(
                "{} is a symbolic link; not followed",
                dir.display()
            )));
        }
        Err(e) => return Err(refuse(format!("cannot open {}: {e}", dir.display()))),
    };
    let me = rustix::process::getuid().as_raw();
    let mut st = rustix::fs::fstat(&folder)?;
    if created && st.st_uid == me {
        // Whatever the umask made of it: we made it.
        rustix::fs::fchmod(&folder, Mode::from_raw_mode(0o700))?;
        st = rustix::fs::fstat(&folder)?;
    }
    let mode = st.st_mode & 0o7777;
    if st.st_uid != me {
        return Err(refuse(format!(
            "{} belongs to uid {}, not to this process's uid {me}",
            dir.display(),
            st.st_uid
        )));
    }
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "{} has mode {mode:04o}, not private (0700)",
            dir.display()
        )));
    }
    Ok(folder)
}

/// A fresh private folder: `/tmp/leakhound-<uid>-<random>`, made with `mkdir` (which fails on
/// anything already there, a planted link included).
fn fallback_folder() -> std::io::Result<PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    let uid = rustix::process::getuid().as_raw();
    let mut last = None;
    for attempt in 0..16u32 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u32(attempt);
        let suffix: String = (0..8)
            .scan(h.finish(), |bits, _| {
                let c = b"abcdefghijklmnopqrstuvwxyz0123456789"[(*bits % 36) as usize];
                *bits /= 36;
                Some(c as char)
            })
            .collect();
        let dir = PathBuf::from(format!("/tmp/leakhound-{uid}-{suffix}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no private folder could be made")))
}

/// Removes the `prefix*` folders of ours in `parent` that hold nothing but stale sockets of
/// gone processes (their probes were killed) and have not changed for `min_age` (one just
/// made is about to be used). Returns how many went.
pub(crate) fn sweep_fallback_folders(parent: &Path, prefix: &str, min_age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let dir = entry.path();
        let Ok(folder) = open_existing_private(&dir, false) else {
            continue;
        };
        let changed = rustix::fs::fstat(&folder).map_or(i64::MAX, |st| st.st_mtime);
        if now.saturating_sub(changed) < min_age.as_secs() as i64 {
            continue;
        }
        sweep_stale(&folder, &dir);
        // Only when empty; /tmp is sticky: no one else can put another folder at this name.
        if std::fs::remove_dir(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes `<pid>.sock` files in the folder left by processes that are gone: only sockets of
/// our uid, never our own, and a live pid counts as gone only when that process started after
/// the file was made (the pid was reused). Returns how many went.
pub(crate) fn sweep_stale(folder: &OwnedFd, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let me = rustix::process::getuid().as_raw();
    let own = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(st) = rustix::fs::statat(folder, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let is_socket = st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
        if st.st_uid != me || !is_socket || !pid_gone_since(pid, st.st_mtime as f64) {
            continue;
        }
        if rustix::fs::unlinkat(folder, name.as_os_str(), AtFlags::empty()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// True when no process `pid` exists that could have made a file at `made_at` (epoch s).
fn pid_gone_since(pid: u32, made_at: f64) -> bool {
    let Some(raw) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    match rustix::process::test_kill_process(raw) {
        Err(rustix::io::Errno::SRCH) => return true,
        Ok(()) | Err(rustix::io::Errno::PERM) => {}
        Err(_) => return false,
    }
    process_start(pid).is_some_and(|started| started > made_at + STALE_MARGIN_S)
}

/// When `pid` started (epoch seconds), from /proc.
fn process_start(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: f64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn fallback_folders_of_killed_probes_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            child.id()
        };
        let folder = |name: &str, mode: u32, socket_pid: Option<u32>, age: u64| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            if let Some(pid) = socket_pid {
                drop(UnixListener::bind(dir.join(format!("{pid}.sock"))).unwrap());
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let then = std::time::SystemTime::now() - Duration::from_secs(age);
            std::fs::File::open(&dir)
                .unwrap()
                .set_modified(then)
                .unwrap();
            dir
        };
        let killed = folder("leakhound-7-killed", 0o700, Some(dead), 3600);
        let live = folder("leakhound-7-live", 0o700, Some(std::process::id()), 3600);
        let fresh = folder("leakhound-7-fresh", 0o700, None, 0);
        let public = folder("leakhound-7-public", 0o755, None, 3600);
        let other = folder("unrelated", 0o700, Some(dead), 3600);
        let removed = sweep_fallback_folders(root.path(), "leakhound-7-", FALLBACK_MIN_AGE);
        assert_eq!(removed, 1);
        assert!(!killed.exists());
        assert!(live.exists() && fresh.exists() && public.exists() && other.exists());
    }
}
