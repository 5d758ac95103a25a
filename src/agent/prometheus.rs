//! Prometheus exposition: what the agent (or `watch --listen`) last saw of each target, turned
//! into metric families by `prometheus-client` on every scrape, and a tiny HTTP server for
//! `GET /metrics`.
//!
//! The registry is built afresh from [`Exposition`] on each scrape, so a target that went away
//! leaves no stale series behind. Every label value comes from a bounded set: the target's
//! name, pid and unit (targets are capped by the agent), kernel socket states, task states,
//! rule ids and severities, and at most [`MAX_LOOPS`] loops and [`MAX_POOLS`] pools per target
//! (docs/AGENT.md counts the series).

use crate::findings::Finding;
use crate::model::{Proto, Snapshot, TaskState};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Loops and pools exported per target, the busiest first; the rest are left out.
pub const MAX_LOOPS: usize = 4;
pub const MAX_POOLS: usize = 8;
/// Longest label value (a pool or loop name); longer ones are cut.
const MAX_LABEL_LEN: usize = 64;

/// Who a target is, as labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetLabels {
    pub service: String,
    pub pid: u32,
    pub unit: String,
}

impl TargetLabels {
    fn pairs(&self) -> Labels {
        vec![
            ("service", self.service.clone()),
            ("pid", self.pid.to_string()),
            ("unit", self.unit.clone()),
        ]
    }
}

