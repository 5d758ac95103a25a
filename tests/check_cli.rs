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

/// Waits until `path` exists (the command under test writes it once it is set up); a bounded
/// wait for a real process, not a timing claim.
fn wait_for_file(path: &std::path::Path) -> String {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `leakhound check ARGS -- sh -c SCRIPT` in `dir`, sends it `signal` once the script
/// has written `ready`, and returns its output.
fn interrupted_check(dir: &std::path::Path, args: &[&str], script: &str, signal: i32) -> Output {
    let child = leakhound()
        .current_dir(dir)
        .arg("check")
        .args(args)
        .args(["--", "sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run leakhound");
    wait_for_file(&dir.join("ready"));
    // SAFETY: kill(2) on the leakhound we just started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    child.wait_with_output().expect("leakhound ends")
}

const REPORTS: [&str; 8] = [
    "-o",
    "out/r.json",
    "-o",
    "out/r.xml",
    "-o",
    "out/r.sarif",
    "-o",
    "out/r.txt",
];

/// Every report says the run was interrupted, and by what.
fn assert_reports_say_interrupted(dir: &std::path::Path, name: &str) {
    let read = |f: &str| std::fs::read_to_string(dir.join("out").join(f)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&read("r.json")).unwrap();
    assert_eq!(json["interrupted"], name, "{json}");
    let phrase = format!("interrupted by {name}");
    for file in ["r.json", "r.xml", "r.sarif", "r.txt"] {
        assert!(read(file).contains(&phrase), "{file}: {}", read(file));
    }
    let sarif: serde_json::Value = serde_json::from_str(&read("r.sarif")).unwrap();
    assert_eq!(
        sarif["runs"][0]["invocations"][0]["executionSuccessful"],
        false
    );
}

#[test]
fn sigterm_and_sigint_end_the_tree_and_write_the_reports() {
    for (signal, name, status) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // A shell that ignores nothing, waiting on a background child of its own.
        let o = interrupted_check(
            dir.path(),
            &[&REPORTS[..], &["--settle", "5s"]].concat(),
            "sleep 60 & echo $! > bg; echo > ready; wait",
            signal,
        );
        assert_eq!(o.status.code(), Some(status), "{name}: {}", stdout(&o));
        assert!(
            stdout(&o).contains(&format!("interrupted by {name}")),
            "{}",
            stdout(&o)
        );
        assert_reports_say_interrupted(dir.path(), name);
        // It is an orphan found at once, not after the 5 s settle time it never got.
        let read = std::fs::read_to_string(dir.path().join("out/r.json")).unwrap();
        let report: serde_json::Value = serde_json::from_str(&read).unwrap();
        let orphan = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == "orphan-child")
            .unwrap_or_else(|| panic!("{name}: no orphan-child finding: {report}"));
        let message = orphan["message"].as_str().unwrap();
        assert!(!message.contains("5.0 s after"), "{message}");
        // The shell's background sleep was ended with it.
        let bg: u32 = std::fs::read_to_string(dir.path().join("bg"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !pid_alive(bg),
            "{name}: the background sleep {bg} is still running"
        );
    }
}

#[test]
fn a_command_that_traps_sigterm_and_lingers_is_killed_after_the_settle_time() {
    let dir = tempfile::tempdir().unwrap();
    let o = interrupted_check(
        dir.path(),
        &[&REPORTS[..], &["--settle", "300ms"]].concat(),
        "trap '' TERM; echo $$ > pid; echo > ready; while :; do sleep 0.1; done",
        libc::SIGTERM,
    );
    assert_eq!(o.status.code(), Some(143), "{}", stdout(&o));
    assert!(stdout(&o).contains("leakhound killed it"), "{}", stdout(&o));
    assert_reports_say_interrupted(dir.path(), "SIGTERM");
    let pid: u32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_alive(pid), "the command {pid} is still running");
}

