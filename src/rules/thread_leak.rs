//! `thread-leak`: non-daemon threads, executors or child processes still alive when the
//! program began to shut down (probe events), or non-daemon threads piling up while it runs.
//! Under `check`, also judged at exit: threads started during the run and still alive at its end.

use super::at_exit::{Exit, Held};
use super::probe_common::{events_of, secs};
use super::{ExitRule, Rule};
use crate::config::Config;
use crate::findings::{Finding, Seen, Severity};
use crate::history::History;
use crate::model::{ProbeEventKind, ProcState, Snapshot};
use std::collections::{BTreeMap, BTreeSet};

pub struct ThreadLeak;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "thread-leak";
const SUMMARY: &str =
    "threads or executors still alive when the program should be done, or piling up";

/// leakhound's own probe threads (named with this prefix) are never the program's leak.
pub const PROBE_THREAD_PREFIX: &str = "leakhound";

/// tokio's default names for its runtime threads as /proc shows them (cut to 15 bytes):
/// "tokio-rt-worker" since tokio 1.50, "tokio-runtime-w" before.
const TOKIO_THREAD_NAMES: [&str; 2] = ["tokio-rt-worker", "tokio-runtime-w"];
/// How many new threads the growth finding names.
const EXAMPLES: usize = 10;

/// Non-daemon runtime threads of a snapshot, by native id → name; a pool's own workers (a
/// `ThreadPoolExecutor` warming up, the loop's default executor) are the pool's, not leaks.
fn non_daemon(s: &Snapshot) -> BTreeMap<u32, &str> {
    s.probe
        .iter()
        .flat_map(|p| p.threads.iter())
        .filter(|t| !t.daemon && t.pool.is_none() && !t.name.starts_with(PROBE_THREAD_PREFIX))
        .map(|t| (t.native_id, t.name.as_str()))
        .collect()
}

impl Rule for ThreadLeak {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        SUMMARY
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        // Threads of one name are one thing left running (a pool's workers, one thread
        // started per job): one finding per subject, with a count, as at exit.
        let alive = events_of(history, ProbeEventKind::AliveAtShutdown)
            .into_iter()
            .map(|e| {
                // "thread NAME" → thread:NAME, as `check` names the threads it finds itself.
                let subject = match e.subject.split_once(' ') {
                    Some((kind, name)) => format!("{kind}:{name}"),
                    None => format!("thread:{}", e.subject),
                };
                let finding =
                    Finding::new(ID, Severity::Warning, subject.clone(), e.message.clone())
                        .with("what", e.subject.clone())
                        .with("stack", e.site.clone())
                        .with("at", e.site.last().cloned())
                        .seen_by(Seen::Probe);
                (subject, finding)
            });
        let mut out = super::group::collapse(alive, |subject, members| {
            let first = &members[0];
            let mut merged = first.clone();
            merged.subject = subject.to_string();
            merged.message = format!(
                "{} × {}; the first: {}",
                super::group::thousands(members.len()),
                first.evidence["what"].as_str().unwrap_or(subject),
                first.message
            );
            // Their subjects are all one; where each was is what tells them apart.
            let at: Vec<serde_json::Value> = members
                .iter()
                .take(super::group::EXAMPLES)
                .map(|f| f.evidence["at"].clone())
                .collect();
            merged.with("examples", at)
        });

