//! The judging stage: snapshots in, findings out. One [`Judge`] follows one process: it keeps
//! the byte-bounded [`History`] the rules read, runs every rule on each snapshot and follows
//! the findings from one snapshot to the next with a [`Tracker`], so each caller learns which
//! findings are new, which fire now and which fired before and are quiet. It knows nothing of
//! who shows the result (`watch`, `snapshot`, `replay`, `demo`, the dashboard's feed).
//!
//! A loop that observes several processes keeps one judge per process ([`Judges`]): the same
//! subject in two processes is two findings, and one process's history never feeds another's
//! trends. A process tree's snapshot (`Snapshot::workers`, `Snapshot::ended`) is judged the
//! same way by [`Judges::observe_tree`] (see [`tree`]).

pub mod tree;

use crate::config::Config;
use crate::findings::{Finding, Tracker};
use crate::history::History;
use crate::model::Snapshot;
use crate::rules::{self, Rule};
use std::collections::BTreeMap;

/// What one snapshot was judged to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judged {
    /// Every finding firing now, sorted (`findings::sort_findings`).
    pub current: Vec<Finding>,
    /// Those of `current` that were not firing at the previous snapshot, in the same order.
    pub new: Vec<Finding>,
}

/// History → rules → tracker, for one process.
pub struct Judge {
    history: History,
    rules: Vec<Box<dyn Rule>>,
    config: Config,
    tracker: Tracker,
    /// A service's worker: its findings name its pid (see [`tree::tag`]).
    worker: Option<u32>,
}

impl Judge {
    /// Every rule of `rules::all()`, a history bounded by the default byte budget.
    pub fn new(config: Config) -> Self {
        Judge {
            history: History::default(),
            rules: rules::all(),
            config,
            tracker: Tracker::new(),
            worker: None,
        }
    }

    /// The judge of a service's worker `pid`: every finding names the worker.
    pub fn worker(config: Config, pid: u32) -> Self {
        Judge {
            worker: Some(pid),
            ..Judge::new(config)
        }
    }

    /// Every rule, a history bounded to `bytes` (an agent shares one budget among targets).
    pub fn with_history_budget(config: Config, bytes: usize) -> Self {
        Judge {
            history: History::bounded(bytes),
            ..Judge::new(config)
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the rules read: the snapshots pushed or observed so far, within the bounds.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Forgets the history and every finding (another process, or a seek in a recording).
    pub fn reset(&mut self) {
        self.history = History::default();
        self.tracker = Tracker::new();
    }

    /// Adds a snapshot to the history without judging it: context for the trend rules (a
    /// seek in a recording re-reads the snapshots before the target).
    pub fn push(&mut self, snapshot: Snapshot) {
        self.history.push(snapshot);
    }

    /// Adds a snapshot and judges the history it ends.
    pub fn observe(&mut self, snapshot: Snapshot) -> Judged {
        self.history.push(snapshot);
        self.judge()
    }

    /// Judges the history as it stands (after [`push`](Self::push) when the caller built the
    /// newest view itself).
    pub fn judge(&mut self) -> Judged {
        self.judge_with(Vec::new())
    }

    /// Judges the history, with `events` (findings about this snapshot alone, such as a
    /// worker's exit) among what fires now.
    pub fn judge_with(&mut self, events: Vec<Finding>) -> Judged {
        let mut current = rules::evaluate(&self.rules, &self.history, &self.config);
        if let Some(pid) = self.worker {
            current = current.into_iter().map(|f| tree::tag(f, pid)).collect();
        }
        if !events.is_empty() {
            current.extend(events);
            crate::findings::sort_findings(&mut current);
        }
        let new = self.tracker.update(&current);
        Judged { current, new }
    }

    /// The process ended: its history goes, and what fired now counts as quiet.
    pub fn retire(&mut self) {
        self.history = History::default();
        self.tracker.update(&[]);
    }

    /// Firing at the last judgement.
    pub fn current(&self) -> impl Iterator<Item = &Finding> {
        self.tracker.current()
    }

    /// Fired before and quiet now (the evidence they last had), at most `limit`, sorted.
    pub fn resolved(&self, limit: usize) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.tracker.resolved().take(limit).cloned().collect();
        crate::findings::sort_findings(&mut out);
        out
    }

    /// Everything that fired at some point, one per key, latest evidence, sorted.
    pub fn all_fired(&self) -> Vec<Finding> {
        self.tracker.all_fired()
    }

    /// How many times a finding fired (one that resolves and fires again counts twice).
    pub fn fired_count(&self) -> usize {
        self.tracker.fired_count()
    }
}

/// One [`Judge`] per process, created on a process's first snapshot.
pub struct Judges {
    config: Config,
    by_pid: BTreeMap<u32, Judge>,
    /// Workers that ended, oldest first: their judges keep what fired, up to a bound.
    retired: std::collections::VecDeque<u32>,
    /// Firings of the retired judges dropped past that bound.
    forgotten_fired: usize,
}

impl Judges {
    pub fn new(config: Config) -> Self {
        Judges {
            config,
            by_pid: BTreeMap::new(),
            retired: Default::default(),
            forgotten_fired: 0,
        }
    }

