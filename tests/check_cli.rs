//! `leakhound check` end to end on real processes: exit status, orphans, zombies, reports,
//! ignore lists and leakhound.toml.

use std::process::{Command, Output};

fn leakhound() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
}

fn check(args: &[&str], dir: &std::path::Path) -> Output {
    leakhound()
        .current_dir(dir)
        .arg("check")
        .args(args)
        .output()
        .expect("run leakhound")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn clean_command_passes_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let o = check(&["--settle", "60s", "--", "true"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("verdict: PASS"), "{}", stdout(&o));
    // Nothing left to wait for, so the 60 s settle budget must not be spent (a functional
    // check with a wide margin, not a performance claim: those live in benches/).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_commands_own_failure_wins() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(&["--", "sh", "-c", "exit 7"], dir.path());
    assert_eq!(o.status.code(), Some(7));
    assert!(stdout(&o).contains("the command itself failed"));
}

#[test]
fn command_not_found_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(&["--", "no-such-command-leakhound"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("command not found"), "{err}");
}

#[test]
fn orphan_is_found_then_killed_and_kept_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(
        &[
            "--settle",
            "300ms",
            "--format",
            "json",
            "--",
            "sh",
            "-c",
            "sleep 30 & true",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let orphan = findings
        .iter()
        .find(|f| f["rule"] == "orphan-child")
        .expect("orphan-child finding");
    assert_eq!(orphan["evidence"]["cmd"], "sleep 30");
    let pid = orphan["evidence"]["pid"].as_u64().unwrap() as u32;
    assert!(!pid_alive(pid), "the orphan {pid} should have been killed");

    let o = check(
        &[
            "--settle",
            "100ms",
            "--keep-orphans",
            "--format",
            "json",
            "--",
            "sh",
            "-c",
            "sleep 30 >/dev/null 2>&1 & true",
        ],
        dir.path(),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // Find it by rule: under load other findings may sort beside it.
    let kept = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "orphan-child")
        .expect("orphan-child finding with --keep-orphans");
    let pid = kept["evidence"]["pid"].as_u64().unwrap() as u32;
    assert!(pid_alive(pid), "--keep-orphans must leave {pid} running");
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

#[test]
fn a_child_that_ends_within_the_settle_time_is_not_blamed() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(
        &["--settle", "3s", "--", "sh", "-c", "sleep 0.2 & true"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn zombie_left_by_the_command_is_found() {
    let dir = tempfile::tempdir().unwrap();
    // `exec` replaces the shell with sleep, which never waits for the `true` forked before:
    // a zombie for as long as sleep lives, then re-parented to leakhound.
    let o = check(
        &[
            "--format",
            "json",
            "--",
            "sh",
            "-c",
            "true & exec sleep 0.3",
        ],
        dir.path(),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rules: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"zombie-child"), "{rules:?}");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn reports_go_to_files_and_ignores_are_accounted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leakhound.toml"),
        "[check]\nsettle = \"200ms\"\n\n[ignore]\nchild = [\"never-matches-*\"]\n",
    )
    .unwrap();
    let o = check(
        &[
            "-o",
            "out/r.json",
            "-o",
            "out/r.xml",
            "-o",
            "sarif:out/r.sarif",
            "--ignore",
            "child=sleep *",
            "--",
            "sh",
            "-c",
            "sleep 30 & true",
        ],
        dir.path(),
    );
    // The orphan was ignored: clean; the stale toml entry is named.
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("unused ignore: child=never-matches-* (leakhound.toml)"),
        "{}",
        stdout(&o)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/r.json")).unwrap())
            .unwrap();
    assert_eq!(json["ignored"][0]["rule"], "orphan-child");
    let xml = std::fs::read_to_string(dir.path().join("out/r.xml")).unwrap();
    assert!(
        xml.contains("<testsuite ") && xml.contains("failures=\"0\""),
        "{xml}"
    );
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/r.sarif")).unwrap())
            .unwrap();
    assert_eq!(sarif["version"], "2.1.0");
}

#[test]
fn bad_config_and_bad_output_are_errors_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let o = check(&["-o", "report", "--", "sh", "-c", &touch], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        !marker.exists(),
        "the command must not run when an --output is bad"
    );
    std::fs::write(dir.path().join("leakhound.toml"), "[check]\nfail_on = 1\n").unwrap();
    let o = check(&["--", "true"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("leakhound.toml"));
}
