//! Starting a program with the Python probe loaded: [`inject`] prepares a command, and
//! [`python_hook_dir`] places the probe's files (embedded in this binary, written to a
//! versioned cache folder, so an installed leakhound is self-contained).
//!
//! Not a source: a source only observes; this is how `run` and `check` start what they watch.
//!
//! Also: loading the Python probe into a process that is already running (`--inject`).

use crate::source::now_ms;
use std::path::{Path, PathBuf};

/// The Python probe's files, embedded so an installed binary needs nothing else.
const PYTHON_PROBE_FILES: &[(&str, &str)] = &[
    (
        "leakhound_probe/__init__.py",
        include_str!("../../probes/python/src/leakhound_probe/__init__.py"),
    ),
    (
        "leakhound_probe/__main__.py",
        include_str!("../../probes/python/src/leakhound_probe/__main__.py"),
    ),
    (
        "leakhound_probe/_util.py",
        include_str!("../../probes/python/src/leakhound_probe/_util.py"),
    ),
    (
        "leakhound_probe/_probe.py",
        include_str!("../../probes/python/src/leakhound_probe/_probe.py"),
    ),
    (
        "leakhound_probe/_patches.py",
        include_str!("../../probes/python/src/leakhound_probe/_patches.py"),
    ),
    (
        "leakhound_probe/_server.py",
        include_str!("../../probes/python/src/leakhound_probe/_server.py"),
    ),
    (
        "leakhound_probe/_logids.py",
        include_str!("../../probes/python/src/leakhound_probe/_logids.py"),
    ),
    (
        "leakhound_probe/_runtime.py",
        include_str!("../../probes/python/src/leakhound_probe/_runtime.py"),
    ),
    (
        "leakhound_probe/_open_at_exit.py",
        include_str!("../../probes/python/src/leakhound_probe/_open_at_exit.py"),
    ),
    (
        "leakhound_probe/_sites.py",
        include_str!("../../probes/python/src/leakhound_probe/_sites.py"),
    ),
    (
        "leakhound_probe/pytest_plugin.py",
        include_str!("../../probes/python/src/leakhound_probe/pytest_plugin.py"),
    ),
    (
        "leakhound_probe/_hook/__init__.py",
        include_str!("../../probes/python/src/leakhound_probe/_hook/__init__.py"),
    ),
    (
        "leakhound_probe/_hook/sitecustomize.py",
        include_str!("../../probes/python/src/leakhound_probe/_hook/sitecustomize.py"),
    ),
];

/// FNV-1a over the embedded files: names the cache folder, so a new build never reuses
/// another build's files.
fn files_hash() -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, body) in PYTHON_PROBE_FILES {
        for byte in name.bytes().chain([0]).chain(body.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn cache_root() -> PathBuf {
    let from_env = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dir) = from_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("leakhound");
    }
    if let Some(home) = from_env("HOME") {
        return PathBuf::from(home).join(".cache").join("leakhound");
    }
    std::env::temp_dir().join(format!(
        "leakhound-{}-cache",
        rustix::process::getuid().as_raw()
    ))
}

/// Writes the embedded probe to its versioned cache folder (once) and returns the folder to
/// put on `PYTHONPATH` (the one holding `sitecustomize.py`).
pub fn python_hook_dir() -> std::io::Result<PathBuf> {
    let root = cache_root().join(format!(
        "python-probe-{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        files_hash()
    ));
    let hook = root.join("leakhound_probe").join("_hook");
    if root.join(".complete").exists() {
        return Ok(hook);
    }
    // Written beside, then renamed into place: two leakhounds starting at once both succeed.
    let parent = root.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".staging-{}-{}", std::process::id(), now_ms()));
    for (name, body) in PYTHON_PROBE_FILES {
        let path = staging.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, body)?;
    }
    std::fs::write(staging.join(".complete"), b"")?;
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if !root.join(".complete").exists() {
            return Err(std::io::Error::other(format!(
                "could not place the Python probe in {}",
                root.display()
            )));
        }
    }
    Ok(hook)
}

/// Prepares `cmd` so the Python programs it starts (and all their Python children) load the
/// probe and listen in `socket_dir`: sets `LEAKHOUND_PROBE=1`, `LEAKHOUND_SOCKET_DIR`, and puts
/// the probe's hook folder first on `PYTHONPATH`. Creates `socket_dir` (0700) if needed.
/// Returns the hook folder.
pub fn inject(cmd: &mut std::process::Command, socket_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let hook = python_hook_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(socket_dir)?;
    std::fs::set_permissions(socket_dir, std::fs::Permissions::from_mode(0o700))?;
    let existing = cmd
        .get_envs()
        .find(|(k, _)| *k == "PYTHONPATH")
        .map(|(_, v)| v.map(|v| v.to_os_string()))
        .unwrap_or_else(|| std::env::var_os("PYTHONPATH"));
    let mut paths = vec![hook.clone()];
    if let Some(existing) = existing {
        paths.extend(std::env::split_paths(&existing));
    }
    let joined = std::env::join_paths(paths).map_err(std::io::Error::other)?;
    cmd.env("LEAKHOUND_PROBE", "1")
        .env("LEAKHOUND_SOCKET_DIR", socket_dir)
        .env("PYTHONPATH", joined);
    Ok(hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/python/src");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.join("leakhound_probe")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("__pycache__") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "py") {
                    let rel = path.strip_prefix(&root).unwrap();
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = PYTHON_PROBE_FILES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new probe files to PYTHON_PROBE_FILES"
        );
    }

    #[test]
    fn inject_sets_the_environment_and_writes_the_hook() {
        let tmp = tempfile::tempdir().unwrap();
        let socket_dir = tmp.path().join("sockets");
        let mut cmd = std::process::Command::new("python3");
        cmd.env("PYTHONPATH", "/somewhere/else");
        let hook = inject(&mut cmd, &socket_dir).unwrap();
        assert!(hook.join("sitecustomize.py").is_file());
        assert!(hook.parent().unwrap().join("_probe.py").is_file());
        let env: std::collections::HashMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
            .collect();
        let path = env["PYTHONPATH".as_ref() as &std::ffi::OsStr]
            .clone()
            .unwrap();
        let parts: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(parts, vec![hook.clone(), PathBuf::from("/somewhere/else")]);
        assert_eq!(
            env["LEAKHOUND_PROBE".as_ref() as &std::ffi::OsStr],
            Some("1".into())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

/// Loading the Python probe into a running interpreter (`--inject`).
#[cfg(target_os = "linux")]
pub mod inject;

/// `--inject` on a command line: loads the Python probe into the target PID first.
pub fn inject_if_asked(asked: bool, target: &crate::source::Target) -> anyhow::Result<()> {
    if !asked {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    return inject::inject_target(target);
    #[cfg(not(target_os = "linux"))]
    anyhow::bail!("--inject is supported on Linux only (target '{target}')");
}