type Labels = Vec<(&'static str, String)>;

/// The exported view of one loop or pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopView {
    pub name: String,
    pub lag_p50_s: f64,
    pub lag_p99_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolView {
    pub name: String,
    pub busy: u64,
    pub queued: u64,
    pub max: u64,
    pub queue_wait_p99_s: Option<f64>,
}

/// What is exported of one target: the numbers of its latest snapshot and its findings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetView {
    /// The latest sample succeeded.
    pub up: bool,
    pub fds_open: u64,
    pub fds_soft_limit: Option<u64>,
    /// Sockets by (`tcp` | `udp` | `unix`, kernel state).
    pub sockets: BTreeMap<(&'static str, String), u64>,
    pub threads: u64,
    pub children: u64,
    pub zombies: u64,
    pub rss_bytes: u64,
    /// Tasks by state, when a probe reports tasks.
    pub tasks: Option<BTreeMap<&'static str, u64>>,
    pub loops: Vec<LoopView>,
    pub pools: Vec<PoolView>,
    /// Firing now: (rule, severity) → how many subjects.
    pub active: BTreeMap<(String, &'static str), u64>,
    /// Fired since the target was first seen: (rule, severity) → times.
    pub fired: BTreeMap<(String, &'static str), u64>,
}

impl TargetView {
    /// Takes the numbers of a new snapshot; the finding counts are kept.
    pub fn update(&mut self, s: &Snapshot) {
        self.up = true;
        self.fds_open = s.fds.open;
        self.fds_soft_limit = s.fds.soft_limit;
        self.sockets.clear();
        for sock in &s.sockets {
            let family = match sock.proto {
                Proto::Tcp | Proto::Tcp6 => "tcp",
                Proto::Udp | Proto::Udp6 => "udp",
                Proto::Unix => "unix",
            };
            // Kernel state names are a fixed set (an enum): the label is bounded by it.
            let state = sock.state.as_str().to_string();
            *self.sockets.entry((family, state)).or_default() += 1;
        }
        self.threads = s.threads.len() as u64;
        self.children = s.children.len() as u64;
        self.zombies = s.zombies().count() as u64;
        self.rss_bytes = s.process.as_ref().map_or(0, |p| p.rss_bytes);
        self.tasks = s.probe.as_ref().filter(|p| !p.tasks.is_empty()).map(|p| {
            let mut by = BTreeMap::new();
            for t in &p.tasks {
                *by.entry(task_state(t.state)).or_default() += 1;
            }
            by
        });
        let probe = s.probe.as_ref();
        let mut loops: Vec<LoopView> = probe
            .map(|p| {
                p.loops
                    .iter()
                    .map(|l| LoopView {
                        name: label(&l.id),
                        lag_p50_s: l.lag.p50_ms / 1000.0,
                        lag_p99_s: l.lag.p99_ms / 1000.0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        loops.sort_by(|a, b| b.lag_p99_s.total_cmp(&a.lag_p99_s));
        loops.truncate(MAX_LOOPS);
        self.loops = loops;
        let mut pools: Vec<PoolView> = probe
            .map(|p| {
                p.pools
                    .iter()
                    .map(|pool| PoolView {
                        name: label(if pool.name.is_empty() {
                            &pool.id
                        } else {
                            &pool.name
                        }),
                        busy: pool.busy_workers,
                        queued: pool.queued,
                        max: pool.max_workers,
                        queue_wait_p99_s: pool.queue_wait_p99_ms.map(|ms| ms / 1000.0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        pools.sort_by_key(|p| std::cmp::Reverse((p.queued, p.busy)));
        pools.truncate(MAX_POOLS);
        self.pools = pools;
    }

    /// Takes a judgement: what fires now, and what newly fired.
    pub fn judged(&mut self, current: &[Finding], new: &[Finding]) {
        self.active.clear();
        for f in current {
            *self
                .active
                .entry((f.rule.clone(), f.severity.as_str()))
                .or_default() += 1;
        }
        for f in new {
            *self
                .fired
                .entry((f.rule.clone(), f.severity.as_str()))
                .or_default() += 1;
        }
    }
}

fn task_state(s: TaskState) -> &'static str {
    match s {
        TaskState::Running => "running",
        TaskState::Scheduled => "scheduled",
        TaskState::Idle => "idle",
        TaskState::Done => "done",
    }
}

fn label(text: &str) -> String {
    text.chars().take(MAX_LABEL_LEN).collect()
}

/// The agent's own numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentView {
    /// Targets the selectors chose beyond `--max-targets`, left unwatched.
    pub targets_dropped: u64,
    pub sample_errors: u64,
    /// A service (name + unit) seen again under a new pid, by (service, unit).
    pub restarts: BTreeMap<(String, String), u64>,
    pub memory_budget_bytes: u64,
}

/// Everything a scrape shows; shared between the sampling loop and the HTTP server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub targets: BTreeMap<TargetLabels, TargetView>,
    pub agent: AgentView,
}

pub type Shared = Arc<Mutex<Exposition>>;

type FGauge = Gauge<f64, AtomicU64>;

/// Adds gauge families by name, one sample at a time.
struct Families {
    gauges: BTreeMap<&'static str, Family<Labels, FGauge>>,
    counters: BTreeMap<&'static str, Family<Labels, Counter>>,
}

/// Every metric: name, help. Counters are named without `_total` (the encoder adds it).
/// docs/AGENT.md, contrib/prometheus/alerts.yml and contrib/grafana/leakhound.json use these.
pub const GAUGES: &[(&str, &str)] = &[
    (
        "leakhound_target_up",
        "1 when the target's latest sample succeeded",
    ),
    ("leakhound_fds_open", "Open file descriptors"),
    (
        "leakhound_fds_soft_limit",
        "Soft RLIMIT_NOFILE (absent when unlimited)",
    ),
    ("leakhound_sockets", "Sockets by family and kernel state"),
    ("leakhound_threads", "OS threads"),
    (
        "leakhound_children",
        "Descendant processes, zombies included",
    ),
    ("leakhound_zombies", "Descendants exited and not reaped"),
    ("leakhound_rss_bytes", "Resident set size"),
    ("leakhound_tasks", "Tasks by state (from a probe)"),
    (
        "leakhound_loop_lag_seconds",
        "Event-loop lag over the probe's window, by quantile",
    ),
    ("leakhound_pool_busy", "Busy workers of a pool"),
    ("leakhound_pool_queued", "Work items waiting for a worker"),
    ("leakhound_pool_max", "Workers a pool may have"),
    (
        "leakhound_pool_queue_wait_p99_seconds",
        "p99 of the time work waited for a worker",
    ),
    (
        "leakhound_finding_active",
        "1 while a rule fires for the target (absent otherwise)",
    ),
    (
        "leakhound_findings_active",
        "Findings firing now for the target, all rules",
    ),
    ("leakhound_agent_targets", "Targets watched"),
    (
        "leakhound_agent_targets_dropped",
        "Targets chosen beyond --max-targets and left unwatched",
    ),
    (
        "leakhound_agent_memory_budget_bytes",
        "History memory shared by every target",
    ),
];

pub const COUNTERS: &[(&str, &str)] = &[
    (
        "leakhound_findings_fired",
        "Findings fired (a finding that resolves and fires again counts twice)",
    ),
    (
        "leakhound_agent_sample_errors",
        "Samples that failed while the target was still there",
    ),
    (
        "leakhound_target_restarts",
        "A service seen again under a new pid",
    ),
];

impl Families {
    fn new() -> Self {
        Families {
            gauges: GAUGES
                .iter()
                .map(|(n, _)| (*n, Family::default()))
                .collect(),
            counters: COUNTERS
                .iter()
                .map(|(n, _)| (*n, Family::default()))
                .collect(),
        }
    }

    fn set(&self, name: &'static str, labels: Labels, value: f64) {
        self.gauges[name].get_or_create(&labels).set(value);
    }

    fn add(&self, name: &'static str, labels: Labels, value: u64) {
        self.counters[name].get_or_create(&labels).inc_by(value);
    }

    fn register(self) -> Registry {
        let mut registry = Registry::default();
        let help = |list: &[(&'static str, &'static str)], name: &str| {
            list.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h)
        };
        for (name, family) in self.gauges {
            registry.register(name, help(GAUGES, name), family);
        }
        for (name, family) in self.counters {
            registry.register(name, help(COUNTERS, name), family);
        }
        registry
    }
}

fn with(mut labels: Labels, more: &[(&'static str, &str)]) -> Labels {
    labels.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    labels
}

/// One sample of a metric: a gauge value or a counter's total.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    pub counter: bool,
}

#[derive(Default)]
struct Samples(Vec<Sample>);

impl Samples {
    fn set(&mut self, name: &'static str, labels: Labels, value: f64) {
        self.0.push(Sample {
            name,
            labels,
            value,
            counter: false,
        });
    }

    fn add(&mut self, name: &'static str, labels: Labels, value: u64) {
        self.0.push(Sample {
            name,
            labels,
            value: value as f64,
            counter: true,
        });
    }
}

/// Every sample `e` exports (what `/metrics` shows and OTLP sends).
pub fn samples(e: &Exposition) -> Vec<Sample> {
    let mut f = Samples::default();
    for (who, t) in &e.targets {
        let l = who.pairs();
        f.set("leakhound_target_up", l.clone(), f64::from(u8::from(t.up)));
        f.set("leakhound_fds_open", l.clone(), t.fds_open as f64);
        if let Some(soft) = t.fds_soft_limit {
            f.set("leakhound_fds_soft_limit", l.clone(), soft as f64);
        }
        for ((family, state), n) in &t.sockets {
            let labels = with(l.clone(), &[("family", family), ("state", state)]);
            f.set("leakhound_sockets", labels, *n as f64);
        }
        f.set("leakhound_threads", l.clone(), t.threads as f64);
        f.set("leakhound_children", l.clone(), t.children as f64);
        f.set("leakhound_zombies", l.clone(), t.zombies as f64);
        f.set("leakhound_rss_bytes", l.clone(), t.rss_bytes as f64);
        if let Some(tasks) = &t.tasks {
            for state in ["running", "scheduled", "idle", "done"] {
                let n = tasks.get(state).copied().unwrap_or(0);
                f.set(
                    "leakhound_tasks",
                    with(l.clone(), &[("state", state)]),
                    n as f64,
                );
            }
        }
        for lp in &t.loops {
            for (q, v) in [("0.5", lp.lag_p50_s), ("0.99", lp.lag_p99_s)] {
                let labels = with(l.clone(), &[("loop", &lp.name), ("quantile", q)]);
                f.set("leakhound_loop_lag_seconds", labels, v);
            }
        }
        for p in &t.pools {
            let labels = with(l.clone(), &[("pool", &p.name)]);
            f.set("leakhound_pool_busy", labels.clone(), p.busy as f64);
            f.set("leakhound_pool_queued", labels.clone(), p.queued as f64);
            f.set("leakhound_pool_max", labels.clone(), p.max as f64);
            if let Some(w) = p.queue_wait_p99_s {
                f.set("leakhound_pool_queue_wait_p99_seconds", labels, w);
            }
        }
        for (rule, severity) in t.active.keys() {
            let labels = with(l.clone(), &[("rule", rule), ("severity", severity)]);
            f.set("leakhound_finding_active", labels, 1.0);
        }
        let active: u64 = t.active.values().sum();
        f.set("leakhound_findings_active", l.clone(), active as f64);
        for ((rule, severity), n) in &t.fired {
            let labels = with(l.clone(), &[("rule", rule), ("severity", severity)]);
            f.add("leakhound_findings_fired", labels, *n);
        }
    }
    f.set(
        "leakhound_agent_targets",
        Vec::new(),
        e.targets.len() as f64,
    );
    f.set(
        "leakhound_agent_targets_dropped",
        Vec::new(),
        e.agent.targets_dropped as f64,
    );
    if e.agent.memory_budget_bytes > 0 {
        f.set(
            "leakhound_agent_memory_budget_bytes",
            Vec::new(),
            e.agent.memory_budget_bytes as f64,
        );
    }
    f.add(
        "leakhound_agent_sample_errors",
        Vec::new(),
        e.agent.sample_errors,
    );
    for ((service, unit), n) in &e.agent.restarts {
        let labels = vec![("service", service.clone()), ("unit", unit.clone())];
        f.add("leakhound_target_restarts", labels, *n);
    }
    f.0
}

/// The Prometheus text exposition (format 0.0.4) of `e`.
pub fn render(e: &Exposition) -> String {
    let f = Families::new();
    for s in samples(e) {
        if s.counter {
            f.add(s.name, s.labels, s.value as u64);
        } else {
            f.set(s.name, s.labels, s.value);
        }
    }
    let registry = f.register();
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// Largest request head read; a scraper's GET is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one client may take to send its request or read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` on `addr` from a background thread, one connection at a time (a
/// scraper asks once every few seconds; a slow client holds it for at most the deadline).
/// Returns the bound address (port 0 picks a free one).
pub fn serve(addr: SocketAddr, shared: Shared) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}: pick another address with --listen")
    })?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("leakhound-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let _ = answer(stream, &shared);
                    }
                    Err(e) => {
                        tracing::debug!("accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_DEADLINE))?;
    stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body) = match request_line(&head) {
        Some(("GET", path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            let body = {
                let e = shared.lock().unwrap_or_else(|p| p.into_inner());
                render(&e)
            };
            ("200 OK", prometheus_text::CONTENT_TYPE, body)
        }
        Some(("GET", "/")) => (
            "200 OK",
            "text/plain; charset=utf-8",
            "leakhound: metrics at /metrics\n".to_string(),
        ),
        Some(("GET", _)) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_string(),
        ),
        Some(_) => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n".to_string(),
        ),
        None => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes())?;
    stream.flush()
}

/// Reads up to the blank line that ends the request head, at most [`MAX_REQUEST`] bytes.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// `GET /metrics HTTP/1.1` → (`GET`, `/metrics`).
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let path = parts.next()?;
    parts.next()?.starts_with("HTTP/").then_some((method, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Severity;
    use crate::model::{Child, EventLoop, FdSummary, LagStats, Pool, ProbeData, ProcState, Socket};

    fn sock(state: &str) -> Socket {
        Socket {
            proto: Proto::Tcp,
            local: "127.0.0.1:1".into(),
            remote: "127.0.0.1:2".into(),
            state: state.into(),
            inode: 1,
            fd: None,
            rx_queue: 0,
            tx_queue: 0,
        }
    }

    fn target() -> (TargetLabels, TargetView) {
        let snap = Snapshot {
            pid: 42,
            fds: FdSummary {
                open: 17,
                soft_limit: Some(1024),
                ..Default::default()
            },
            sockets: vec![sock("CLOSE_WAIT"), sock("CLOSE_WAIT"), sock("LISTEN")],
            children: vec![Child {
                state: ProcState::Zombie,
                ..Default::default()
            }],
            probe: Some(ProbeData {
                loops: vec![EventLoop {
                    id: "main".into(),
                    lag: LagStats {
                        p50_ms: 2.0,
                        p99_ms: 250.0,
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                pools: (0..20)
                    .map(|i| Pool {
                        name: format!("pool-{i}"),
                        queued: i,
                        max_workers: 4,
                        ..Default::default()
                    })
                    .collect(),
                tasks: vec![Default::default(); 3],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut view = TargetView::default();
        view.update(&snap);
        let f = Finding::new("close-wait", Severity::Warning, "pid:42", "m");
        view.judged(std::slice::from_ref(&f), std::slice::from_ref(&f));
        view.judged(std::slice::from_ref(&f), &[]);
        let who = TargetLabels {
            service: "api".into(),
            pid: 42,
            unit: "api.service".into(),
        };
        (who, view)
    }

    #[test]
    fn a_target_renders_with_its_labels_and_bounded_series() {
        let (who, view) = target();
        let mut e = Exposition::default();
        e.targets.insert(who, view);
        e.agent.restarts.insert(("api".into(), "".into()), 2);
        let text = render(&e);
        let l = r#"service="api",pid="42",unit="api.service""#;
        for line in [
            format!("leakhound_fds_open{{{l}}} 17.0"),
            format!("leakhound_fds_soft_limit{{{l}}} 1024.0"),
            format!(r#"leakhound_sockets{{{l},family="tcp",state="CLOSE_WAIT"}} 2.0"#),
            format!("leakhound_zombies{{{l}}} 1.0"),
            format!(r#"leakhound_tasks{{{l},state="idle"}} 3.0"#),
            format!(r#"leakhound_loop_lag_seconds{{{l},loop="main",quantile="0.99"}} 0.25"#),
            format!(r#"leakhound_pool_queued{{{l},pool="pool-19"}} 19.0"#),
            format!(r#"leakhound_finding_active{{{l},rule="close-wait",severity="warning"}} 1.0"#),
            format!(
                r#"leakhound_findings_fired_total{{{l},rule="close-wait",severity="warning"}} 1"#
            ),
            format!("leakhound_findings_active{{{l}}} 1.0"),
            r#"leakhound_target_restarts_total{service="api",unit=""} 2"#.to_string(),
            "leakhound_agent_targets 1.0".to_string(),
        ] {
            assert!(text.lines().any(|t| t == line), "missing {line}\n{text}");
        }
        let pools = text
            .lines()
            .filter(|t| t.starts_with("leakhound_pool_queued{"))
            .count();
        assert_eq!(pools, MAX_POOLS, "the busiest pools only");
        assert!(!text.contains("pool-0\""), "the idlest pool is left out");
    }

    #[test]
    fn an_empty_agent_still_says_how_many_targets() {
        let text = render(&Exposition::default());
        assert!(text.contains("leakhound_agent_targets 0.0"), "{text}");
        assert!(!text.contains("leakhound_fds_open{"), "{text}");
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe"), None);
        assert_eq!(request_line(b""), None);
    }

    fn fetch(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_over_a_real_socket_and_refuses_the_rest() {
        let (who, view) = target();
        let shared: Shared = Arc::default();
        shared.lock().unwrap().targets.insert(who, view);
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&shared)).unwrap();
        let ok = fetch(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("leakhound_fds_open{"), "{ok}");
        let missing = fetch(addr, b"GET /nope HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = fetch(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        // A head that never ends is cut at the cap, answered, and the next client is served.
        let huge = vec![b'a'; MAX_REQUEST];
        let bad = fetch(addr, &huge);
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        let again = fetch(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        let taken = TcpListener::bind(addr);
        assert!(taken.is_err());
        let err = serve(addr, shared).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
    }
}
