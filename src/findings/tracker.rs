//! Tells new findings from ones already reported: `watch` prints each finding once when it
//! fires, the dashboard marks new ones, `check` keeps everything that ever fired.

use super::Finding;
use std::collections::BTreeMap;

type Key = (String, String);

/// Follows findings from one evaluation to the next, keyed by [`Finding::key`].
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Firing now, with the latest evidence.
    current: BTreeMap<Key, Finding>,
    /// Fired before and no longer firing, with the evidence they last had (newest wins).
    resolved: BTreeMap<Key, Finding>,
    /// How many times a finding fired (a finding that resolves and fires again counts twice).
    fired_count: usize,
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
                self.resolved.insert(key, gone);
            }
        }
        self.current = next;
        self.fired_count += fired.len();
        fired
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
}
