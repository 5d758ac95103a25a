//! `thread-leak`: non-daemon threads, executors or child processes still alive when the
//! program began to shut down (probe events), or non-daemon threads piling up while it runs.

use super::Rule;
use super::probe_common::{events_of, secs};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::{ProbeEventKind, Snapshot};
use std::collections::BTreeMap;

pub struct ThreadLeak;

/// leakhound's own probe threads are never the program's leak.
const PROBE_THREAD_PREFIX: &str = "leakhound";
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
        "thread-leak"
    }

    fn summary(&self) -> &'static str {
        "threads or executors still alive when the program should be done, or piling up"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let mut out: Vec<Finding> = events_of(history, ProbeEventKind::AliveAtShutdown)
            .into_iter()
            .map(|e| {
                // "thread NAME" → thread:NAME, as `check` names the threads it finds itself.
                let subject = match e.subject.split_once(' ') {
                    Some((kind, name)) => format!("{kind}:{name}"),
                    None => format!("thread:{}", e.subject),
                };
                Finding::new(self.id(), Severity::Warning, subject, e.message.clone())
                    .with("what", e.subject.clone())
                    .with("stack", e.site.clone())
                    .with("at", e.site.last().cloned())
                    .with("source", "probe")
            })
            .collect();

        // Growth: threads that were not there at the start of the window and all still live.
        // The window starts at the first view the probe answered (it may load after the
        // first /proc sample).
        let (Some(oldest), Some(latest)) =
            (history.iter().find(|s| s.probe.is_some()), history.latest())
        else {
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
                self.id(),
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