        // Growth: threads that were not there at the start of the window and all still live.
        // The window starts at the first view in which the probe listed threads (it may load
        // after the first /proc sample, and a first answer can list none: then every thread,
        // the main one included, would read as new).
        let listed =
            |s: &&crate::model::Snapshot| s.probe.as_ref().is_some_and(|p| !p.threads.is_empty());
        let (Some(oldest), Some(latest)) = (history.iter().find(listed), history.latest()) else {
            return out;
        };
        let span = latest.taken_at_ms.saturating_sub(oldest.taken_at_ms);
        if latest.probe.is_none() || (span as u128) < config.growth_min_window.as_millis() {
            return out;
        }
        let before = non_daemon(oldest);
        let now = non_daemon(latest);
        let new: Vec<(&u32, &&str)> = now
            .iter()
            .filter(|(tid, _)| !before.contains_key(tid))
            .collect();
        if (new.len() as u64) < config.thread_leak_min_growth.max(1) || now.len() <= before.len() {
            return out;
        }
        let names: Vec<String> = new
            .iter()
            .take(EXAMPLES)
            .map(|(tid, name)| format!("{name} (tid {tid})"))
            .collect();
        out.push(
            Finding::new(
                ID,
                Severity::Warning,
                format!("pid:{}/non-daemon-threads", latest.pid),
                format!(
                    "{} new non-daemon threads in {:.0}s ({} -> {}), none of them ended: join them or use a pool",
                    new.len(),
                    span as f64 / 1000.0,
                    before.len(),
                    now.len()
                ),
            )
            .with("first", before.len())
            .with("last", now.len())
            .with("new", new.len())
            .with("window_s", secs(span))
            .with("examples", names),
        );
        out
    }
}

impl ExitRule for ThreadLeak {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        SUMMARY
    }

    /// Threads started during the run and still alive at its end (see [`Held`]), one finding
    /// per name.
    fn judge_exit(&self, exit: &Exit) -> Vec<Finding> {
        exit.held
            .map(|held| left_running(&held))
            .unwrap_or_default()
    }
}

/// A probe knows its runtime's names for threads; a /proc sample taken at the exit has none,
/// so names come from the samples before.
fn left_running(held: &Held) -> Vec<Finding> {
    let Held {
        snapshots,
        first,
        last,
        before_last,
        had_probe,
        ..
    } = *held;
    let tids = |s: &Snapshot| -> BTreeSet<u32> { s.threads.iter().map(|t| t.tid).collect() };
    let (base_tids, held_tids) = (tids(first), tids(before_last));
    // Only a probe that names threads (Python's) can vouch that an unnamed one is not the
    // program's; the Rust probe names none, so a tokio program's threads are judged by /proc.
    let probed = had_probe
        || snapshots
            .iter()
            .any(|s| s.probe.as_ref().is_some_and(|p| !p.threads.is_empty()));
    let runtime_name = |tid: u32| -> Option<String> {
        snapshots
            .iter()
            .rev()
            .flat_map(|s| s.threads.iter())
            .find(|t| t.tid == tid && t.runtime_name.is_some())
            .and_then(|t| t.runtime_name.clone())
    };
    // The probe's word on whether it is a daemon thread (Python's `daemon=True`).
    let daemon = |tid: u32| -> bool {
        snapshots
            .iter()
            .rev()
            .flat_map(|s| s.threads.iter())
            .find_map(|t| t.daemon.filter(|_| t.tid == tid))
            .unwrap_or(false)
    };
    // Threads of one name are one finding: a runtime's 16 workers are one thing left running,
    // and findings are keyed by subject, so one per thread would keep only the last anyway.
    // Daemon threads are grouped apart: they are expected to be running at exit.
    let mut by_name: BTreeMap<(String, bool), Vec<u32>> = BTreeMap::new();
    for t in &last.threads {
        let known = runtime_name(t.tid);
        // With a thread-naming probe loaded, a thread it never named is its own (or not the
        // runtime's): the probe's shutdown report speaks for the runtime's threads.
        if probed && known.is_none() {
            continue;
        }
        let name = known.unwrap_or_else(|| t.name.clone());
        if t.tid == last.pid
            || base_tids.contains(&t.tid)
            || !held_tids.contains(&t.tid)
            || name.starts_with(PROBE_THREAD_PREFIX)
            || t.state == ProcState::Zombie
        {
            continue;
        }
        by_name
            .entry((name, daemon(t.tid)))
            .or_default()
            .push(t.tid);
    }
    let mut out = Vec::new();
    for ((name, daemon), tids) in by_name {
        let tokio = TOKIO_THREAD_NAMES.iter().any(|n| name.starts_with(n));
        let list = tids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (fate, role) = match (tokio, tids.len()) {
            _ if daemon => (
                ": Python ends daemon threads at exit by design; join it if its work must \
                 finish",
                ", daemon",
            ),
            (false, _) => ("", ""),
            (true, 1) => (
                ": its runtime was never shut down",
                ", a tokio runtime's thread",
            ),
            (true, _) => (
                ": its runtime was never shut down",
                ", a tokio runtime's threads",
            ),
        };
        let (threads, ids, were) = match tids.len() {
            1 => (format!("thread '{name}'"), "tid", "was"),
            n => (format!("{n} threads '{name}'"), "tids", "were"),
        };
        let message = format!(
            "{threads} ({ids} {list}{role}) started during the run {were} still alive when the command exited{fate}"
        );
        // A daemon thread is info unless `check` is told otherwise (`--daemon-threads`).
        let severity = if daemon {
            Severity::Info
        } else {
            Severity::Warning
        };
        let mut finding = Finding::new(ID, severity, format!("thread:{name}"), message)
            .with("tid", tids[0])
            .with("tids", tids.clone())
            .with("count", tids.len())
            .with("thread_name", name)
            .seen_by(Seen::Procfs);
        if tokio {
            finding = finding.with("runtime", "tokio");
        }
        if daemon {
            finding = finding.with(DAEMON, true);
        }
        out.push(finding);
    }
    out
}

