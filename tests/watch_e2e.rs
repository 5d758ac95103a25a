//! `leakhound watch PID --json` on real misbehaving processes.

#[path = "fixtures/proc_fixture.rs"]
mod proc_fixture;

use proc_fixture::{Fixture, leakhound};
use serde_json::Value;

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn findings<'a>(lines: &'a [Value], rule: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "finding" && l["rule"] == rule)
        .collect()
}

#[test]
fn fd_exhaustion_is_reported_before_the_process_hits_emfile() {
    // Soft limit 256, 20 opens a second: EMFILE after ~12 s.
    let mut fx = Fixture::start(&["fdleak", "256", "20"]);
    let (code, out, err) = leakhound(&["watch", &fx.pid().to_string(), "--json", "--for", "15s"]);
    assert_eq!(code, 1, "findings fired: {err}\n{out}");
    let emfile_ms: u64 = fx
        .lines
        .next()
        .expect("the fixture reached EMFILE within 15 s")
        .unwrap()
        .strip_prefix("EMFILE ")
        .expect("EMFILE line")
        .parse()
        .unwrap();
    let lines = json_lines(&out);
    let fired = findings(&lines, "fd-exhaustion");
    assert_eq!(fired.len(), 1, "printed once: {out}");
    let f = fired[0];
    let at = f["at_ms"].as_u64().unwrap();
    assert!(at < emfile_ms, "fired at {at}, EMFILE at {emfile_ms}");
    assert_eq!(f["subject"], format!("pid:{}", fx.pid()));
    assert_eq!(f["evidence"]["soft"], 256);
    assert!(f["evidence"]["open"].as_u64().unwrap() < 256);
    assert!(f["evidence"]["grew"]["file"].as_u64().unwrap() > 0, "{f}");
    for key in ["rule", "severity", "subject", "message", "evidence"] {
        assert!(!f[key].is_null());
    }
    // The same steady climb is a leak-growth of descriptors once the window spans 10 s.
    let growth = findings(&lines, "leak-growth");
    assert!(
        growth
            .iter()
            .any(|g| g["subject"] == format!("pid:{}/fds", fx.pid())),
        "{out}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["ended"], "duration");
    assert!(summary["fired"].as_u64().unwrap() >= 1);
}

#[test]
fn close_wait_pile_up_is_reported() {
    let fx = Fixture::start(&["closewait", "4"]);
    let (code, out, err) = leakhound(&["watch", &fx.pid().to_string(), "--json", "--for", "8s"]);
    assert_eq!(code, 1, "{err}\n{out}");
    let lines = json_lines(&out);
    let fired = findings(&lines, "close-wait");
    assert_eq!(fired.len(), 1, "{out}");
    let evidence = &fired[0]["evidence"];
    assert!(evidence["count"].as_u64().unwrap() >= 3);
    assert!(evidence["held_s"].as_f64().unwrap() >= 3.0);
    let example = &evidence["examples"][0];
    assert!(
        example["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(example["fd"].as_u64().is_some());
}

#[test]
fn a_quiet_process_reports_nothing_and_exits_zero() {
    let fx = Fixture::start(&["quiet"]);
    let (code, out, err) = leakhound(&["watch", &fx.pid().to_string(), "--json", "--for", "12s"]);
    assert_eq!(code, 0, "{err}\n{out}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "only the summary: {out}");
    assert_eq!(lines[0]["type"], "summary");
    assert_eq!(lines[0]["fired"], 0);
    assert!(lines[0]["samples"].as_u64().unwrap() >= 10);
}

#[test]
fn watch_ends_cleanly_when_the_target_exits() {
    let fx = Fixture::start(&["quiet", "2"]);
    let pid = fx.pid().to_string();
    // No --for: only the target's exit ends it. The fixture is our child, so it stays a
    // zombie until we reap it; leakhound must count that as exited.
    let (code, out, err) = leakhound(&["watch", &pid, "--json", "--interval", "200ms"]);
    assert_eq!(code, 0, "{err}\n{out}");
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    assert_eq!(summary["ended"], "target_exited");
    assert!(summary["exit_message"].as_str().unwrap().contains(&pid));
    let (code, out, _) = {
        let fx = Fixture::start(&["quiet", "1"]);
        leakhound(&["watch", &fx.pid().to_string()])
    };
    assert_eq!(code, 0);
    assert!(out.contains("ended: target exited"), "{out}");
}

#[test]
fn ctrl_c_ends_with_the_summary() {
    let fx = Fixture::start(&["quiet"]);
    let watch = std::process::Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(["watch", &fx.pid().to_string(), "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let out = watch.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["ended"], "interrupted");
    assert!(summary["samples"].as_u64().unwrap() >= 1);
}
