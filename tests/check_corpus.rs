//! The leak corpus (tests/corpus/): `leakhound check` flags every leak with the right rule and
//! exit 1, and passes every clean twin with exit 0. Real programs, real probes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus examples are built next to the binary by `cargo build --all-targets`.
fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_leakhound"));
    let dir = bin.parent().expect("target dir").join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the corpus with `cargo build --workspace --all-targets`",
        path.display()
    );
    path
}

fn python() -> Option<&'static str> {
    Command::new("python3")
        .arg("-c")
        .arg("import sys; assert sys.version_info >= (3, 9)")
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| "python3")
}

/// Runs `leakhound check` with short thresholds; returns (exit code, rules found, text).
fn check(command: &[&str]) -> (i32, Vec<String>, String) {
    check_with(&[], command)
}

fn check_with(extra: &[&str], command: &[&str]) -> (i32, Vec<String>, String) {
    let (code, findings, text) = check_findings(extra, command);
    let rules = findings
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect();
    (code, rules, text)
}

/// Runs `leakhound check` as [`check_with`] does; returns the findings of its JSON report.
fn check_findings(extra: &[&str], command: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .current_dir(dir.path())
        .args([
            "check",
            "-T",
            "stuck-task.after=1s",
            "-T",
            "never-awaited.unpolled-after=1s",
            // Zombies left at exit are seen at the exit itself; while running, the /proc walk
            // is paced at 1 s, so a shorter run-time threshold would judge a stale walk.
            "-T",
            "zombie-child.after=3s",
            "--settle",
            "300ms",
        ])
        .args(extra)
        .arg("-o")
        .arg(&report)
        .arg("--")
        .args(command)
        .output()
        .expect("run leakhound");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {text}")),
    )
    .unwrap();
    let findings = json["findings"].as_array().unwrap().clone();
    (out.status.code().unwrap_or(-1), findings, text)
}

fn assert_leak(command: &[&str], rule: &str) {
    let (code, rules, text) = check(command);
    assert!(
        rules.iter().any(|r| r == rule),
        "{command:?}: expected {rule}, got {rules:?}\n{text}"
    );
    assert_eq!(code, 1, "{command:?}\n{text}");
}

fn assert_clean(command: &[&str]) {
    let (code, rules, text) = check(command);
    assert!(
        rules.is_empty(),
        "{command:?}: expected none, got {rules:?}\n{text}"
    );
    assert_eq!(code, 0, "{command:?}\n{text}");
}

fn py(script: &str) -> Option<Vec<String>> {
    let python = python()?;
    let path = repo().join("tests/corpus/python").join(script);
    assert!(Path::new(&path).exists(), "{}", path.display());
    Some(vec![python.to_string(), path.display().to_string()])
}

macro_rules! python_pair {
    ($leak:ident, $clean:ident, $kind:literal, $rule:literal) => {
        #[test]
        fn $leak() {
            let Some(cmd) = py(concat!($kind, "_leak.py")) else {
                eprintln!("python3 missing: skipped");
                return;
            };
            let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            assert_leak(&cmd, $rule);
        }

        #[test]
        fn $clean() {
            let Some(cmd) = py(concat!($kind, "_clean.py")) else {
                eprintln!("python3 missing: skipped");
                return;
            };
            let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            assert_clean(&cmd);
        }
    };
}

macro_rules! rust_pair {
    ($leak:ident, $clean:ident, $example:literal, $rule:literal) => {
        #[test]
        fn $leak() {
            let bin = example($example);
            assert_leak(&[bin.to_str().unwrap()], $rule);
        }

        #[test]
        fn $clean() {
            let bin = example($example);
            assert_clean(&[bin.to_str().unwrap(), "clean"]);
        }
    };
}

python_pair!(py_task_leak, py_task_clean, "task", "stuck-task");
python_pair!(py_thread_leak, py_thread_clean, "thread", "thread-leak");
python_pair!(py_fd_leak, py_fd_clean, "fd", "unclosed-resource");
// A module global is closed by the interpreter's teardown, after the exit /proc shows: only
// the probe's exit hook sees it.
python_pair!(
    py_global_file_leak,
    py_global_file_clean,
    "global_file",
    "unclosed-resource"
);
python_pair!(
    py_socket_leak,
    py_socket_clean,
    "socket",
    "unclosed-resource"
);
python_pair!(py_child_leak, py_child_clean, "child", "orphan-child");
python_pair!(py_zombie_leak, py_zombie_clean, "zombie", "zombie-child");
python_pair!(
    py_never_awaited_leak,
    py_never_awaited_clean,
    "never_awaited",
    "never-awaited"
);
python_pair!(
    py_executor_leak,
    py_executor_clean,
    "executor",
    "thread-leak"
);