/// Evidence key set on findings about daemon threads left running at exit.
const DAEMON: &str = "daemon";

/// Gives findings about daemon threads left running at exit (info by default: an interpreter
/// ends them at exit by design) the severity the user asked for (`check --daemon-threads`,
/// `daemon-threads` in leakhound.toml).
pub fn set_daemon_severity(findings: &mut [Finding], severity: Severity) {
    for f in findings
        .iter_mut()
        .filter(|f| f.rule == ID && f.evidence.get(DAEMON) == Some(&serde_json::Value::Bool(true)))
    {
        f.severity = severity;
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{ProbeData, ProbeEvent, ProbeThread, Snapshot};

    fn threads(n: u32, daemon: bool) -> ProbeData {
        let mut t: Vec<ProbeThread> = (0..n)
            .map(|i| ProbeThread {
                native_id: 100 + i,
                name: format!("worker-{i}"),
                daemon,
                ..ProbeThread::default()
            })
            .collect();
        t.push(ProbeThread {
            native_id: 1,
            name: "leakhound-probe-server".into(),
            daemon: false,
            ..ProbeThread::default()
        });
        ProbeData {
            threads: t,
            ..ProbeData::default()
        }
    }

    /// A Python process's view: the main thread (tid 100) plus the given (tid, daemon)
    /// threads, each named by the probe.
    fn python_view(extra: &[(u32, bool)]) -> Snapshot {
        let thread = |tid: u32, daemon: bool| crate::model::Thread {
            tid,
            name: "python3".into(),
            runtime_name: Some(if tid == 100 {
                "MainThread".into()
            } else {
                format!("parked-{tid}")
            }),
            daemon: Some(daemon),
            ..Default::default()
        };
        let mut threads = vec![thread(100, false)];
        threads.extend(extra.iter().map(|&(tid, daemon)| thread(tid, daemon)));
        Snapshot {
            pid: 100,
            threads,
            probe: Some(ProbeData::default()),
            ..Snapshot::default()
        }
    }

    #[test]
    fn daemon_threads_left_at_exit_are_info_unless_asked() {
        let first = python_view(&[]);
        let mid = python_view(&[(101, true), (102, false)]);
        let last = python_view(&[(101, true), (102, false)]);
        let mut f = crate::rules::left_open(&[&first, &mid, &last], None, "/tmp/lh", true);
        f.sort_by(|a, b| a.subject.cmp(&b.subject));
        let severities: Vec<(&str, Severity)> =
            f.iter().map(|f| (f.subject.as_str(), f.severity)).collect();
        assert_eq!(
            severities,
            [
                ("thread:parked-101", Severity::Info),
                ("thread:parked-102", Severity::Warning)
            ]
        );
        assert!(f[0].message.contains("daemon"), "{}", f[0].message);
        assert!(!f[1].message.contains("daemon"), "{}", f[1].message);
        // The user asked for daemon threads to count: only the daemon one changes.
        set_daemon_severity(&mut f, Severity::Error);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[1].severity, Severity::Warning);
    }

    #[test]
    fn alive_at_shutdown_events_fire_with_the_stack() {
        let data = ProbeData {
            events: vec![ProbeEvent {
                kind: ProbeEventKind::AliveAtShutdown,
                subject: "thread poller".into(),
                message: "non-daemon thread 'poller' still running".into(),
                site: vec!["app.py:4 in poll".into()],
                count: 1,
                ..ProbeEvent::default()
            }],
            ..ProbeData::default()
        };
        let f = ThreadLeak.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "thread:poller");
        assert_eq!(f[0].evidence["at"], "app.py:4 in poll");
    }

    #[test]
    fn threads_of_one_name_alive_at_shutdown_are_one_finding_with_a_count() {
        let alive = |i: u64| ProbeEvent {
            seq: i,
            kind: ProbeEventKind::AliveAtShutdown,
            subject: "thread poller".into(),
            message: "non-daemon thread 'poller' still running".into(),
            site: vec![format!("app.py:{} in poll", 4 + i)],
            count: 1,
            ..ProbeEvent::default()
        };
        let data = ProbeData {
            events: (0..12).map(alive).collect(),
            ..ProbeData::default()
        };
        let f = ThreadLeak.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].subject, "thread:poller");
        assert_eq!(f[0].evidence["count"], 12);
        assert_eq!(f[0].evidence["examples"][1], "app.py:5 in poll");
        assert_eq!(
            f[0].message,
            "12 × thread poller; the first: non-daemon thread 'poller' still running"
        );
    }

    #[test]
    fn growing_non_daemon_threads_fire() {
        let views = (0..12u64)
            .map(|i| (i * 1_000, threads(2 + i as u32, false)))
            .collect();
        let f = ThreadLeak.check(&history(views), &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "pid:42/non-daemon-threads");
        assert_eq!(f[0].evidence["new"], 11);
    }

    #[test]
    fn the_window_starts_when_the_probe_first_answered() {
        let mut h = History::default();
        // Two /proc-only samples before the probe was up.
        for t in [0u64, 1_000] {
            h.push(Snapshot {
                taken_at_ms: t,
                pid: 42,
                ..Snapshot::default()
            });
        }
        for i in 0..12u64 {
            h.push(Snapshot {
                taken_at_ms: 2_000 + i * 1_000,
                pid: 42,
                probe: Some(threads(2 + i as u32, false)),
                ..Snapshot::default()
            });
        }
        let f = ThreadLeak.check(&h, &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["window_s"], 11.0);
    }

    #[test]
    fn a_first_answer_listing_no_threads_does_not_start_the_window() {
        // The probe's first answer listed no threads; later ones list the same 5 throughout.
        let mut views = vec![(0u64, ProbeData::default())];
        views.extend((1..14u64).map(|i| (i * 1_000, threads(5, false))));
        assert!(
            ThreadLeak
                .check(&history(views), &Config::default())
                .is_empty()
        );
    }

    #[test]
    fn daemon_threads_short_windows_and_steady_pools_do_not_fire() {
        let daemons = (0..12u64)
            .map(|i| (i * 1_000, threads(2 + i as u32, true)))
            .collect();
        assert!(
            ThreadLeak
                .check(&history(daemons), &Config::default())
                .is_empty()
        );
        let short = (0..5u64)
            .map(|i| (i * 1_000, threads(2 + 3 * i as u32, false)))
            .collect();
        assert!(
            ThreadLeak
                .check(&history(short), &Config::default())
                .is_empty()
        );
        let steady = (0..12u64).map(|i| (i * 1_000, threads(8, false))).collect();
        assert!(
            ThreadLeak
                .check(&history(steady), &Config::default())
                .is_empty()
        );
    }

    #[test]
    fn a_pools_own_workers_are_not_a_leak() {
        let warming = (0..12u64)
            .map(|i| {
                let mut data = threads(2 + i as u32, false);
                for t in data
                    .threads
                    .iter_mut()
                    .filter(|t| t.name != "leakhound-probe-server")
                {
                    t.pool = Some("thread_pool-1".into());
                }
                (i * 1_000, data)
            })
            .collect();
        assert!(
            ThreadLeak
                .check(&history(warming), &Config::default())
                .is_empty()
        );
    }
}
