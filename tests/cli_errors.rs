//! Bad targets are one line naming the problem and the fix, exit status 2, never a panic.

use assert_cmd::Command;

fn leakhound() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
}

fn one_line_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("leakhound: error: "), "{err}");
    assert!(!err.contains("panicked"));
    err
}

#[test]
fn nonexistent_pid() {
    for cmd in ["snapshot", "watch"] {
        // Above the kernel's largest pid_max (2^22): never a process.
        let out = leakhound().args([cmd, "4194400"]).output().unwrap();
        let err = one_line_error(&out);
        assert!(err.contains("no process with PID 4194400"), "{err}");
        assert!(err.contains("ps -p"), "names the fix: {err}");
    }
}

#[test]
fn malformed_targets() {
    for bad in ["abc", "0", "unix:", "http://", "-5"] {
        let out = leakhound().args(["snapshot", "--", bad]).output().unwrap();
        let err = one_line_error(&out);
        assert!(err.contains("PID") || err.contains("write"), "{bad}: {err}");
    }
    let out = leakhound()
        .args(["watch", "1", "-T", "nope=1"])
        .output()
        .unwrap();
    assert!(one_line_error(&out).contains("leakhound rules"));
}

#[test]
fn another_users_process_cannot_be_read() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run leakhound as `nobody` against a root process");
        return;
    }
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    // The binary must be reachable by `nobody`: copy it somewhere world-readable.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("leakhound");
    std::fs::copy(env!("CARGO_BIN_EXE_leakhound"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["snapshot", &victim.id().to_string()])
        .output()
        .unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    let err = one_line_error(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("as root"), "names the fix: {err}");
}
