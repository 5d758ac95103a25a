//! Tells new findings from ones already reported: `watch` prints each finding once when it
//! fires, the dashboard marks new ones, `check` keeps everything that ever fired.

use super::Finding;
use std::collections::{BTreeMap, VecDeque};

type Key = (String, String);

/// Resolved findings remembered at most: a probe whose stuck tasks get new ids every sample
/// would otherwise grow this without end (1.85 GB in 40 s). The oldest resolved go first; they
/// stay counted in [`Tracker::fired_count`].
pub const MAX_RESOLVED: usize = 10_000;

/// Follows findings from one evaluation to the next, keyed by [`Finding::key`].
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Firing now, with the latest evidence.
    current: BTreeMap<Key, Finding>,
    /// Fired before and no longer firing, with the evidence they last had (newest wins).
    resolved: BTreeMap<Key, Finding>,
    /// How many times a finding fired (a finding that resolves and fires again counts twice).
    fired_count: usize,
    /// Resolved keys, oldest first, with the resolution number of each (an entry whose number
    /// is no longer the key's in `resolved_at` is stale: the key fired again since).
    resolved_order: VecDeque<(u64, Key)>,
    resolved_at: BTreeMap<Key, u64>,
    resolutions: u64,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one evaluation's findings; returns those that were not firing before, in the
    /// order given. A finding that resolved and now fires again is new again.
    pub fn update(&mut self, findings: &[Finding]) -> Vec<Finding> {
        let mut next = BTreeMap::new();
        let mut fired = Vec::new();
        for finding in findings {
            let key = finding.key();
            if next.contains_key(&key) {
                continue;
            }
            if !self.current.contains_key(&key) {
                fired.push(finding.clone());
                self.resolved.remove(&key);
            }
            next.insert(key, finding.clone());
        }
        for (key, gone) in std::mem::take(&mut self.current) {
            if !next.contains_key(&key) {
                self.resolutions += 1;
                self.resolved_order
                    .push_back((self.resolutions, key.clone()));
                self.resolved_at.insert(key.clone(), self.resolutions);
                self.resolved.insert(key, gone);
            }
        }
        self.current = next;
        self.forget_oldest_resolved();
        self.fired_count += fired.len();
        fired
    }

    /// Keeps [`MAX_RESOLVED`] resolved findings at most, and the order list free of stale
    /// entries beyond twice that.
    fn forget_oldest_resolved(&mut self) {
        self.resolved_at
            .retain(|k, _| self.resolved.contains_key(k));
        let live = |at: &BTreeMap<Key, u64>, (n, k): &(u64, Key)| at.get(k) == Some(n);
        while self.resolved.len() > MAX_RESOLVED {
            let Some(entry) = self.resolved_order.pop_front() else {
                break;
            };
            if live(&self.resolved_at, &entry) {
                self.resolved.remove(&entry.1);
                self.resolved_at.remove(&entry.1);
            }
        }
        if self.resolved_order.len() > 2 * MAX_RESOLVED {
            let at = &self.resolved_at;
            self.resolved_order.retain(|e| live(at, e));
        }
    }

    /// Firing now.
    pub fn current(&self) -> impl Iterator<Item = &Finding> {
        self.current.values()
    }

    /// Fired before, not firing now.
    pub fn resolved(&self) -> impl Iterator<Item = &Finding> {
        self.resolved.values()
    }

    /// Everything that fired at some point, one per key, latest evidence, sorted.
    pub fn all_fired(&self) -> Vec<Finding> {
        let mut all: Vec<Finding> = self
            .resolved
            .values()
            .chain(self.current.values())
            .cloned()
            .collect();
        super::sort_findings(&mut all);
        all
    }

    /// Number of firings so far.
    pub fn fired_count(&self) -> usize {
        self.fired_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Severity;

    fn f(rule: &str, subject: &str, n: u64) -> Finding {
        Finding::new(rule, Severity::Warning, subject, "m").with("n", n)
    }

    #[test]
    fn reports_each_finding_once_then_tracks_resolution() {
        let mut t = Tracker::new();
        assert_eq!(t.update(&[f("a", "pid:1", 1)]).len(), 1);
        // Same key, new evidence: not new, but the evidence is updated.
        assert!(
            t.update(&[f("a", "pid:1", 2), f("a", "pid:1", 3)])
                .is_empty()
        );
        assert_eq!(t.current().next().unwrap().evidence["n"], 2);
        let fired = t.update(&[f("a", "pid:1", 4), f("b", "pid:1", 1)]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].rule, "b");
        // `a` resolves: kept as resolved, with the evidence it last had.
        assert!(t.update(&[f("b", "pid:1", 1)]).is_empty());
        assert_eq!(t.resolved().count(), 1);
        assert_eq!(t.resolved().next().unwrap().evidence["n"], 4);
        assert_eq!(t.all_fired().len(), 2);
        // It fires again: new again, no longer resolved.
        assert_eq!(t.update(&[f("a", "pid:1", 5)]).len(), 1);
        assert_eq!(t.resolved().count(), 1, "b resolved now");
        assert_eq!(t.fired_count(), 3);
        assert_eq!(t.all_fired().len(), 2);
    }

    #[test]
    fn resolved_findings_are_bounded_oldest_first() {
        let mut t = Tracker::new();
        // Every evaluation, 1,000 findings with new subjects; the previous ones resolve.
        for round in 0..15u64 {
            let now: Vec<Finding> = (0..1_000)
                .map(|i| f("stuck", &format!("task:{round}-{i}"), round))
                .collect();
            t.update(&now);
        }
        assert_eq!(t.resolved().count(), MAX_RESOLVED);
        assert_eq!(t.fired_count(), 15_000);
        // The oldest round went first; the latest resolved round is kept.
        assert!(t.resolved().all(|f| !f.subject.starts_with("task:0-")));
        assert!(t.resolved().any(|f| f.subject == "task:13-999"));
        assert!(t.resolved_order.len() <= 2 * MAX_RESOLVED);
    }
}