rust_pair!(
    rust_thread_leak,
    rust_thread_clean,
    "corpus_thread",
    "thread-leak"
);
rust_pair!(
    rust_fd_leak,
    rust_fd_clean,
    "corpus_fd",
    "unclosed-resource"
);
rust_pair!(
    rust_socket_leak,
    rust_socket_clean,
    "corpus_socket",
    "unclosed-resource"
);
rust_pair!(
    rust_child_leak,
    rust_child_clean,
    "corpus_child",
    "orphan-child"
);
rust_pair!(
    rust_zombie_leak,
    rust_zombie_clean,
    "corpus_zombie",
    "zombie-child"
);
rust_pair!(
    rust_never_awaited_leak,
    rust_never_awaited_clean,
    "corpus_never_awaited",
    "never-awaited"
);
rust_pair!(
    rust_executor_leak,
    rust_executor_clean,
    "corpus_executor",
    "thread-leak"
);
/// The runtime left running has two workers: one finding names both (findings are keyed by
/// subject, so one per thread once kept only the last).
#[test]
fn rust_executor_leak_names_every_worker() {
    let bin = example("corpus_executor");
    let (_, findings, text) = check_findings(&[], &[bin.to_str().unwrap()]);
    let workers: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["rule"] == "thread-leak" && f["evidence"]["runtime"] == "tokio")
        .collect();
    assert_eq!(workers.len(), 1, "{text}");
    assert_eq!(workers[0]["evidence"]["count"], 2, "{text}");
    assert_eq!(
        workers[0]["evidence"]["tids"].as_array().map(Vec::len),
        Some(2),
        "{text}"
    );
}

/// No ignores: the probe must leave nothing of its own open (its connection threads once kept
/// the runtime's epoll and eventfd alive past the runtime's drop), so the clean twin passes as is.
const NO_IGNORES: &[&str] = &[];

#[test]
fn rust_task_leak() {
    let bin = example("corpus_task");
    let (code, rules, text) = check_with(NO_IGNORES, &[bin.to_str().unwrap()]);
    assert!(rules.iter().any(|r| r == "stuck-task"), "{rules:?}\n{text}");
    assert_eq!(code, 1, "{text}");
}

#[test]
fn rust_task_clean() {
    let bin = example("corpus_task");
    let (code, rules, text) = check_with(NO_IGNORES, &[bin.to_str().unwrap(), "clean"]);
    assert!(rules.is_empty(), "{rules:?}\n{text}");
    assert_eq!(code, 0, "{text}");
}

/// The same for the pytest plugin, through `check`: a suite of small tests, each leak blamed on
/// its test in the JUnit and SARIF files. Needs pytest; skipped without it.
#[test]
fn pytest_suite_under_check_blames_each_test() {
    let Some(python) = python() else {
        return;
    };
    let has_pytest = Command::new(python)
        .args(["-c", "import pytest"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pytest {
        eprintln!("pytest missing: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("test_small.py"),
        "import threading, time, socket\n\
         KEEP = []\n\
         def test_leaks_thread():\n    threading.Thread(target=time.sleep, args=(3,), name='t-leak', daemon=True).start()\n\
         def test_leaks_socket():\n    KEEP.append(socket.socket())\n\
         def test_clean():\n    t = threading.Thread(target=time.sleep, args=(0.01,)); t.start(); t.join()\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pytest.ini"),
        "[pytest]\nleakhound_settle = 0.1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .current_dir(dir.path())
        .args([
            "check", "--settle", "300ms", "-o", "r.xml", "-o", "r.json", "--",
        ])
        .args([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(["-p", "leakhound_probe.pytest_plugin", "test_small.py"])
        .env("PYTHONPATH", repo().join("probes/python/src"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Under check the plugin only reports (warn mode): pytest passes, leakhound's verdict fails.
    assert_eq!(out.status.code(), Some(1), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let blamed: Vec<(String, String)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            Some((
                f["rule"].as_str()?.to_string(),
                f["evidence"]["test"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert!(
        blamed.contains(&(
            "thread-leak".into(),
            "test_small.py::test_leaks_thread".into()
        )),
        "{blamed:?}\n{text}"
    );
    assert!(
        blamed.contains(&(
            "unclosed-resource".into(),
            "test_small.py::test_leaks_socket".into()
        )),
        "{blamed:?}\n{text}"
    );
    assert!(
        !blamed.iter().any(|(_, t)| t.ends_with("test_clean")),
        "{blamed:?}"
    );
    let xml = std::fs::read_to_string(dir.path().join("r.xml")).unwrap();
    assert!(
        xml.contains("classname=\"test_small\" name=\"test_leaks_thread\""),
        "{xml}"
    );
}
