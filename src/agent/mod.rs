//! `leakhound agent`: one long-running process that watches many targets on a host.
//!
//! Every interval it asks [`discover`] which processes the selectors choose, starts a
//! [`Collector`] for each new one (at most `max_targets`), and judges each target's snapshots
//! in its own [`Judge`], whose history gets an equal share of one memory budget. A target that
//! exits is dropped; when the same service (name and unit) shows up again under a new pid, the
//! next scan picks it up and counts a restart. What it sees is published to an
//! [`prometheus::Exposition`] that the `/metrics` server renders on each scrape.

pub mod discover;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod prometheus;
pub mod settings;

use crate::config::Config;
use crate::findings::Finding;
use crate::judge::Judge;
use crate::source::probe::WithProbe;
use crate::source::procfs::ProcSource;
use crate::source::procfs::host::HostView;
use crate::source::{Collector, CollectorEvent, SampleOptions, SourceError, now_ms};
use discover::{Candidate, Selector};
use prometheus::{Exposition, Shared, TargetLabels, TargetView};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// Said when `--otlp` is asked of a build without it.
pub const OTLP_MISSING: &str = "--otlp is not in this build: rebuild with `cargo build --release --features otlp`, or scrape /metrics with --listen (an OpenTelemetry collector's prometheus receiver reads it)";

/// How often the loop drains the collectors and looks at the clock.
const POLL: Duration = Duration::from_millis(100);
/// How often a target without a probe is looked at again for one (each look reads its
/// environment, descriptors, the unix socket table and lists the socket folders).
const PROBE_RELOOK: Duration = Duration::from_secs(10);

/// What the agent watches and how.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub selectors: Vec<Selector>,
    pub interval: Duration,
    pub config: Config,
    /// Targets watched at most; more chosen ones are counted and left alone.
    pub max_targets: usize,
    /// Bytes of snapshot history for all targets together.
    pub memory_budget: usize,
    pub listen: Option<SocketAddr>,
    /// OTLP/HTTP endpoint for findings and metrics (feature `otlp`).
    pub otlp: Option<String>,
    /// Stop after this long (tests, benchmarks); `None` runs until stopped.
    pub duration: Option<Duration>,
    /// Python targets without a probe get the outside view's 20 Hz stack sampler.
    pub python_stacks: bool,
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Listening(SocketAddr),
    Watching(TargetLabels),
    Exited(TargetLabels, String),
    /// A target could not be opened or sampled (said once per target).
    Failed(TargetLabels, String),
    Finding(TargetLabels, Finding),
    /// More targets chosen than `max_targets` (said once each time the number changes).
    Dropped(u64),
}

struct Watched {
    labels: TargetLabels,
    explicit: bool,
    collector: Collector,
    events: Receiver<CollectorEvent>,
    judge: Judge,
    view: TargetView,
    failed_once: bool,
    /// When the agent took this pid on, on the snapshots' clock (wall ms).
    started_ms: u64,
    /// When the latest good sample was taken (or the start): a pid of the same service taken
    /// on since then replaced this one, when this one turns out gone. The sample's own time,
    /// not when it was read: a sample taken before this pid died but read after its
    /// replacement was found would make the replacement look older than it.
    last_ok_ms: u64,
    /// Already counted as the restart of another pid.
    is_restart: bool,
}

/// What one collector event was.
#[derive(Debug, PartialEq)]
enum Took {
    Sample,
    Error,
    Gone(String),
}

impl Watched {
    /// Judges one event of this target's collector.
    fn take(&mut self, event: CollectorEvent, log: &mut impl FnMut(Event)) -> Took {
        match event {
            CollectorEvent::Snapshot(s) => {
                self.last_ok_ms = s.taken_at_ms;
                self.view.update(&s);
                let judged = self.judge.observe(*s);
                self.view.judged(&judged.current, &judged.new);
                for f in judged.new {
                    log(Event::Finding(self.labels.clone(), f));
                }
                Took::Sample
            }
            CollectorEvent::Error(e) => {
                self.view.up = false;
                if !self.failed_once {
                    self.failed_once = true;
                    log(Event::Failed(self.labels.clone(), e));
                }
                Took::Error
            }
            CollectorEvent::Gone(why) => Took::Gone(why),
        }
    }
}

