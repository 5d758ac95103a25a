//! The outside view on worker trees: a real gunicorn master with uvicorn workers, and a real
//! `uvicorn --workers 2`, both started WITHOUT the probe (tests/fixtures/outside_tree_app.py).
//! `snapshot MASTER --stacks` shows every worker's Python stacks under its pid, `watch MASTER`
//! samples every worker's loop from outside (a `time.sleep` in one fires `loop-blocked` naming
//! that worker), and `--inject` on the master loads the probe into every worker.
//!
//! Needs a Python with gunicorn and uvicorn (the probe's `[test]` extras): `$GUNICORN_PYTHON`,
//! else `python3`; skipped with a message where neither has them.
#![cfg(all(target_os = "linux", feature = "pystacks"))]

#[path = "fixtures/proc_fixture.rs"]
mod proc_fixture;

use proc_fixture::leakhound;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Python that can run gunicorn's uvicorn worker, or None (said on stderr).
fn python() -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("GUNICORN_PYTHON").into_iter().collect();
    candidates.push("python3".into());
    let found = candidates.into_iter().find(|exe| {
        Command::new(exe)
            .args(["-c", "import gunicorn, uvicorn"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        eprintln!(
            "skipping: no Python here has gunicorn and uvicorn (pip install -e \
             'probes/python[test]', or set GUNICORN_PYTHON)"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pre-fork server and its 2 workers, in a process group of their own (killed whole).
struct Tree {
    master: Child,
    port: u16,
    kind: &'static str,
}

impl Tree {
    /// gunicorn with uvicorn's worker class (uvloop when installed, as uvicorn picks it).
    fn gunicorn(python: &str) -> Tree {
        let port = free_port();
        let help = Command::new(python)
            .args(["-m", "gunicorn", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut args = vec![
            "-m".to_string(),
            "gunicorn".into(),
            "-w".into(),
            "2".into(),
            "-k".into(),
            "uvicorn.workers.UvicornWorker".into(),
            "-b".into(),
            format!("127.0.0.1:{port}"),
        ];
        // gunicorn 25+ listens on a control socket at one fixed path: not for parallel tests.
        if help.contains("--no-control-socket") {
            args.push("--no-control-socket".into());
        }
        args.push("outside_tree_app:app".into());
        Self::start(python, &args, port, "gunicorn")
    }

    /// uvicorn's own supervisor with 2 workers on the asyncio loop.
    fn uvicorn(python: &str) -> Tree {
        let port = free_port();
        let args: Vec<String> = [
            "-m",
            "uvicorn",
            "--workers",
            "2",
            "--loop",
            "asyncio",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "outside_tree_app:app",
        ]
        .map(String::from)
        .to_vec();
        Self::start(python, &args, port, "uvicorn --workers")
    }

    fn start(python: &str, args: &[String], port: u16, kind: &'static str) -> Tree {
        let mut cmd = Command::new(python);
        cmd.args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Started without the probe, whatever the environment of the test run says.
        for (key, _) in std::env::vars() {
            if key.starts_with("LEAKHOUND_") || key == "PYTHONPATH" {
                cmd.env_remove(key);
            }
        }
        let master = cmd.spawn().expect("python runs the server");
        let mut tree = Tree { master, port, kind };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tree.workers().len() < 2 || !get(port, "/") {
            assert!(
                tree.master.try_wait().unwrap().is_none(),
                "{kind} exited before serving"
            );
            assert!(Instant::now() < deadline, "{kind}: no 2 workers serving");
            std::thread::sleep(Duration::from_millis(100));
        }
        tree
    }

    fn pid(&self) -> String {
        self.master.id().to_string()
    }

    /// The master's Python children (uvicorn's supervisor may have helpers: not Python
    /// workers of the app are those that do not run `outside_tree_app`).
    fn workers(&self) -> Vec<u32> {
        let master = self.master.id();
        let mut out: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().collect())
                    .unwrap_or_default();
                fields.get(1) == Some(&master.to_string().as_str()) && fields[0] != "Z"
            })
            .collect();
        out.sort_unstable();
        out
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // SAFETY: killpg on the group this test made; no memory is involved.
        unsafe { libc::killpg(self.master.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.master.wait();
    }
}

/// One HTTP GET answered `ok`.
fn get(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    s.read_to_string(&mut body).is_ok() && body.starts_with("HTTP/1.1 200") && body.ends_with("ok")
}

fn has_frame(stack: &Value, func: &str) -> bool {
    stack
        .as_array()
        .is_some_and(|s| s.iter().any(|f| f.as_str().unwrap_or("").ends_with(func)))
}

#[test]
fn snapshot_of_a_master_shows_every_workers_python_stacks() {
    let Some(python) = python() else { return };
    let tree = Tree::gunicorn(&python);
    let workers = tree.workers();
    let (code, out, err) = leakhound(&["snapshot", &tree.pid(), "--stacks", "--json"]);
    assert!(matches!(code, 0 | 1), "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let shown: Vec<u32> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(shown, workers, "{out}");
    for w in doc["workers"].as_array().unwrap() {
        let pid = w["pid"].as_u64().unwrap();
        assert!(
            w["source"].as_str().unwrap().contains("outside(python"),
            "{w}"
        );
        let main = w["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"].as_u64() == Some(pid))
            .unwrap_or_else(|| panic!("worker {pid} has its main thread: {w}"));
        // The worker's own stack: gunicorn spawned it, uvicorn's worker runs its loop.
        let frames = &main["py_stack"]["frames"];
        assert!(has_frame(frames, "in UvicornWorker.run") || has_frame(frames, "in run"));
        assert!(
            frames
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().contains("uvicorn/workers.py")),
            "worker {pid}: {frames}"
        );
    }
    // The text view: each worker under its heading, its stack under its thread's row.
    let (_, text, _) = leakhound(&["snapshot", &tree.pid(), "--stacks", "--nonblocking"]);
    for pid in &workers {
        let at = text
            .find(&format!("==== WORKER pid {pid} "))
            .unwrap_or_else(|| panic!("no heading for worker {pid}: {text}"));
        let section = &text[at..];
        let section = &section[..section[1..]
            .find("==== WORKER")
            .map_or(section.len(), |e| e + 1)];
        assert!(section.contains("uvicorn/workers.py"), "{section}");
    }
    // Without --stacks, a one-shot snapshot reads no worker's interpreter.
    let (_, out, _) = leakhound(&["snapshot", &tree.pid(), "--json"]);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["workers"].as_array().map_or(0, Vec::len), 0, "{out}");
}

/// `watch MASTER` while `/slow` requests block the workers' loops: every `loop-blocked`
/// names a worker's pid (not the master's) and the app's line.
fn blocked_worker_is_named(tree: &Tree) {
    let workers = tree.workers();
    let port = tree.port;
    let load = std::thread::spawn(move || {
        // Give watch its first sample (every worker's sampler started), then block loops.
        std::thread::sleep(Duration::from_secs(2));
        let mut answered = 0;
        for _ in 0..3 {
            let round: Vec<_> = (0..4)
                .map(|_| std::thread::spawn(move || get(port, "/slow")))
                .collect();
            answered += round
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count();
        }
        answered
    });
    let (code, out, err) = leakhound(&["watch", &tree.pid(), "--json", "--for", "7s"]);
    let answered = load.join().unwrap();
    assert!(answered > 0, "{}: no /slow request was answered", tree.kind);
    assert_eq!(code, 1, "{}: a finding fired: {err}\n{out}", tree.kind);
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let blocked: Vec<&Value> = summary["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "loop-blocked")
        .collect();
    assert!(!blocked.is_empty(), "{}: {summary}", tree.kind);
    for f in blocked {
        let pid = f["evidence"]["pid"].as_u64().unwrap() as u32;
        assert!(
            workers.contains(&pid),
            "{}: {pid} is a worker: {f}",
            tree.kind
        );
        assert!(
            f["subject"]
                .as_str()
                .unwrap()
                .starts_with(&format!("pid:{pid} ")),
            "{f}"
        );
        // The loop is the worker's main thread, stopped in the app's time.sleep.
        assert_eq!(f["evidence"]["tid"].as_u64(), Some(u64::from(pid)), "{f}");
        assert!(
            has_frame(&f["evidence"]["stack"], "in handle_slow"),
            "{}: {f}",
            tree.kind
        );
        assert!(
            f["message"]
                .as_str()
                .unwrap()
                .contains("outside_tree_app.py"),
            "{f}"
        );
    }
}

#[test]
fn watch_of_a_gunicorn_master_names_the_worker_whose_loop_is_blocked() {
    let Some(python) = python() else { return };
    blocked_worker_is_named(&Tree::gunicorn(&python));
}

#[test]
fn watch_of_uvicorn_workers_names_the_worker_whose_loop_is_blocked() {
    let Some(python) = python() else { return };
    blocked_worker_is_named(&Tree::uvicorn(&python));
}

#[test]
fn inject_on_a_master_loads_the_probe_into_every_worker() {
    let Some(python) = python() else { return };
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("skipping: gdb is not installed (apt-get install gdb)");
        return;
    }
    let tree = Tree::gunicorn(&python);
    let workers = tree.workers();
    let (code, _, err) = leakhound(&["snapshot", &tree.pid(), "--inject"]);
    assert!(matches!(code, 0 | 1), "{err}");
    for pid in std::iter::once(tree.master.id()).chain(workers.iter().copied()) {
        assert!(
            err.contains(&format!("probe loaded into pid {pid} by gdb")),
            "{pid}: {err}"
        );
    }
    assert!(get(tree.port, "/"), "still serving after injection");
    // Every worker now answers from inside: its probe, its tasks.
    let (_, out, err) = leakhound(&["snapshot", &tree.pid(), "--json"]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    let probed: Vec<u32> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["probe"]["runtime"] == "python")
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(probed, workers, "{out}");
    // A second --inject finds every probe there.
    let (_, _, err) = leakhound(&["snapshot", &tree.pid(), "--inject"]);
    assert_eq!(
        err.matches("already loaded").count(),
        workers.len() + 1,
        "{err}"
    );
}
