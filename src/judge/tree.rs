//! Judging a service: a process tree's snapshot (the root, `workers`, `ended`), one history
//! per process. A worker's findings name it (subject `pid:4242 task:Task-7`, evidence `pid`);
//! a worker that ended is one `worker-exit` finding, fired once, naming how it ended and its
//! replacement. The root's own findings are as for a single process.

use super::{Judge, Judged, Judges};
use crate::findings::{Finding, Severity, sort_findings};
use crate::model::{Ended, Snapshot};

/// The id of the finding about a worker that ended.
pub const WORKER_EXIT: &str = "worker-exit";

/// How many ended workers' judges are kept (with what they fired): a service that recycles
/// its workers (`max_requests`) must not grow leakhound without bound.
pub const RETIRED_KEPT: usize = 256;

/// Makes a worker's finding name the worker: its subject starts `pid:N`, and its `pid` is the
/// worker's unless the rule named another process (a worker's own zombie child).
pub fn tag(mut finding: Finding, pid: u32) -> Finding {
    let own = format!("pid:{pid}");
    if finding.subject != own && !finding.subject.starts_with(&format!("{own} ")) {
        finding.subject = format!("{own} {}", finding.subject);
    }
    if finding.pid.is_none() {
        finding.pid = Some(pid);
    }
    finding
}

/// The finding about a worker that ended: info when it exited with 0 or was asked to stop,
/// warning when it failed or a signal killed it (SIGKILL — the OOM killer's too —, SIGSEGV, …).
pub fn worker_exit(e: &Ended) -> Finding {
    let severity = if crate::source::tree::abnormal(e) {
        Severity::Warning
    } else {
        Severity::Info
    };
    let how = match (e.exit_code, e.signal) {
        (_, Some(sig)) => {
            let name = crate::source::tree::signal_name(sig);
            let core = if e.core_dumped { " (core dumped)" } else { "" };
            let hint = if sig == libc::SIGKILL {
                " (by a person, a supervisor or the OOM killer: see `dmesg`)"
            } else {
                ""
            };
            format!("was killed by {name}{core}{hint}")
        }
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended (its exit status was not visible to leakhound)".to_string(),
    };
    let replaced = match e.replaced_by {
        Some(pid) => format!("; replaced by pid {pid}"),
        None => "; no replacement seen".to_string(),
    };
    let mut f = Finding::new(
        WORKER_EXIT,
        severity,
        format!("pid:{}", e.pid),
        format!(
            "worker pid {} {how} after {}{replaced}",
            e.pid,
            crate::report::text::duration_ms(e.age_ms)
        ),
    )
    .about_pid(e.pid)
    .with("ppid", e.ppid)
    .with("cmd", e.cmd.clone())
    .with("age_ms", e.age_ms)
    .with("had_probe", e.had_probe)
    .with("ended_at_ms", e.ended_at_ms);
    if let Some(code) = e.exit_code {
        f = f.with("exit_code", code);
    }
    if let Some(sig) = e.signal {
        f = f
            .with("signal", crate::source::tree::signal_name(sig))
            .with("signal_number", sig)
            .with("core_dumped", e.core_dumped);
    }
    if let Some(pid) = e.replaced_by {
        f = f.with("replaced_by", pid);
    }
    f
}

impl Judges {
    /// Judges a process tree's snapshot: the root in its own history, each worker in its own
    /// (its findings tagged with its pid), each ended worker as a `worker-exit` finding (and its
    /// judge retired). A snapshot without workers is judged exactly as [`Judges::observe`].
    pub fn observe_tree(&mut self, mut snapshot: Snapshot) -> Judged {
        let workers = std::mem::take(&mut snapshot.workers);
        let events: Vec<Finding> = snapshot.ended.iter().map(worker_exit).collect();
        for e in &snapshot.ended {
            self.retire(e.pid);
        }
        let root = snapshot.pid;
        let judge = self.judge_mut(root);
        judge.push(snapshot);
        let mut out = judge.judge_with(events);
        for worker in workers {
            let pid = worker.pid;
            let config = &self.config;
            let judged = self
                .by_pid
                .entry(pid)
                .or_insert_with(|| Judge::worker(config.clone(), pid))
                .observe(worker);
            out.current.extend(judged.current);
            out.new.extend(judged.new);
        }
        sort_findings(&mut out.current);
        sort_findings(&mut out.new);
        out
    }