/// The running agent: targets, their judges and what is exported.
pub struct Agent {
    options: AgentOptions,
    shared: Shared,
    targets: BTreeMap<u32, Watched>,
    /// Pids that could not be opened or have ended (a zombie is still listed); not retried
    /// while /proc lists them.
    unopenable: BTreeSet<u32>,
    /// Services (name, unit) that lost a pid and are expected back.
    awaiting_restart: BTreeMap<(String, String), u64>,
    own_pid: u32,
    /// The host's process and socket tables, read once per interval for all targets.
    host: std::sync::Arc<HostView>,
}

impl Agent {
    pub fn new(options: AgentOptions) -> Agent {
        let shared = Shared::default();
        shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .agent
            .memory_budget_bytes = options.memory_budget as u64;
        Agent {
            shared,
            targets: BTreeMap::new(),
            unopenable: BTreeSet::new(),
            awaiting_restart: BTreeMap::new(),
            own_pid: std::process::id(),
            host: HostView::timed(options.interval),
            options,
        }
    }

    /// What the metrics server shows.
    pub fn exposition(&self) -> Shared {
        std::sync::Arc::clone(&self.shared)
    }

    /// Runs until `stop()` says so or the duration is up, telling `log` what happens.
    pub fn run(
        &mut self,
        stop: impl Fn() -> bool,
        mut log: impl FnMut(Event),
    ) -> anyhow::Result<()> {
        #[cfg(feature = "otlp")]
        let otlp = match &self.options.otlp {
            Some(endpoint) => Some(otlp::Otlp::start(
                endpoint,
                self.exposition(),
                self.options.interval,
            )?),
            None => None,
        };
        #[cfg(not(feature = "otlp"))]
        if self.options.otlp.is_some() {
            anyhow::bail!(OTLP_MISSING);
        }
        let mut log = |event: Event| {
            #[cfg(feature = "otlp")]
            if let (Some(o), Event::Finding(who, f)) = (&otlp, &event) {
                o.finding(who, f);
            }
            log(event);
        };
        if let Some(addr) = self.options.listen {
            let bound = prometheus::serve(addr, self.exposition())?;
            log(Event::Listening(bound));
        }
        let started = Instant::now();
        let mut next_scan = started;
        let mut dropped = 0;
        while !stop() && self.options.duration.is_none_or(|d| started.elapsed() < d) {
            let mut changed = false;
            if Instant::now() >= next_scan {
                next_scan = Instant::now() + self.options.interval;
                let now_dropped = self.scan(&mut log);
                if now_dropped != dropped {
                    if now_dropped > 0 {
                        log(Event::Dropped(now_dropped));
                    }
                    changed = true;
                }
                dropped = now_dropped;
            }
            changed |= self.drain(&mut log);
            if changed {
                self.publish(dropped);
            }
            std::thread::sleep(POLL);
        }
        for (_, t) in std::mem::take(&mut self.targets) {
            t.collector.stop();
        }
        #[cfg(feature = "otlp")]
        if let Some(o) = otlp {
            o.shutdown();
        }
        Ok(())
    }

    /// Starts watching what the selectors newly choose; returns how many were left out.
    fn scan(&mut self, log: &mut impl FnMut(Event)) -> u64 {
        let found = discover::discover(&self.options.selectors, self.own_pid);
        let alive: BTreeSet<u32> = found.iter().map(|c| c.pid).collect();
        self.unopenable.retain(|pid| alive.contains(pid));
        let mut dropped = 0;
        for c in found {
            if self.targets.contains_key(&c.pid) || self.unopenable.contains(&c.pid) {
                continue;
            }
            if self.targets.len() >= self.options.max_targets {
                dropped += 1;
                continue;
            }
            self.start(c, log);
        }
        dropped
    }

