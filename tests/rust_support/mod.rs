//! Shared by the Rust-probe and console end-to-end tests: finding the example binaries that
//! `cargo build --workspace --all-targets` builds beside `leakhound`, running leakhound.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/NAME`, next to the leakhound binary under test. When a
/// narrow `cargo test --test X` did not build it, build it once here.
pub fn example(package: &str, name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_leakhound"));
    let path = bin
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the example");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Fixture(pub Child);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn leakhound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run leakhound")
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Retries `f` until it returns `Some` or `limit` passes.
pub fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `watch --json` lines: findings (`type: finding`) and the summary.
pub fn watch_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `leakhound watch TARGET --json --for DURATION` with short thresholds (stuck after 1 s,
/// unpolled after 1 s, a pool saturated for 500 ms) and `extra` arguments: its findings; the
/// run must end in a summary without errors.
pub fn watch_findings(target: &str, duration: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "watch",
        target,
        "--json",
        "--for",
        duration,
        "--interval",
        "250ms",
        "-T",
        "stuck-task.after=1s",
        "-T",
        "never-awaited.unpolled-after=1s",
        "-T",
        "pool-starvation.saturated-for=500ms",
    ];
    args.extend_from_slice(extra);
    let out = leakhound(&args);
    let lines = watch_lines(&out.stdout);
    let summary = lines.last().expect("summary");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    lines
        .into_iter()
        .filter(|l| l["type"] == "finding")
        .collect()
}

/// The findings of one rule.
pub fn fired<'a>(findings: &'a [serde_json::Value], rule: &str) -> Vec<&'a serde_json::Value> {
    findings.iter().filter(|f| f["rule"] == rule).collect()
}

/// `task=N` from a log line: `field(line, "task=")`.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// One of probes/rust's example services, running with its probe socket in a private
/// folder and task dumps on; killed when dropped.
pub struct Service {
    app: Fixture,
    _dir: tempfile::TempDir,
    /// Log lines as they come.
    lines: std::sync::mpsc::Receiver<String>,
    /// The log lines received so far.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Service {
    /// Starts the example `name` of leakhound-probe with `args` and, on top of the
    /// environment, `env`; returns once its probe listens.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        // tempfile makes it 0755; the probe listens only in a private (0700) folder.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let mut child = Command::new(example("leakhound-probe", name))
            .args(args)
            .env("LEAKHOUND_SOCKET_DIR", dir.path())
            // Task dumps are opt-in; these services are where their await chains are checked.
            .env("LEAKHOUND_TASKDUMP", "1")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sock = dir.path().join(format!("{}.sock", child.id()));
        let app = Fixture(child);
        until(Duration::from_secs(10), || sock.exists().then_some(())).expect("probe socket");
        Service {
            app,
            _dir: dir,
            lines,
            seen: Default::default(),
        }
    }

    pub fn pid(&self) -> String {
        self.app.0.id().to_string()
    }

    /// The first log line with `text`, among those printed so far or within 10 s.
    pub fn line_containing(&self, text: &str) -> String {
        if let Some(line) = self.lines_containing(text).into_iter().next() {
            return line;
        }
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {text:?}"));
            self.seen.borrow_mut().push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Every log line with `text` printed so far.
    pub fn lines_containing(&self, text: &str) -> Vec<String> {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.lines.try_iter());
        seen.iter().filter(|l| l.contains(text)).cloned().collect()
    }

    /// The findings `watch` fires over 3.5 s with short thresholds.
    pub fn findings(&self) -> Vec<serde_json::Value> {
        watch_findings(&self.pid(), "3500ms", &[])
    }

    /// Waits until the probe's snapshot shows the await chain of `task` (a task dump is
    /// taken once it has been idle about a second) and returns it.
    pub fn await_chain(&self, task: &str) -> Vec<String> {
        until(Duration::from_secs(10), || {
            let snap = self.snapshot();
            let t = snap["probe"]["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["id"] == task)?
                .clone();
            let chain: Vec<String> = t["await_chain"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            (!chain.is_empty()).then_some(chain)
        })
        .unwrap_or_else(|| panic!("task {task}'s await chain in the snapshot"))
    }

    /// `leakhound snapshot PID --json`.
    pub fn snapshot(&self) -> serde_json::Value {
        let out = leakhound(&["snapshot", &self.pid(), "--json"]);
        // 0 clean or 1 findings (what was stuck may have fired by now); 2 is an error.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// HTTP/1.1 load from client threads (plain `TcpStream`, one connection per request, as a
/// load generator without keep-alive sends it): each path asked at its own pace until
/// [`HttpLoad::stop`] or drop.
pub struct HttpLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Served>>,
}

/// What one client got: its path, requests answered 200, and the others (errors, time-outs).
#[derive(Debug, Clone)]
pub struct Served {
    pub path: String,
    pub ok: u32,
    pub failed: u32,
}

impl HttpLoad {
    /// `GET path` on `addr` (`127.0.0.1:PORT`) every `every`, for each `(path, every)`; a
    /// request not answered within 2 s counts as failed.
    pub fn start(addr: &str, plan: &[(&str, Duration)]) -> HttpLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = plan
            .iter()
            .map(|&(path, every)| {
                let (stop, addr, path) = (stop.clone(), addr.to_string(), path.to_string());
                std::thread::spawn(move || {
                    let mut served = Served {
                        path,
                        ok: 0,
                        failed: 0,
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let next = Instant::now() + every;
                        match http_get(&addr, &served.path) {
                            Ok(200) => served.ok += 1,
                            _ => served.failed += 1,
                        }
                        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    served
                })
            })
            .collect();
        HttpLoad { stop, clients }
    }

    /// Stops the clients and says what each was served.
    pub fn stop(mut self) -> Vec<Served> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.clients
            .drain(..)
            .map(|c| c.join().expect("load client"))
            .collect()
    }
}

impl Drop for HttpLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `GET path` on its own connection: the response's status code.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut conn = std::net::TcpStream::connect_timeout(&sock, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply)?;
    let head = String::from_utf8_lossy(&reply);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP reply: {head:.60}")))
}
