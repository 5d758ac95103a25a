//! `check`'s de-duplication policy: which of the findings about one process, from samples,
//! probes' final reports, the exit-time rules and the pytest plugin, are kept.

use crate::findings::{Finding, Seen};
use crate::rules::{never_awaited, unclosed_resource};
use std::collections::{BTreeMap, BTreeSet};

/// Keeps one finding per (pid, rule, subject): the latest version of each. Findings about a
/// descendant (not the command's own process) carry its `pid` in the evidence.
#[derive(Debug, Default)]
pub struct Collected {
    root: Option<u32>,
    map: BTreeMap<(u32, String, String, String), Finding>,
}

impl Collected {
    /// Drops this process's own findings that the pytest plugin reports per test: the same
    /// (rule, subject), and every warning-based one (never-awaited, unclosed-resource from the
    /// probe, tasks collected while pending), since the plugin saw the same signals and knows
    /// which test made them.
    pub fn prefer_tests(&mut self, pid: u32, per_test: &[Finding]) {
        let same: BTreeSet<(&str, &str)> = per_test
            .iter()
            .map(|f| (f.rule.as_str(), f.subject.as_str()))
            .collect();
        self.map.retain(|(p, rule, subject, test), f| {
            if *p != pid || !test.is_empty() {
                return true;
            }
            let from_warning = ((rule == never_awaited::ID || rule == unclosed_resource::ID)
                && f.source != Some(Seen::Procfs))
                || f.destroyed_pending == Some(true);
            !from_warning && !same.contains(&(rule.as_str(), subject.as_str()))
        });
    }

    /// Adds only findings whose (rule, subject) this process has not had yet.
    pub fn add_new(&mut self, pid: u32, findings: Vec<Finding>) {
        let fresh: Vec<Finding> = findings
            .into_iter()
            .filter(|f| {
                !self
                    .map
                    .keys()
                    .any(|(p, r, s, _)| *p == pid && *r == f.rule && *s == f.subject)
            })
            .collect();
        self.add(pid, fresh);
    }

    pub fn add(&mut self, pid: u32, findings: impl IntoIterator<Item = Finding>) {
        let root = *self.root.get_or_insert(pid);
        for mut f in findings {
            if pid != root && f.pid.is_none() {
                f = f.about_pid(pid);
            }
            // The pytest plugin's findings are per test: the same subject in two tests is two.
            let test = f.test.clone().unwrap_or_default();
            self.map
                .insert((pid, f.rule.clone(), f.subject.clone(), test), f);
        }
    }

    /// Every finding kept, one per (pid, rule, subject, test).
    pub fn into_findings(self) -> Vec<Finding> {
        self.map.into_values().collect()
    }
}