    fn start(&mut self, c: Candidate, log: &mut impl FnMut(Event)) {
        let labels = TargetLabels {
            service: c.service.clone(),
            pid: c.pid,
            unit: c.unit.clone(),
        };
        let source = match self.open(c.pid) {
            Ok(s) => s,
            Err(e) => {
                self.unopenable.insert(c.pid);
                log(Event::Failed(labels, e.to_string()));
                return;
            }
        };
        let mut is_restart = false;
        if !c.explicit {
            let key = (c.service.clone(), c.unit.clone());
            if let Some(n) = self.awaiting_restart.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.awaiting_restart.remove(&key);
                }
                self.count_restart(key);
                is_restart = true;
            }
        }
        let share = self.options.memory_budget / self.options.max_targets.max(1);
        let (collector, events) =
            Collector::spawn(source, SampleOptions::default(), self.options.interval, 4);
        log(Event::Watching(labels.clone()));
        let now = now_ms();
        self.targets.insert(
            c.pid,
            Watched {
                labels,
                explicit: c.explicit,
                collector,
                events,
                judge: Judge::with_history_budget(self.options.config.clone(), share),
                view: TargetView::default(),
                failed_once: false,
                started_ms: now,
                last_ok_ms: now,
                is_restart,
            },
        );
    }

    /// The source of one target: /proc through the shared host view, the probe when one
    /// answers (looked for again every [`PROBE_RELOOK`] while there is none), and, when asked,
    /// Python stacks from outside. `watch` looks for a probe every sample and runs the stack
    /// sampler for any Python target; for a host's worth of targets either would cost more
    /// than the rest of the agent together (docs/AGENT.md, "Cost").
    fn open(&self, pid: u32) -> Result<Box<dyn crate::source::Source>, SourceError> {
        let proc = ProcSource::with_host(pid, std::sync::Arc::clone(&self.host))?;
        let probed = WithProbe::new(proc, pid).relooking_every(PROBE_RELOOK);
        #[cfg(feature = "pystacks")]
        if self.options.python_stacks {
            return Ok(Box::new(crate::source::outside::WithOutside::new(
                probed,
                pid,
                crate::source::outside::Options::watching(),
            )));
        }
        Ok(Box::new(probed))
    }

    /// Judges what the collectors sent; drops the targets that exited. True when anything
    /// exported changed.
    fn drain(&mut self, log: &mut impl FnMut(Event)) -> bool {
        let mut changed = false;
        let mut exited = Vec::new();
        let mut errors = 0;
        for (pid, t) in &mut self.targets {
            loop {
                let took = match t.events.try_recv() {
                    Ok(event) => t.take(event, log),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => Took::Gone("sampling stopped".to_string()),
                };
                changed = true;
                match took {
                    Took::Sample => {}
                    Took::Error => errors += 1,
                    Took::Gone(why) => {
                        exited.push((*pid, why));
                        break;
                    }
                }
            }
        }
        for (pid, why) in exited {
            if let Some(t) = self.targets.remove(&pid) {
                self.unopenable.insert(pid);
                if !t.explicit {
                    self.lost(&t);
                }
                log(Event::Exited(t.labels.clone(), why));
                t.collector.stop();
                changed = true;
            }
        }
        if errors > 0 {
            self.shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .agent
                .sample_errors += errors;
        }
        changed
    }

    /// A followed pid of a service went away: either a pid of the same service that appeared
    /// since this one's last good sample replaced it (the next scan found the new one before
    /// the old one's exit was seen), or the service is expected back.
    fn lost(&mut self, t: &Watched) {
        let key = (t.labels.service.clone(), t.labels.unit.clone());
        let replacement = self.targets.values_mut().find(|o| {
            !o.explicit
                && !o.is_restart
                && o.started_ms >= t.last_ok_ms
                && o.labels.service == t.labels.service
                && o.labels.unit == t.labels.unit
        });
        if let Some(new) = replacement {
            new.is_restart = true;
            self.count_restart(key);
            return;
        }
        // Bounded: one entry per service name that lost a pid, at most 4× the target cap.
        if self.awaiting_restart.len() < self.options.max_targets * 4
            || self.awaiting_restart.contains_key(&key)
        {
            *self.awaiting_restart.entry(key).or_default() += 1;
        }
    }

    fn count_restart(&self, key: (String, String)) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        *shared.agent.restarts.entry(key).or_default() += 1;
    }

    fn publish(&self, dropped: u64) {
        let targets = self
            .targets
            .values()
            .map(|t| (t.labels.clone(), t.view.clone()))
            .collect();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.targets = targets;
        shared.agent.targets_dropped = dropped;
    }

    /// Targets watched now.
    pub fn targets(&self) -> Vec<TargetLabels> {
        self.targets.values().map(|t| t.labels.clone()).collect()
    }
}

/// `watch --listen`: the same metrics for the one target `watch` follows.
pub struct SingleExport {
    shared: Shared,
    labels: TargetLabels,
    view: TargetView,
}