#[test]
fn a_sigterm_trap_that_exits_with_its_own_status_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = interrupted_check(
        dir.path(),
        &["--settle", "30s"],
        "trap 'exit 3' TERM; echo > ready; while :; do sleep 0.1; done",
        libc::SIGTERM,
    );
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("passed it on to the command, which ended with exit status 3"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_closed_stdout_does_not_hide_the_commands_status() {
    // `leakhound check -- sh -c 'exit 3' | true`: the reader is gone before the verdict.
    let dir = tempfile::tempdir().unwrap();
    let mut child = leakhound()
        .current_dir(dir.path())
        .args(["check", "--", "sh", "-c", "exit 3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_command_that_exits_before_it_is_traced_is_not_a_ptrace_refusal() {
    // `check -- true` ends before leakhound can attach in most runs; that used to read as
    // "ptrace is not permitted here".
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..10 {
        let o = check(&["--format", "json", "--", "true"], dir.path());
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
        let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let notes = report["notes"].as_array().unwrap();
        assert!(
            notes
                .iter()
                .all(|n| !n.as_str().unwrap().contains("ptrace")),
            "{notes:?}"
        );
    }
}

/// True (and says so) when there is no python3 of 3.9 or later: the Python cases are skipped.
fn python3_missing() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import sys; assert sys.version_info >= (3, 9)"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("python3 missing: skipped");
    }
    !ok
}

#[test]
fn python_daemon_threads_left_at_exit_are_info_unless_asked() {
    if python3_missing() {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/python/daemon_threads.py"
    );
    let dir = tempfile::tempdir().unwrap();
    let thread_leaks = |o: &Output| -> Vec<(String, String)> {
        let report: serde_json::Value = serde_json::from_str(&stdout(o)).unwrap();
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == "thread-leak")
            .map(|f| {
                (
                    f["subject"].as_str().unwrap().to_string(),
                    f["severity"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let o = check(&["--format", "json", "--", "python3", script], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let leaks = thread_leaks(&o);
    assert_eq!(leaks.len(), 3, "{leaks:?}");
    assert!(leaks.iter().all(|(_, sev)| sev == "info"), "{leaks:?}");
    // Asked for: they count again.
    let o = check(
        &[
            "--format",
            "json",
            "--daemon-threads",
            "warning",
            "--",
            "python3",
            script,
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        thread_leaks(&o).iter().all(|(_, sev)| sev == "warning"),
        "{:?}",
        thread_leaks(&o)
    );
}

#[test]
fn a_second_signal_stops_waiting_for_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = leakhound()
        .current_dir(dir.path())
        .args(["check", "--settle", "120s", "-o", "r.json", "--"])
        .args([
            "sh",
            "-c",
            "trap '' TERM; echo > ready; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&dir.path().join("ready"));
    // The command ignores SIGTERM. Signals sent close together can merge into one, so keep
    // sending until leakhound ends: without the second-signal rule it waits out the 120 s.
    let status = loop {
        // SAFETY: kill(2) on the leakhound we started (not yet reaped, so still its pid).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(143));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let notes = report["notes"].to_string();
    assert!(notes.contains("a second signal came"), "{notes}");
    // Not the 120 s settle time: a functional check with a wide margin.
    assert!(report["duration_ms"].as_u64().unwrap() < 60_000, "{report}");
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_command_once() {
    use std::os::unix::process::CommandExt;
    if python3_missing() {
        return;
    }
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::File::options()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Counts the SIGINTs it gets and keeps going; leakhound kills it after --settle.
    let script = "import signal, time\n\
                  signal.signal(signal.SIGINT, lambda *a: open('count', 'a').write('INT\\n'))\n\
                  open('ready', 'w').write('\\n')\n\
                  while True: time.sleep(0.01)\n";
    let mut cmd = leakhound();
    cmd.current_dir(dir.path())
        .args(["check", "--settle", "1s", "-o", "r.json", "--"])
        .args(["python3", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty, so leakhound and the command are its foreground group.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(std::os::fd::BorrowedFd::borrow_raw(0))?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut master = std::fs::File::from(master);
    let mut reader = master.try_clone().unwrap();
    // Drain what leakhound prints so it never blocks on a full terminal.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    wait_for_file(&dir.path().join("ready"));
    // Ctrl-C: the terminal sends SIGINT to the whole foreground group, the command included.
    use std::io::Write;
    master.write_all(b"\x03").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let count = std::fs::read_to_string(dir.path().join("count")).unwrap();
    assert_eq!(
        count.lines().count(),
        1,
        "SIGINTs the command got: {count:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["interrupted"], "SIGINT", "{report}");
}

/// A program that climbs to its descriptor limit, hits EMFILE, closes what it held (as Python's
/// teardown does) and fails: `check` reports the peak it saw, not the few left at the end.
#[test]
fn fd_exhaustion_reports_the_peak_not_what_the_teardown_left() {
    const CLIMB: &str = "\
import errno, os, resource, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
held = []
try:
    while True:
        held.append(os.open('/dev/null', os.O_RDONLY))
        time.sleep(0.1)
except OSError as e:
    assert e.errno == errno.EMFILE, e
for fd in held:
    os.close(fd)
time.sleep(2)
sys.exit(1)
";
    let dir = tempfile::tempdir().unwrap();
    let o = check(
        &[
            "--interval",
            "250ms",
            "--format",
            "json",
            "--",
            "python3",
            "-c",
            CLIMB,
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}\n{err}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let fd = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "fd-exhaustion")
        .unwrap_or_else(|| panic!("no fd-exhaustion in {report:#}"));
    let message = fd["message"].as_str().unwrap();
    assert!(message.contains("EMFILE"), "{message}");
    let seen = |key: &str| fd["evidence"][key].as_u64().unwrap_or(0);
    assert!(
        seen("open").max(seen("peak")) >= 102,
        "the peak (at least 80% of 128) is what it reports: {fd:#}"
    );
}

/// One bug, one finding, in every report: six `sleep 30` left running by one loop are one
/// orphan-child finding with a count and every pid, killed all the same.
#[test]
fn many_orphans_of_one_command_are_one_finding_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(
        &[
            &REPORTS[..],
            &[
                "--settle",
                "300ms",
                "--",
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6; do sleep 30 & done; true",
            ],
        ]
        .concat(),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let read = |name: &str| std::fs::read_to_string(dir.path().join("out").join(name)).unwrap();
    let report: serde_json::Value = serde_json::from_str(&read("r.json")).unwrap();
    let orphans: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "orphan-child")
        .collect();
    assert_eq!(orphans.len(), 1, "{report:#}");
    let orphan = orphans[0];
    assert_eq!(orphan["subject"], "orphans:sleep 30");
    assert_eq!(orphan["evidence"]["count"], 6);
    let pids: Vec<u32> = orphan["evidence"]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(pids.len(), 6, "{orphan:#}");
    for pid in pids {
        assert!(!pid_alive(pid), "orphan {pid} should have been killed");
    }
    let message = orphan["message"].as_str().unwrap();
    assert!(
        message.starts_with("6 processes `sleep 30` were still running"),
        "{message}"
    );
    // The text verdict, JUnit and SARIF say the same one finding, count and examples.
    let text = read("r.txt");
    assert_eq!(text.matches("orphan-child").count(), 1, "{text}");
    assert!(text.contains(message), "{text}");
    assert!(text.contains("examples:"), "{text}");
    let junit = read("r.xml");
    assert!(junit.contains("6 processes `sleep 30`"), "{junit}");
    assert!(junit.contains("count: 6"), "{junit}");
    let sarif: serde_json::Value = serde_json::from_str(&read("r.sarif")).unwrap();
    let results: Vec<&serde_json::Value> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ruleId"] == "orphan-child")
        .collect();
    assert_eq!(results.len(), 1, "{sarif:#}");
    assert_eq!(results[0]["properties"]["evidence"]["count"], 6);
}
