//! `leakhound run` without a terminal (or with `--headless`): the program runs with the probes
//! loaded and its findings are printed as `watch` prints them, exit codes as `watch`'s, the
//! program's own failure first.

use assert_cmd::Command;
use serde_json::Value;

fn leakhound() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
}

/// A coroutine never awaited (only the probe sees it), a line on standard output, then a
/// few seconds alive so a sample reads the probe's event, then `exit(CODE)`.
const NEVER_AWAITED: &str = "\
import gc, sys, time
async def send_email():
    pass
send_email()
gc.collect()
print('program output', flush=True)
time.sleep(3)
sys.exit(int(sys.argv[1]))
";

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect()
}

#[test]
fn headless_json_prints_the_probes_findings_and_a_summary_and_exits_1() {
    let out = leakhound()
        .args(["run", "--headless", "--json", "--interval", "300ms", "--"])
        .args(["python3", "-c", NEVER_AWAITED, "0"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Standard output is findings only: the program's own output went to standard error.
    assert!(stderr.contains("program output"), "{stderr}");
    let lines = json_lines(&out.stdout);
    let finding = lines
        .iter()
        .find(|l| l["rule"] == "never-awaited")
        .unwrap_or_else(|| panic!("no never-awaited in {lines:#?}"));
    assert_eq!(finding["evidence"]["coroutine"], "send_email");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["ended"], "target_exited", "{summary}");
    assert!(summary["fired"].as_u64().unwrap() >= 1, "{summary}");
}

#[test]
fn without_a_terminal_run_is_headless_and_the_programs_failure_is_the_exit_status() {
    // No --headless: assert_cmd's pipes are no terminal, where the dashboard used to refuse.
    let out = leakhound()
        .args(["run", "--interval", "300ms", "--"])
        .args(["python3", "-c", NEVER_AWAITED, "3"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It failed on its own (exit 3): that, not the findings' 1, is the status.
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("watching pid "), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning never-awaited")),
        "{stdout}"
    );
    assert!(stdout.contains("finding(s)"), "the summary: {stdout}");
    assert!(!stdout.contains("no probe found"), "{stdout}");
}

#[test]
fn a_clean_program_stopped_by_for_exits_0_and_is_not_left_running() {
    let out = leakhound()
        .args(["run", "--headless", "--json", "--for", "1500ms", "--"])
        .args([
            "python3",
            "-c",
            "import os, time; print(os.getpid(), flush=True); time.sleep(60)",
        ])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["ended"], "duration");
    assert_eq!(lines[0]["fired"], 0);
    let pid: u32 = stderr
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("the program's pid in {stderr}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} left running"
    );
}

#[test]
fn a_program_over_before_the_first_sample_is_no_error() {
    // `sh -c 'exit N'` may end before the first sample: its own status, never leakhound's 2.
    for (code, want) in [("0", 0), ("4", 4)] {
        let out = leakhound()
            .args(["run", "--headless", "--", "sh", "-c"])
            .arg(format!("exit {code}"))
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(want), "{out:?}");
    }
}

#[test]
fn a_missing_command_is_exit_2_in_one_line() {
    let out = leakhound()
        .args(["run", "--headless", "--"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = leakhound()
        .args(["run", "--headless", "--", "/nonexistent/prog"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cannot start `/nonexistent/prog`"), "{err}");
}