    /// The judge of `pid`, new if there was none.
    pub fn judge_mut(&mut self, pid: u32) -> &mut Judge {
        let config = &self.config;
        self.by_pid
            .entry(pid)
            .or_insert_with(|| Judge::new(config.clone()))
    }

    pub fn get(&self, pid: u32) -> Option<&Judge> {
        self.by_pid.get(&pid)
    }

    /// Judges `snapshot` in the history of `pid`.
    pub fn observe(&mut self, pid: u32, snapshot: Snapshot) -> Judged {
        self.judge_mut(pid).observe(snapshot)
    }

    /// Each process's judge, by pid.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Judge)> {
        self.by_pid.iter().map(|(pid, j)| (*pid, j))
    }

    /// How many times a finding fired, over every process.
    pub fn fired_count(&self) -> usize {
        self.by_pid.values().map(Judge::fired_count).sum::<usize>() + self.forgotten_fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Child, ProcState};

    /// A process with one zombie child that has been a zombie since `since_ms`.
    fn with_zombie(t_ms: u64, zombie: bool) -> Snapshot {
        Snapshot {
            pid: 1,
            taken_at_ms: t_ms,
            children: if zombie {
                vec![Child {
                    pid: 2,
                    ppid: 1,
                    state: ProcState::Zombie,
                    cmd: "z".into(),
                    ..Default::default()
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    fn short_zombie_config() -> Config {
        let mut c = Config::default();
        c.set("zombie-child.after=1s").expect("a valid threshold");
        c
    }

    #[test]
    fn new_current_and_resolved_follow_the_snapshots() {
        let mut judge = Judge::new(short_zombie_config());
        let first = judge.observe(with_zombie(0, true));
        assert!(first.current.is_empty(), "a zombie for 0 s is not yet one");
        let fired = judge.observe(with_zombie(5_000, true));
        assert_eq!(fired.current.len(), 1, "{fired:?}");
        assert_eq!(fired.new, fired.current, "first time: new");
        assert_eq!(fired.current[0].rule, "zombie-child");
        let again = judge.observe(with_zombie(6_000, true));
        assert_eq!(again.current.len(), 1);
        assert!(again.new.is_empty(), "still firing: not new");
        let quiet = judge.observe(with_zombie(7_000, false));
        assert!(quiet.current.is_empty());
        assert_eq!(judge.resolved(10).len(), 1);
        assert_eq!(judge.resolved(0).len(), 0);
        assert_eq!(judge.fired_count(), 1);
        assert_eq!(judge.all_fired().len(), 1);
        judge.reset();
        assert!(judge.history().is_empty());
        assert_eq!(judge.fired_count(), 0);
    }

    #[test]
    fn each_process_has_its_own_history() {
        let mut judges = Judges::new(short_zombie_config());
        judges.observe(1, with_zombie(0, true));
        // Pid 7's first snapshot: had it shared pid 1's history, the zombie would be 5 s old.
        let other = judges.observe(7, with_zombie(5_000, true));
        assert!(other.current.is_empty(), "{other:?}");
        let first = judges.observe(1, with_zombie(5_000, true));
        assert_eq!(first.new.len(), 1);
        assert_eq!(judges.fired_count(), 1);
        assert_eq!(judges.iter().count(), 2);
        assert_eq!(judges.get(7).map(|j| j.history().len()), Some(1));
    }

    #[test]
    fn history_shrinks_for_huge_snapshots() {
        let mut small = Judge::new(Config::default());
        let mut huge = Judge::new(Config::default());
        let big = Snapshot {
            threads: vec![Default::default(); 100_000],
            ..Default::default()
        };
        for t in 0..20u64 {
            small.observe(with_zombie(t, false));
            huge.push(Snapshot {
                taken_at_ms: t,
                ..big.clone()
            });
        }
        assert_eq!(small.history().len(), 20);
        // 64 MB budget, as measured: a few 100k-thread snapshots (~13 MB each), not twenty.
        let kept = huge.history();
        assert!(kept.len() < 20, "{}", kept.len());
        assert!(kept.bytes() <= crate::history::DEFAULT_BYTE_BUDGET);
    }
}
