//! `leakhound agent` scraped by a real Prometheus (Debian's `prometheus` package; scripts/test.sh
//! installs it): a descriptor leak, a CLOSE_WAIT pile-up and a clean process, each a real Python
//! process named by a symlink to the interpreter (so `comm`, the `service` label, tells them
//! apart). Prometheus' HTTP API must show the leak series rising, `leakhound_finding_active`
//! for the leaking two only, the alerting rules of contrib/ firing for them, and the clean one
//! followed across a restart.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/proc_fixture.py"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/grafana/leakhound.json"
);
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/prometheus/alerts.yml");

/// Kills and reaps a child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The real interpreter behind `python3` (pyenv shims are shell scripts: a symlink to one
/// would name the shell, not our process).
fn real_python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Starts the fixture in `mode` under the name `name` and waits for its READY line.
fn start(dir: &Path, name: &str, args: &[&str]) -> Running {
    let exe = dir.join(name);
    if !exe.exists() {
        std::os::unix::fs::symlink(real_python(), &exe).unwrap();
    }
    let mut child = Command::new(&exe)
        .arg(FIXTURE)
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("the fixture starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY"), "{name}: {line:?}");
    Running(child)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET on 127.0.0.1; returns (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of an instant query.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", encode(promql)))
        .unwrap_or_else(|e| panic!("querying Prometheus: {e}"));
    assert_eq!(status, 200, "{promql}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

fn label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or("")
}

/// Polls until `check` returns Some, at most `limit`; panics with `what` and the last state.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => panic!("{what}: not within {limit:?}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn services(samples: &[Value]) -> BTreeSet<String> {
    samples
        .iter()
        .map(|s| label(s, "service").to_string())
        .collect()
}