impl SingleExport {
    /// Serves on `addr`; the labels come from the first snapshot. Returns the bound address.
    pub fn serve(
        addr: SocketAddr,
        first: &crate::model::Snapshot,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        let shared = Shared::default();
        let bound = prometheus::serve(addr, std::sync::Arc::clone(&shared))?;
        let labels = TargetLabels {
            service: first
                .process
                .as_ref()
                .map_or_else(String::new, |p| p.name.clone()),
            pid: first.pid,
            unit: discover::unit_of_pid(first.pid),
        };
        let export = SingleExport {
            shared,
            labels,
            view: TargetView::default(),
        };
        Ok((export, bound))
    }

    /// Takes a snapshot and its judgement.
    pub fn observe(&mut self, snapshot: &crate::model::Snapshot, judged: &crate::judge::Judged) {
        self.view.update(snapshot);
        self.view.judged(&judged.current, &judged.new);
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.targets = BTreeMap::from([(self.labels.clone(), self.view.clone())]);
    }
}

/// A copy of what a scrape would show now.
pub fn snapshot_of(shared: &Shared) -> Exposition {
    shared.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Parses a byte size: `64MiB`, `512KiB`, `1GiB`, `100MB`, or plain bytes.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    match num.parse::<f64>() {
        Ok(n) if mult.is_finite() && n > 0.0 && n * mult < 1e15 => Ok((n * mult) as usize),
        _ => Err(format!(
            "'{text}' is not a memory size: write e.g. 64MiB, 512KiB or 1GiB"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_bytes("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        for bad in ["", "MiB", "0", "-1MiB", "12 parsecs", "1e30"] {
            assert!(parse_bytes(bad).unwrap_err().contains("64MiB"), "{bad}");
        }
    }

    fn options(selectors: Vec<Selector>, max_targets: usize) -> AgentOptions {
        AgentOptions {
            selectors,
            interval: Duration::from_millis(200),
            config: Config::default(),
            max_targets,
            memory_budget: 1 << 20,
            listen: None,
            otlp: None,
            duration: None,
            python_stacks: false,
        }
    }

    /// A real child process that sleeps until killed, once it has become `sleep` (exec'd).
    fn sleeper() -> std::process::Child {
        sleeper_named(Path::new("sleep"))
    }

    /// `sleep` started through `exe` (a symlink names the process: its `comm`), once its exec
    /// is complete: its command line reads as given. The kernel renames the process (`comm`)
    /// before it puts the new command line in place, and in between /proc shows an empty one,
    /// which discovery passes over as it does a zombie's.
    fn sleeper_named(exe: &Path) -> std::process::Child {
        let seconds = "60";
        let child = std::process::Command::new(exe)
            .arg(seconds)
            .spawn()
            .expect("sleep runs");
        let want = format!("{}\0{seconds}\0", exe.display());
        let cmdline = format!("/proc/{}/cmdline", child.id());
        while std::fs::read(&cmdline).unwrap_or_default() != want.as_bytes() {
            std::thread::yield_now();
        }
        child
    }

    fn stop(mut child: std::process::Child) {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Drains until `done` holds (the collectors report an exit on their next sample).
    fn drain_until(agent: &mut Agent, done: impl Fn(&Agent) -> bool) {
        for _ in 0..100 {
            agent.drain(&mut |_| {});
            if done(agent) {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!("not within 10 s: {:?}", agent.targets());
    }

    fn restarts(agent: &Agent, service: &str) -> u64 {
        let e = snapshot_of(&agent.exposition());
        e.agent
            .restarts
            .get(&(service.to_string(), String::new()))
            .copied()
            .unwrap_or(0)
    }

    /// A service name no other process on the host has (nor another test's: `prefix` differs),
    /// `sleep` under that name, and an agent that follows it by name.
    fn named_service(prefix: &str) -> (tempfile::TempDir, PathBuf, String, Agent) {
        let dir = tempfile::tempdir().unwrap();
        // comm keeps 15 bytes.
        let name = format!("{prefix}{}", std::process::id());
        let exe = dir.path().join(&name);
        std::os::unix::fs::symlink(which("sleep"), &exe).unwrap();
        let agent = Agent::new(options(vec![Selector::pattern(&name).unwrap()], 8));
        (dir, exe, name, agent)
    }

    #[test]
    fn a_restarted_service_is_followed_whichever_is_seen_first() {
        let (_dir, exe, name, mut agent) = named_service("lhr");
        let a = sleeper_named(&exe);
        agent.scan(&mut |_| {});
        assert_eq!(agent.targets().len(), 1);
        // The new pid is found before the old one's exit is seen.
        stop(a);
        let b = sleeper_named(&exe);
        agent.scan(&mut |_| {});
        drain_until(&mut agent, |a| a.targets().len() == 1);
        assert_eq!(agent.targets()[0].pid, b.id());
        assert_eq!(restarts(&agent, &name), 1);
        // The old one's exit is seen before the new pid appears.
        let b_pid = b.id();
        stop(b);
        drain_until(&mut agent, |a| a.targets().is_empty());
        assert_eq!(restarts(&agent, &name), 1, "gone, not yet back");
        let c = sleeper_named(&exe);
        agent.scan(&mut |_| {});
        assert_eq!(agent.targets().len(), 1);
        assert_ne!(agent.targets()[0].pid, b_pid);
        assert_eq!(restarts(&agent, &name), 2);
        stop(c);
    }

    #[test]
    fn a_sample_read_only_after_the_new_pid_was_found_does_not_hide_the_restart() {
        let (_dir, exe, name, mut agent) = named_service("lhl");
        let a = sleeper_named(&exe);
        let a_pid = a.id();
        agent.scan(&mut |_| {});
        // The old pid's first sample, taken while it runs, is read only once the new pid has
        // been found: the collector sampled just before the exit, the loop drained later.
        let first = agent
            .targets
            .get_mut(&a_pid)
            .unwrap()
            .events
            .recv()
            .unwrap();
        stop(a);
        let b = sleeper_named(&exe);
        agent.scan(&mut |_| {});
        // ... in a later millisecond than the find (the snapshots' clock counts whole ms).
        let found_ms = agent.targets[&b.id()].started_ms;
        while now_ms() <= found_ms {
            std::thread::yield_now();
        }
        let took = agent
            .targets
            .get_mut(&a_pid)
            .unwrap()
            .take(first, &mut |_| {});
        assert_eq!(took, Took::Sample);
        drain_until(&mut agent, |a| a.targets().len() == 1);
        assert_eq!(agent.targets()[0].pid, b.id());
        assert_eq!(restarts(&agent, &name), 1);
        assert!(
            agent.awaiting_restart.is_empty(),
            "the restart is counted, not awaited: {:?}",
            agent.awaiting_restart
        );
        stop(b);
    }

    #[test]
    fn an_ended_process_still_listed_as_a_zombie_is_not_watched_again() {
        let mut child = sleeper();
        let mut agent = Agent::new(options(vec![Selector::Pid(child.id())], 8));
        agent.scan(&mut |_| {});
        child.kill().unwrap(); // not reaped yet: a zombie, still in /proc
        drain_until(&mut agent, |a| a.targets().is_empty());
        let mut events = Vec::new();
        agent.scan(&mut |e| events.push(e));
        assert!(agent.targets().is_empty(), "{events:?}");
        assert!(events.is_empty(), "{events:?}");
        child.wait().unwrap();
    }

    fn which(name: &str) -> PathBuf {
        std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .expect("on PATH")
    }

    #[test]
    fn watches_what_is_chosen_up_to_the_cap_and_drops_what_exits() {
        let mut a = sleeper();
        let mut b = sleeper();
        let mut agent = Agent::new(options(
            vec![Selector::Pid(a.id()), Selector::Pid(b.id())],
            1,
        ));
        let mut events = Vec::new();
        let dropped = agent.scan(&mut |e| events.push(e));
        assert_eq!(dropped, 1, "two chosen, room for one");
        assert_eq!(agent.targets().len(), 1);
        let watched = agent.targets()[0].pid;
        assert_eq!(watched, a.id().min(b.id()));
        assert!(matches!(&events[0], Event::Watching(l) if l.service == "sleep"));
        for child in [&mut a, &mut b] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        // The collector reports the exit on its next sample; drain until it has.
        let mut gone = false;
        for _ in 0..100 {
            agent.drain(&mut |e| events.push(e));
            if agent.targets().is_empty() {
                gone = true;
                break;
            }
            std::thread::sleep(POLL);
        }
        assert!(gone, "{events:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Exited(l, _) if l.pid == watched))
        );
        assert!(
            agent.awaiting_restart.is_empty(),
            "an explicit pid is not followed"
        );
    }
}
