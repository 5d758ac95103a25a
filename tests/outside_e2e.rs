//! The outside view and `--inject` on real interpreters (pyenv's 3.9-3.13), each running a
//! small asyncio HTTP service started WITHOUT the probe (tests/fixtures/outside_service.py).
#![cfg(all(target_os = "linux", feature = "pystacks"))]

#[path = "fixtures/proc_fixture.rs"]
mod proc_fixture;

use proc_fixture::leakhound;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const VERSIONS: [&str; 5] = ["3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"];

/// The pyenv interpreters of VERSIONS present here; each missing one is named on stderr.
fn interpreters() -> Vec<(String, String)> {
    let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
    let found: Vec<(String, String)> = VERSIONS
        .iter()
        .filter_map(|v| {
            let exe = format!("{root}/versions/{v}/bin/python3");
            if std::path::Path::new(&exe).exists() {
                Some((v.to_string(), exe))
            } else {
                eprintln!("skipping Python {v}: {exe} is not installed");
                None
            }
        })
        .collect();
    assert!(
        !found.is_empty(),
        "no pyenv Python 3.9-3.13 under {root}/versions: install one (pyenv install 3.12)"
    );
    found
}

/// An interpreter with uvloop installed ($UVLOOP_PYTHON, `python3`, then pyenv's), if any.
fn with_uvloop() -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("UVLOOP_PYTHON").into_iter().collect();
    candidates.push("python3".to_string());
    candidates.extend(interpreters().into_iter().map(|(_, exe)| exe));
    candidates.into_iter().find(|exe| {
        Command::new(exe)
            .args(["-c", "import uvloop"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

struct Service {
    child: Child,
    port: u16,
}

impl Service {
    fn start(python: &str, mode: &str) -> Service {
        Self::start_with(python, &[mode])
    }

    fn start_with(python: &str, args: &[&str]) -> Service {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/outside_service.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            // Started without the probe, whatever the environment of the test run says.
            .env_remove("LEAKHOUND_PROBE")
            .env_remove("PYTHONPATH")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python runs the service");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("service said {first:?}"));
        Service { child, port }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request; true when the service answered `ok`.
fn get(port: u16) -> bool {
    request(port).is_ok()
}

/// One HTTP request, or what went wrong. A stopped target (gdb attached) answers late, not
/// never: the read allows 30 s on a loaded machine.
fn request(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("read: {e}"))?;
    if body.starts_with("HTTP/1.0 200") && body.ends_with("ok") {
        Ok(())
    } else {
        Err(format!("answer: {body:?}"))
    }
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `watch`'s summary names the source: the outside view of a Python process.
fn watched_from_outside(summary: &Value) -> bool {
    summary["target"]
        .as_str()
        .is_some_and(|t| t.contains("outside python"))
}

fn has_frame(stack: &Value, func: &str) -> bool {
    stack
        .as_array()
        .is_some_and(|s| s.iter().any(|f| f.as_str().unwrap().ends_with(func)))
}

#[test]
fn a_loop_blocked_by_time_sleep_is_reported_from_outside_with_its_stack() {
    for (version, python) in interpreters() {
        let svc = Service::start(&python, "blocked");
        let (code, out, err) = leakhound(&["watch", &svc.pid(), "--json", "--for", "4s"]);
        assert_eq!(code, 1, "{version}: findings fired: {err}\n{out}");
        let lines = json_lines(&out);
        let summary = lines.last().unwrap();
        assert!(watched_from_outside(summary), "{version}: {summary}");
        let blocked: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "finding" && l["rule"] == "loop-blocked")
            .collect();
        assert_eq!(blocked.len(), 1, "{version}: {out}");
        // The summary has the latest evidence: the worst stall of the window. The first line
        // may carry a stall the sampler joined half-way.
        let e = &summary["findings"][0]["evidence"];
        assert_eq!(summary["findings"][0]["rule"], "loop-blocked");
        assert_eq!(e["tid"].as_u64().unwrap().to_string(), svc.pid());
        assert!(has_frame(&e["stack"], "in hog_the_loop"), "{version}: {e}");
        assert!(has_frame(&e["stack"], "in blocker"), "{version}: {e}");
        let ms = e["stall_ms"].as_f64().unwrap();
        // time.sleep(0.4), estimated from samples (a sampler short of CPU sees less of it).
        assert!((200.0..=700.0).contains(&ms), "{version}: stall {ms} ms");
    }
}

#[test]
fn a_blocked_uvloop_loop_is_reported_from_outside_too() {
    let Some(python) = with_uvloop() else {
        eprintln!("skipping the uvloop test: no interpreter here has uvloop (pip install uvloop)");
        return;
    };
    let svc = Service::start_with(&python, &["blocked", "uvloop"]);
    let (code, out, err) = leakhound(&["watch", &svc.pid(), "--json", "--for", "4s"]);
    assert_eq!(code, 1, "{err}\n{out}");
    let summary = json_lines(&out).pop().unwrap();
    assert!(watched_from_outside(&summary), "{summary}");
    let finding = &summary["findings"][0];
    assert_eq!(finding["rule"], "loop-blocked", "{summary}");
    let stack = &finding["evidence"]["stack"];
    assert!(has_frame(stack, "in hog_the_loop"), "{stack}");
    // No asyncio dispatch frames under uvloop: the callback sits right on the runner.
    assert!(!has_frame(stack, "_run_once"), "{stack}");
}

#[test]
fn a_loop_that_never_idles_is_busy_not_blocked() {
    // The same short callback is on top of the loop at every sample; each asyncio iteration
    // is timed from its start (read from outside), so none is mistaken for one long stall.
    for (version, python) in interpreters() {
        let svc = Service::start(&python, "busy");
        // Judged as one callback, the whole 3 s would be one stall. Timed per iteration, none
        // comes near 1 s; the default 100 ms can be crossed for real when a loaded machine
        // leaves the busy target without a CPU that long, which is lag, but not this test's.
        let (code, out, err) = leakhound(&[
            "watch",
            &svc.pid(),
            "--json",
            "--for",
            "3s",
            "-T",
            "loop-blocked.lag=1s",
        ]);
        assert_eq!(code, 0, "{version}: nothing fired: {err}\n{out}");
        assert!(get(svc.port), "{version}: a busy loop still serves");
    }
}

#[test]
fn a_clean_service_fires_nothing_though_its_loop_is_watched() {
    for (version, python) in interpreters() {
        let svc = Service::start(&python, "clean");
        let port = svc.port;
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert!(get(port));
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let (code, out, err) = leakhound(&["watch", &svc.pid(), "--json", "--for", "3s"]);
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap();
        assert_eq!(code, 0, "{version}: nothing fired: {err}\n{out}");
        let summary = &json_lines(&out)[0];
        assert_eq!(summary["fired"], 0, "{version}: {summary}");
        assert!(watched_from_outside(summary), "{version}: {summary}");
        // The loop is there, judged, and says what only the probe adds.
        let (_, snap, _) = leakhound(&["snapshot", &svc.pid(), "--json", "--stacks"]);
        let doc: Value = serde_json::from_str(&snap).unwrap();
        let main = doc["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"].as_u64().unwrap().to_string() == svc.pid())
            .unwrap();
        assert!(
            has_frame(&main["py_stack"]["frames"], "select"),
            "{version}: the idle loop waits in its selector: {main}"
        );
    }
}

#[test]
fn a_thread_stuck_on_a_lock_is_shown_with_its_frame_and_the_gil_holder_marked() {
    for (version, python) in interpreters() {
        let svc = Service::start(&python, "lock");
        let (code, out, err) = leakhound(&["snapshot", &svc.pid(), "--json", "--stacks"]);
        assert!(matches!(code, 0 | 1), "{version}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        let threads = doc["threads"].as_array().unwrap();
        let stuck = threads
            .iter()
            .find(|t| t["runtime_name"] == "stuck-worker")
            .unwrap_or_else(|| panic!("{version}: no stuck-worker thread: {out}"));
        let frames = stuck["py_stack"]["frames"].as_array().unwrap();
        let top = frames.last().unwrap().as_str().unwrap();
        assert!(
            top.contains("outside_service.py:") && top.ends_with("in stuck_worker"),
            "{version}: {top}"
        );
        assert_eq!(stuck["py_stack"]["gil"], false);
        // Nobody runs Python code here: at most one thread holds the GIL.
        let holders = threads
            .iter()
            .filter(|t| t["py_stack"]["gil"] == true)
            .count();
        assert!(holders <= 1, "{version}: {holders} GIL holders");
        assert!(doc["source"].as_str().unwrap().contains("outside(python"));
        // The text view puts the stack under the /proc row.
        let (_, text, _) = leakhound(&["snapshot", &svc.pid(), "--stacks", "--nonblocking"]);
        assert!(text.contains("in stuck_worker"), "{version}: {text}");
    }
}

#[test]
fn a_stuck_thread_is_shown_parked_in_its_frame_while_watched() {
    // One interpreter is enough: parking takes five seconds to be sure of.
    let (version, python) = interpreters().pop().unwrap();
    let svc = Service::start(&python, "lock");
    let pid: u32 = svc.pid().parse().unwrap();
    let target = leakhound::source::Target::Pid(pid);
    let mut source = leakhound::source::open(&target).unwrap();
    let options = leakhound::source::SampleOptions::default();
    let first = source.sample(options).unwrap();
    assert_eq!(
        first.probe.as_ref().map(|p| p.runtime.as_str()),
        Some("python-outside")
    );
    let missing = &first.probe.as_ref().unwrap().missing;
    assert!(
        missing.iter().any(|m| m.starts_with("tasks:")),
        "{missing:?}"
    );
    assert!(
        missing.iter().any(|m| m.starts_with("events:")),
        "{missing:?}"
    );
    std::thread::sleep(Duration::from_secs(6));
    let later = source.sample(options).unwrap();
    let parked: Vec<&String> = later
        .notes
        .iter()
        .filter(|n| n.contains("parked"))
        .collect();
    assert!(
        parked.iter().any(|n| n.ends_with("in stuck_worker")),
        "{version}: {:?}",
        later.notes
    );
    // The loop waiting in its selector is not parked, however long it waits.
    assert!(
        !parked.iter().any(|n| n.contains(&format!("thread {pid} "))),
        "{parked:?}"
    );
}

#[test]
fn injection_keeps_the_service_answering_and_then_shows_tasks_and_never_awaited() {
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("skipping injection tests: gdb is not installed (apt-get install gdb)");
        return;
    }
    for (version, python) in interpreters() {
        let svc = Service::start(&python, "inject");
        let port = svc.port;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let traffic = {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match request(port) {
                        Ok(()) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.push(e),
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                failed
            })
        };
        // 0 clean or 1 findings (snapshot exits 1 when a rule fires); 2 would be an error.
        let (code, out, err) = leakhound(&["snapshot", &svc.pid(), "--inject", "--json"]);
        assert!(matches!(code, 0 | 1), "{version}: {err}");
        assert!(err.contains("probe loaded into pid"), "{version}: {err}");
        let during = answered.load(Ordering::Relaxed);
        // Requests made after the probe is in leave never-awaited coroutines it sees.
        while answered.load(Ordering::Relaxed) < during + 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let failed = traffic.join().unwrap();
        assert!(
            failed.is_empty(),
            "{version}: requests failed during injection: {failed:?}"
        );
        assert!(get(port), "{version}: still serving after injection");
        let _ = out;
        let (code, out, err) = leakhound(&["snapshot", &svc.pid(), "--json"]);
        assert!(matches!(code, 0 | 1), "{version}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        let probe = &doc["probe"];
        assert_eq!(probe["runtime"], "python", "{version}: {out}");
        let tasks = probe["tasks"].as_array().unwrap();
        assert!(
            tasks
                .iter()
                .any(|t| t["kind"].as_str().unwrap_or_default().contains("ticker")),
            "{version}: the running loop's tasks: {tasks:?}"
        );
        let events = probe["events"].as_array().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "never_awaited" && e["subject"] == "forgotten"),
            "{version}: {events:?}"
        );
        // A second --inject finds the probe already there.
        let (code, _, err) = leakhound(&["snapshot", &svc.pid(), "--inject"]);
        assert!(matches!(code, 0 | 1), "exit {code}: 0 clean or 1 findings");
        assert!(err.contains("already loaded"), "{err}");
    }
}

#[test]
fn a_hung_injection_times_out_and_leaves_the_target_running() {
    // A gdb that stops the target, as attaching does, then hangs.
    let fake = tempfile::tempdir().unwrap();
    let gdb = fake.path().join("gdb");
    std::fs::write(
        &gdb,
        "#!/bin/sh\nfor a; do [ \"$prev\" = -p ] && kill -STOP \"$a\"; prev=\"$a\"; done\nsleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&gdb, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (_, python) = interpreters().pop().unwrap();
    let svc = Service::start(&python, "clean");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(["snapshot", &svc.pid(), "--inject"])
        .env("PATH", path)
        .env("LEAKHOUND_INJECT_TIMEOUT", "2s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(err.contains("resumed (SIGCONT)"), "{err}");
    assert!(get(svc.port), "the target answers after a failed injection");
}

#[test]
fn bad_targets_get_one_line_errors() {
    // Not Python: --stacks says so in a note, --inject fails in one line.
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let (code, out, _) = leakhound(&["snapshot", &pid, "--stacks"]);
    assert!(matches!(code, 0 | 1), "exit {code}: 0 clean or 1 findings");
    assert!(out.contains("no Python stacks"), "{out}");
    if Command::new("gdb").arg("--version").output().is_ok() {
        let (code, _, err) = leakhound(&["snapshot", &pid, "--inject"]);
        assert_eq!(code, 2);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("no Python interpreter"), "{err}");
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(!state.contains(") T"), "left stopped: {state}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // --inject needs a PID.
    let (code, _, err) = leakhound(&["snapshot", "unix:/nonexistent.sock", "--inject"]);
    assert_eq!(code, 2);
    assert!(err.contains("--inject needs a PID"), "{err}");
}

/// As another user, /proc refuses first (the py-spy path's own message is unit-tested in
/// src/source/outside/stacks.rs: ptrace cannot be forbidden to root here).
#[test]
fn reading_another_users_python_is_refused_in_one_line() {
    let (_, python) = interpreters().pop().unwrap();
    let as_root = rustix_uid() == 0;
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !as_root || !setpriv {
        eprintln!("skipping: needs root and setpriv to run leakhound as another user");
        return;
    }
    let svc = Service::start(&python, "clean");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_leakhound"))
        .args(["snapshot", &svc.pid(), "--stacks"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && err.contains("os error 13") && err.contains("exec") {
        eprintln!("skipping: the leakhound binary is not executable by nobody: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("permission denied") || err.contains("not permitted"),
        "{err}"
    );
}

fn rustix_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}