    /// Firing now in any process, sorted.
    pub fn current(&self) -> Vec<Finding> {
        let mut all: Vec<Finding> = self
            .by_pid
            .values()
            .flat_map(|j| j.current().cloned())
            .collect();
        sort_findings(&mut all);
        all
    }

    /// Fired before and quiet now, in any process, at most `limit`, sorted.
    pub fn resolved(&self, limit: usize) -> Vec<Finding> {
        let mut all: Vec<Finding> = self
            .by_pid
            .values()
            .flat_map(|j| j.resolved(limit))
            .collect();
        sort_findings(&mut all);
        all.truncate(limit);
        all
    }

    /// Everything that fired in any process, one per process and key, latest evidence, sorted.
    pub fn all_fired(&self) -> Vec<Finding> {
        let mut all: Vec<Finding> = self.by_pid.values().flat_map(Judge::all_fired).collect();
        sort_findings(&mut all);
        all
    }

    /// Forgets every process (another target).
    pub fn reset(&mut self) {
        self.by_pid.clear();
        self.retired.clear();
        self.forgotten_fired = 0;
    }

    /// A worker ended: its judge keeps what fired, and the oldest retired judge past
    /// [`RETIRED_KEPT`] goes (unless its pid came back as a new process).
    fn retire(&mut self, pid: u32) {
        let Some(judge) = self.by_pid.get_mut(&pid) else {
            return;
        };
        judge.retire();
        self.retired.push_back(pid);
        while self.retired.len() > RETIRED_KEPT {
            let Some(old) = self.retired.pop_front() else {
                break;
            };
            let reused = self.retired.contains(&old)
                || self
                    .by_pid
                    .get(&old)
                    .is_some_and(|j| !j.history().is_empty());
            if !reused && let Some(gone) = self.by_pid.remove(&old) {
                self.forgotten_fired += gone.fired_count();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{Child, ProcState};

    /// A worker snapshot with one zombie child, old enough to be a `zombie-child` finding.
    fn worker_with_zombie(pid: u32, t_ms: u64) -> Snapshot {
        Snapshot {
            pid,
            taken_at_ms: t_ms,
            children: vec![Child {
                pid: pid + 1,
                ppid: pid,
                state: ProcState::Zombie,
                cmd: "z".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn config() -> Config {
        let mut c = Config::default();
        c.set("zombie-child.after=1s").expect("a valid threshold");
        c
    }

    fn tree(t_ms: u64, workers: Vec<Snapshot>, ended: Vec<Ended>) -> Snapshot {
        Snapshot {
            pid: 10,
            taken_at_ms: t_ms,
            workers,
            ended,
            ..Default::default()
        }
    }

    #[test]
    fn worker_findings_name_the_worker_and_each_worker_has_its_own_history() {
        let mut judges = Judges::new(config());
        judges.observe_tree(tree(0, vec![worker_with_zombie(20, 0)], vec![]));
        // Worker 30 first seen now: had it shared worker 20's history its zombie would be old.
        let judged = judges.observe_tree(tree(
            5_000,
            vec![worker_with_zombie(20, 5_000), worker_with_zombie(30, 5_000)],
            vec![],
        ));
        assert_eq!(judged.current.len(), 1, "{:?}", judged.current);
        let f = &judged.current[0];
        assert_eq!(f.rule, "zombie-child");
        assert!(f.subject.starts_with("pid:20 "), "{}", f.subject);
        assert_eq!(judged.new, judged.current);
        // The root's history holds the root alone, not its workers.
        let root = judges.get(10).unwrap().history().latest().unwrap();
        assert!(root.workers.is_empty());
        assert_eq!(judges.get(30).unwrap().history().len(), 1);
    }

    #[test]
    fn an_ended_worker_fires_once_and_its_findings_go_quiet() {
        let mut judges = Judges::new(config());
        judges.observe_tree(tree(0, vec![worker_with_zombie(20, 0)], vec![]));
        let fired = judges.observe_tree(tree(5_000, vec![worker_with_zombie(20, 5_000)], vec![]));
        assert_eq!(fired.current.len(), 1);
        let killed = Ended {
            pid: 20,
            ppid: 10,
            cmd: "gunicorn: worker".into(),
            had_probe: true,
            age_ms: 65_000,
            ended_at_ms: 6_000,
            signal: Some(libc::SIGKILL),
            replaced_by: Some(21),
            ..Default::default()
        };
        let judged = judges.observe_tree(tree(6_000, vec![], vec![killed]));
        assert_eq!(judged.current.len(), 1, "{:?}", judged.current);
        let f = &judged.current[0];
        assert_eq!(
            (f.rule.as_str(), f.severity),
            (WORKER_EXIT, Severity::Warning)
        );
        assert_eq!((f.subject.as_str(), f.pid), ("pid:20", Some(20)));
        assert!(f.message.contains("SIGKILL"), "{}", f.message);
        assert!(f.message.contains("replaced by pid 21"), "{}", f.message);
        assert_eq!(f.evidence["replaced_by"], 21);
        assert_eq!(judges.get(20).unwrap().current().count(), 0, "retired");
        assert_eq!(judges.resolved(10).len(), 1, "the worker's zombie finding");
        let next = judges.observe_tree(tree(7_000, vec![], vec![]));
        assert!(next.current.is_empty(), "an event fires once");
        assert_eq!(judges.all_fired().len(), 2);
        assert_eq!(judges.fired_count(), 2);
    }

    #[test]
    fn ended_workers_judges_are_bounded_and_their_firings_still_counted() {
        let mut judges = Judges::new(config());
        let n = RETIRED_KEPT as u32 + 10;
        for pid in 100..100 + n {
            judges.observe_tree(tree(0, vec![worker_with_zombie(pid, 0)], vec![]));
            judges.observe_tree(tree(5_000, vec![worker_with_zombie(pid, 5_000)], vec![]));
            let ended = Ended {
                pid,
                ..Default::default()
            };
            judges.observe_tree(tree(6_000, vec![], vec![ended]));
        }
        // The root and the kept ended workers.
        assert_eq!(judges.iter().count(), 1 + RETIRED_KEPT);
        assert!(judges.get(100).is_none(), "the oldest went");
        assert!(judges.get(99 + n).is_some());
        // Each worker fired a zombie-child and a worker-exit.
        assert_eq!(judges.fired_count(), 2 * n as usize);
    }

    #[test]
    fn how_a_worker_ended_sets_the_severity() {
        let ended = |exit_code, signal| Ended {
            pid: 5,
            exit_code,
            signal,
            ..Default::default()
        };
        let severity = |e: &Ended| worker_exit(e).severity;
        assert_eq!(severity(&ended(Some(0), None)), Severity::Info);
        assert_eq!(severity(&ended(Some(3), None)), Severity::Warning);
        assert_eq!(severity(&ended(None, Some(libc::SIGTERM))), Severity::Info);
        assert_eq!(
            severity(&ended(None, Some(libc::SIGSEGV))),
            Severity::Warning
        );
        assert_eq!(severity(&ended(None, None)), Severity::Info);
        assert!(
            worker_exit(&ended(None, None))
                .message
                .contains("no replacement")
        );
    }

    #[test]
    fn tagging_keeps_a_subject_that_already_names_the_worker() {
        let f = Finding::new("r", Severity::Info, "pid:7", "m");
        assert_eq!(tag(f, 7).subject, "pid:7");
        let f = Finding::new("r", Severity::Info, "task:Task-1", "m").about_pid(99);
        let t = tag(f, 7);
        assert_eq!((t.subject.as_str(), t.pid), ("pid:7 task:Task-1", Some(99)));
    }
}