#[test]
fn prometheus_scrapes_the_agent_and_alerts_on_the_leaking_processes_only() {
    let (Some(prometheus), Some(promtool)) = (on_path("prometheus"), on_path("promtool")) else {
        eprintln!(
            "SKIPPED: prometheus/promtool not installed (scripts/test.sh installs them: apt-get install prometheus)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // The rules as shipped must load.
    let check = Command::new(&promtool)
        .args(["check", "rules", ALERTS])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let fdleak = start(dir.path(), "lh-fdleak", &["fdleak", "4096", "20"]);
    let closewait = start(dir.path(), "lh-closewait", &["closewait", "5"]);
    let clean = start(dir.path(), "lh-clean", &["quiet", "120"]);

    let mut agent = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args([
            "agent",
            "--match",
            "lh-*",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "500ms",
            "--for",
            "100s",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("the agent starts");
    let mut agent_out = BufReader::new(agent.stdout.take().unwrap());
    let agent = Running(agent);
    let mut first = String::new();
    agent_out.read_line(&mut first).unwrap();
    let agent_port: u16 = first
        .trim()
        .strip_prefix("serving metrics on http://127.0.0.1:")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .parse()
        .unwrap();
    // Keep reading the agent's log so it never blocks on a full pipe.
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = agent_out.read_to_string(&mut rest);
        rest
    });

    // The test's rules: the shipped ones with every `for:` cut to 1 s.
    let rules = std::fs::read_to_string(ALERTS).unwrap();
    let short: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: 1s\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("alerts.yml"), short).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
         scrape_configs:\n  - job_name: leakhound\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom_port = free_port();
    let prom = Running(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    wait_for(
        Duration::from_secs(20),
        "prometheus ready",
        || match http_get(prom_port, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // promtool accepts the exposition itself.
    let (status, exposition) = http_get(agent_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Every target is scraped, under its own name and pid.
    wait_for(
        Duration::from_secs(20),
        "three targets in Prometheus",
        || {
            let up = query(prom_port, "leakhound_target_up == 1");
            let pids: BTreeSet<String> = up.iter().map(|s| label(s, "pid").to_string()).collect();
            let want: BTreeSet<String> = [&fdleak, &closewait, &clean]
                .iter()
                .map(|r| r.pid().to_string())
                .collect();
            if pids == want {
                Ok(())
            } else {
                Err(format!("{up:?}"))
            }
        },
    );

    // The dashboard's and the rules' queries parse, on metrics the agent has.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        query(
            prom_port,
            &expr.replace("$service", ".*").replace("$instance", ".*"),
        );
    }
    let known: BTreeSet<String> = leakhound::agent::prometheus::GAUGES
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(
            leakhound::agent::prometheus::COUNTERS
                .iter()
                .map(|(n, _)| format!("{n}_total")),
        )
        .collect();
    let used = format!("{} {}", exprs.join(" "), rules);
    for name in used.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if name.starts_with("leakhound_") {
            assert!(known.contains(name), "{name} is not a metric of the agent");
        }
    }

    // The leak series rise.
    let fds_at_first = value(&query(prom_port, r#"leakhound_fds_open{service="lh-fdleak"}"#)[0]);
    wait_for(
        Duration::from_secs(20),
        "the descriptor count rises",
        || {
            let now = query(
                prom_port,
                r#"max_over_time(leakhound_fds_open{service="lh-fdleak"}[1m])"#,
            );
            match now.first().map(value) {
                Some(v) if v >= fds_at_first + 40.0 => Ok(()),
                other => Err(format!("first {fds_at_first}, now {other:?}")),
            }
        },
    );
    wait_for(
        Duration::from_secs(20),
        "CLOSE_WAIT sockets pile up",
        || {
            let q = query(
                prom_port,
                r#"leakhound_sockets{service="lh-closewait",state="CLOSE_WAIT"}"#,
            );
            match q.first().map(value) {
                Some(v) if v >= 10.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );

    // Findings and alerts for the leaking two, never the clean one.
    let leaking: BTreeSet<String> = ["lh-closewait".to_string(), "lh-fdleak".to_string()].into();
    wait_for(
        Duration::from_secs(30),
        "findings active for the leaks",
        || {
            let active = query(prom_port, "leakhound_finding_active == 1");
            if services(&active) == leaking {
                Ok(())
            } else {
                Err(format!("{active:?}"))
            }
        },
    );
    let alerts = wait_for(Duration::from_secs(20), "alerts firing", || {
        let firing = query(prom_port, r#"ALERTS{alertstate="firing"}"#);
        let names: BTreeSet<(String, String)> = firing
            .iter()
            .map(|s| {
                (
                    label(s, "alertname").to_string(),
                    label(s, "service").to_string(),
                )
            })
            .collect();
        let want = [
            ("LeakhoundFindingActive", "lh-fdleak"),
            ("LeakhoundFindingActive", "lh-closewait"),
            ("LeakhoundCloseWaitPileup", "lh-closewait"),
        ];
        if want
            .iter()
            .all(|(a, s)| names.contains(&(a.to_string(), s.to_string())))
        {
            Ok(firing)
        } else {
            Err(format!("{names:?}"))
        }
    });
    assert!(
        !services(&alerts).contains("lh-clean"),
        "no alert for the clean process: {alerts:?}"
    );
    let clean_active = query(
        prom_port,
        r#"leakhound_findings_active{service="lh-clean"}"#,
    );
    assert_eq!(clean_active.len(), 1, "{clean_active:?}");
    assert_eq!(value(&clean_active[0]), 0.0);

    // A restart is followed: the clean service comes back under a new pid.
    let old_pid = clean.pid();
    drop(clean);
    let clean = start(dir.path(), "lh-clean", &["quiet", "120"]);
    wait_for(Duration::from_secs(20), "the restarted service", || {
        let up = query(prom_port, r#"leakhound_target_up{service="lh-clean"} == 1"#);
        let restarts = query(
            prom_port,
            r#"leakhound_target_restarts_total{service="lh-clean"}"#,
        );
        let pids: Vec<&str> = up.iter().map(|s| label(s, "pid")).collect();
        if pids == [clean.pid().to_string().as_str()] && restarts.first().map(value) == Some(1.0) {
            Ok(())
        } else {
            Err(format!(
                "pids {pids:?} (old {old_pid}), restarts {restarts:?}"
            ))
        }
    });

    drop(prom);
    drop(agent);
    let log = log.join().unwrap();
    assert!(
        log.contains(&format!("lh-clean[{old_pid}] ended")),
        "the agent says the old pid ended:\n{log}"
    );
    assert!(log.contains("fd-exhaustion"), "{log}");
}

/// Runs leakhound to completion: (status, stdout, stderr).
fn leakhound(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("leakhound runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn agent_mistakes_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "[agent]\nmax_targets = 3\n").unwrap();
    let toml_arg = toml.display().to_string();
    for (args, expect) in [
        (vec!["agent"], "nothing to watch"),
        (
            vec!["agent", "--pid", "1", "--max-targets", "0"],
            "--max-targets",
        ),
        (vec!["agent", "--pid", "1", "--memory", "lots"], "64MiB"),
        (vec!["agent", "--match", "["], "--match"),
        (vec!["agent", "--unit", "a/b"], "--unit"),
        // Refused with or without the `otlp` feature (not a URL; not in the build).
        (
            vec!["agent", "--pid", "1", "--otlp", "collector:4318"],
            "--otlp",
        ),
        (
            vec!["agent", "--pid", "1", "--config", &toml_arg],
            "unknown field",
        ),
        (
            vec!["agent", "--pid", "1", "--listen", "nowhere"],
            "--listen",
        ),
    ] {
        let (code, out, err) = leakhound(&args, dir.path());
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn agent_reads_its_table_from_leakhound_toml_and_watch_serves_one_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = start(dir.path(), "lh-tomlcase", &["quiet", "60"]);
    let port = free_port();
    std::fs::write(
        dir.path().join("leakhound.toml"),
        format!(
            "[agent]\npid = [{}]\nlisten = \"127.0.0.1:{port}\"\ninterval = \"200ms\"\n",
            target.pid()
        ),
    )
    .unwrap();
    let agent = Running(
        Command::new(env!("CARGO_BIN_EXE_leakhound"))
            .args(["agent", "--for", "20s"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let want = format!(
        r#"leakhound_fds_open{{service="lh-tomlcase",pid="{}""#,
        target.pid()
    );
    wait_for(
        Duration::from_secs(10),
        "the agent from leakhound.toml",
        || match http_get(port, "/metrics") {
            Ok((200, body)) if body.contains(&want) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    drop(agent);

    // `watch --listen`: the same metrics for the one target it follows.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args([
            "watch",
            &target.pid().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--for",
            "20s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let watch = Running(watch);
    let mut port = None;
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if let Some(rest) = line
            .trim()
            .strip_prefix("serving metrics on http://127.0.0.1:")
        {
            port = rest
                .strip_suffix("/metrics")
                .and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.expect("watch says where it serves");
    wait_for(
        Duration::from_secs(10),
        "watch's metrics",
        || match http_get(port, "/metrics") {
            Ok((200, body))
                if body.contains(&want) && body.contains("leakhound_agent_targets 1") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    );
    drop(watch);
}

/// The DaemonSet's `args:` list, read line by line (no YAML parser for one list).
fn daemonset_args() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/k8s/daemonset.yaml"
    ))
    .unwrap();
    text.lines()
        .skip_while(|l| l.trim() != "args:")
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .take_while(|l| l.starts_with("- "))
        .map(|l| l[2..].trim().to_string())
        .collect()
}

#[test]
fn the_daemonset_uses_the_agents_real_flags() {
    let args = daemonset_args();
    assert_eq!(args.first().map(String::as_str), Some("agent"), "{args:?}");
    assert!(args.len() > 4, "{args:?}");
    // The same flags, run here: loopback on a free port instead of 0.0.0.0:9464, and briefly.
    let mut run: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("--listen=") {
                "--listen=127.0.0.1:0".to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    run.push("--for=1s".into());
    let dir = tempfile::tempdir().unwrap();
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let (code, out, err) = leakhound(&run, dir.path());
    assert_eq!(code, 0, "{run:?}: {out}{err}");
    assert!(
        out.starts_with("serving metrics on http://127.0.0.1:"),
        "{out}"
    );
}

/// What the stand-in collector received: (path, body) per request.
#[cfg(feature = "otlp")]
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP/HTTP collector: answers 200 to every POST and keeps (path, body).
#[cfg(feature = "otlp")]
fn otlp_receiver() -> (u16, Received) {
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Keep-alive: requests one after another on the same connection.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    keep.lock().unwrap().push((path, body));
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (port, got)
}

#[cfg(feature = "otlp")]
#[test]
fn otlp_sends_findings_as_log_records_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // A low soft limit: 80% of it is open within ~5 s, so the finding fires on the ratio alone
    // (a trend forecast needs the 10 s growth window, longer than this run is worth).
    let leak = start(dir.path(), "lh-otlpleak", &["fdleak", "128", "20"]);
    let (port, got) = otlp_receiver();
    let (code, out, err) = leakhound(
        &[
            "agent",
            "--pid",
            &leak.pid().to_string(),
            "--otlp",
            &format!("http://127.0.0.1:{port}"),
            "--interval",
            "500ms",
            "--for",
            "10s",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fd-exhaustion"), "the finding fired: {out}");
    let got = got.lock().unwrap();
    let has = |path: &str, needle: &[u8]| {
        got.iter()
            .any(|(p, b)| p == path && b.windows(needle.len()).any(|w| w == needle))
    };
    assert!(
        has("/v1/logs", b"fd-exhaustion"),
        "paths: {:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    assert!(has("/v1/logs", b"lh-otlpleak"));
    assert!(has("/v1/metrics", b"leakhound_fds_open"));
    assert!(has("/v1/metrics", leak.pid().to_string().as_bytes()));
}
