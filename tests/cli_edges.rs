//! Edges every command shares, on real processes: a closed standard output, exit statuses
//! that agree with `--help`, and output folders made on demand.

use leakhound::model::{FdSummary, Snapshot};
use leakhound::source::replay::{Header, RecordingWriter};
use std::process::{Child, Command, Output, Stdio};

fn leakhound() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
}

/// Runs leakhound with its standard output closed before it writes anything (`| head`).
fn with_stdout_closed(args: &[&str]) -> Output {
    let mut child = leakhound()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A process to look at, killed when dropped.
struct Target(Child);

impl Target {
    fn shell(script: &str) -> Self {
        Target(
            Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A recording in which fd-exhaustion fires: 95 of 100 descriptors open.
fn recording_with_a_finding(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("full.lhrec");
    let mut writer = RecordingWriter::create(&path, &Header::new("pid 42".into(), 1000)).unwrap();
    for i in 0..3u64 {
        writer
            .write(&Snapshot {
                pid: 42,
                taken_at_ms: 1_000_000 + i * 1000,
                fds: FdSummary {
                    open: 95,
                    soft_limit: Some(100),
                    ..FdSummary::default()
                },
                ..Snapshot::default()
            })
            .unwrap();
    }
    path
}

#[test]
fn replay_with_a_closed_stdout_keeps_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let file = recording_with_a_finding(dir.path());
    let o = with_stdout_closed(&["replay", "--json", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn demo_with_a_closed_stdout_does_not_panic() {
    let o = with_stdout_closed(&["demo", "--no-python", "--headless", "1s"]);
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn snapshot_exits_1_with_findings_and_0_without() {
    // 3 descriptors of a soft limit of 4: fd-exhaustion at a ratio of 0.5.
    let crowded = Target::shell("ulimit -n 4; exec sleep 60");
    let quiet = Target::shell("exec sleep 60");
    let run = |pid: &str| {
        leakhound()
            .args(["snapshot", pid, "--json", "-T", "fd-exhaustion.ratio=0.5"])
            .output()
            .unwrap()
    };
    // Wait until the shell has exec'd sleep, so the view is sleep's (3 descriptors).
    let comm = |t: &Target| std::fs::read_to_string(format!("/proc/{}/comm", t.pid()));
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while [&crowded, &quiet]
        .iter()
        .any(|t| comm(t).map_or(true, |c| c.trim() != "sleep"))
    {
        assert!(std::time::Instant::now() < give_up, "sleep never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = run(&crowded.pid());
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rules: Vec<&str> = snap["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["fd-exhaustion"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = run(&quiet.pid());
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snap["findings"], serde_json::json!([]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn record_creates_the_missing_folder_as_check_does() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::shell("exec sleep 60");
    let file = dir.path().join("new/folder/r.lhrec");
    let o = leakhound()
        .args([
            "record",
            &target.pid(),
            "-o",
            file.to_str().unwrap(),
            "--for",
            "300ms",
            "--interval",
            "100ms",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(file.exists(), "{}", stderr(&o));
}
