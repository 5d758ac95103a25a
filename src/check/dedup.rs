//! `check`'s de-duplication policy: which of the findings about one process, from samples,
//! probes' final reports, the exit-time rules and the pytest plugin, are kept.

use crate::findings::{Finding, Seen};
use crate::rules::{never_awaited, unclosed_resource};
use std::collections::{BTreeMap, BTreeSet};

/// Keeps one finding per (pid, rule, subject): the latest version of each, unless an earlier one
/// was more severe. Findings about a
/// descendant (not the command's own process) carry its `pid` in the evidence.
#[derive(Debug, Default)]
pub struct Collected {
    root: Option<u32>,
    map: BTreeMap<(u32, String, String, String), Finding>,
}

impl Collected {
    /// Drops this process's own findings that the pytest plugin reports per test: the same
    /// (rule, subject) (or, for descriptors grouped as one, every one of them), and every warning-based one (never-awaited, unclosed-resource from the
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
            // Descriptors left open alike are one finding (`fds:PATTERN`, their numbers in
            // `fds`): the plugin's `fd:N` per test say it better when they name every one.
            let all_per_test = f
                .evidence
                .get("fds")
                .and_then(|v| v.as_array())
                .is_some_and(|fds| {
                    !fds.is_empty()
                        && fds
                            .iter()
                            .all(|n| same.contains(&(rule.as_str(), format!("fd:{n}").as_str())))
                });
            !from_warning && !all_per_test && !same.contains(&(rule.as_str(), subject.as_str()))
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
            let key = (pid, f.rule.clone(), f.subject.clone(), test);
            // The worst seen while it ran is the verdict's: a process at 95% of its descriptor
            // limit whose teardown then closed them is judged at 95%, not at what was left.
            if self
                .map
                .get(&key)
                .is_some_and(|old| old.severity > f.severity)
            {
                continue;
            }
            self.map.insert(key, f);
        }
    }

    /// Every finding kept, one per (pid, rule, subject, test). An instance that fired alone
    /// while the command ran and later joined a group (the first zombie, then a hundred) is
    /// the group's: only the group is kept.
    pub fn into_findings(self) -> Vec<Finding> {
        let grouped: BTreeSet<(u32, String, String)> = self
            .map
            .iter()
            .flat_map(|((pid, rule, _, _), f)| {
                members(f)
                    .into_iter()
                    .map(move |subject| (*pid, rule.clone(), subject))
            })
            .collect();
        self.map
            .into_iter()
            // The pytest plugin's per-test findings are never absorbed: they name the test.
            .filter(|((pid, rule, subject, test), _)| {
                !test.is_empty() || !grouped.contains(&(*pid, rule.clone(), subject.clone()))
            })
            .map(|(_, f)| f)
            .collect()
    }
}

/// The subjects a grouped finding (one with `count` and `examples`, see `rules::group`) stands
/// for: its examples, and every `pid:N` / `fd:N` it lists in `pids` / `fds`.
fn members(f: &Finding) -> Vec<String> {
    let (Some(_), Some(examples)) = (f.evidence.get("count"), f.evidence.get("examples")) else {
        return Vec::new();
    };
    let listed = |key: &str, kind: &str| -> Vec<String> {
        f.evidence
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .map(|n| format!("{kind}:{n}"))
            .collect()
    };
    examples
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .chain(listed("pids", "pid"))
        .chain(listed("fds", "fd"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Severity;

    fn unclosed(subject: &str, source: Seen) -> Finding {
        Finding::new(unclosed_resource::ID, Severity::Warning, subject, "m").seen_by(source)
    }

    #[test]
    fn the_plugins_per_test_findings_replace_the_probes_but_not_the_proc_view() {
        let mut c = Collected::default();
        c.add(
            10,
            [
                unclosed("resource:socket at a.py:1", Seen::Probe),
                unclosed("fd:7", Seen::Procfs),
                Finding::new("stuck-task", Severity::Warning, "task:t", "m").destroyed_pending(),
                Finding::new("stuck-task", Severity::Warning, "task:u", "m"),
            ],
        );
        let mut per_test = Finding::new(never_awaited::ID, Severity::Warning, "c:x", "m");
        per_test.test = Some("test_a.py::test_one".into());
        let mut again = per_test.clone();
        again.test = Some("test_a.py::test_two".into());
        c.prefer_tests(10, std::slice::from_ref(&per_test));
        c.add(10, [per_test, again]);
        let kept: Vec<(String, Option<String>)> = c
            .into_findings()
            .into_iter()
            .map(|f| (f.subject, f.test))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("c:x".to_string(), Some("test_a.py::test_one".to_string())),
                ("c:x".to_string(), Some("test_a.py::test_two".to_string())),
                ("task:u".to_string(), None),
                ("fd:7".to_string(), None),
            ]
        );
    }

    #[test]
    fn a_descendants_findings_name_it_and_known_ones_are_not_added_again() {
        let mut c = Collected::default();
        c.add(10, [unclosed("fd:3", Seen::Procfs)]);
        c.add(11, [unclosed("fd:3", Seen::Procfs)]);
        c.add_new(
            11,
            vec![unclosed("fd:3", Seen::Probe), unclosed("fd:4", Seen::Probe)],
        );
        let pids: Vec<(Option<u32>, String, Option<Seen>)> = c
            .into_findings()
            .into_iter()
            .map(|f| (f.pid, f.subject, f.source))
            .collect();
        assert_eq!(
            pids,
            vec![
                (None, "fd:3".to_string(), Some(Seen::Procfs)),
                (Some(11), "fd:3".to_string(), Some(Seen::Procfs)),
                (Some(11), "fd:4".to_string(), Some(Seen::Probe)),
            ]
        );
    }

    #[test]
    fn a_later_milder_version_does_not_replace_the_worst_seen() {
        let mut c = Collected::default();
        let fd =
            |severity, message: &str| Finding::new("fd-exhaustion", severity, "pid:10", message);
        c.add(10, [fd(Severity::Warning, "grow: 60 open now")]);
        c.add(10, [fd(Severity::Error, "120 of 128 descriptors open")]);
        // After the teardown closed them: the same finding, milder. The peak stays.
        c.add(10, [fd(Severity::Warning, "grow: 5 open now")]);
        let kept = c.into_findings();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].message, "120 of 128 descriptors open");
        // As severe: the latest version, with the newest count, is kept.
        let mut c = Collected::default();
        c.add(10, [fd(Severity::Warning, "a"), fd(Severity::Warning, "b")]);
        assert_eq!(c.into_findings()[0].message, "b");
    }

    #[test]
    fn grouped_descriptors_the_plugin_names_per_test_give_way_to_it() {
        let mut c = Collected::default();
        let group =
            |subject: &str, fds: &[i32]| unclosed(subject, Seen::Procfs).with("fds", fds.to_vec());
        c.add(
            10,
            [
                group("fds:pipe", &[5, 6]),
                group("fds:file /tmp/x", &[8, 9]),
            ],
        );
        let per_test = |fd: i32| {
            let mut f = unclosed(&format!("fd:{fd}"), Seen::Probe);
            f.test = Some("test_a.py::test_one".into());
            f
        };
        // The plugin named both pipes, one of the two files: the pipes' group gives way.
        let tests = [per_test(5), per_test(6), per_test(8)];
        c.prefer_tests(10, &tests);
        let subjects: Vec<String> = c.into_findings().into_iter().map(|f| f.subject).collect();
        assert_eq!(subjects, ["fds:file /tmp/x"]);
    }

    #[test]
    fn an_instance_that_fired_alone_before_its_group_formed_is_the_groups() {
        let mut c = Collected::default();
        let zombie = |subject: &str| Finding::new("zombie-child", Severity::Warning, subject, "m");
        // While it ran: one zombie past the threshold, then three of the same parent.
        c.add(10, [zombie("pid:100")]);
        c.add(
            10,
            [zombie("zombies:10:[sh]")
                .with("count", 3)
                .with("examples", vec!["pid:100", "pid:101", "pid:102"])
                .with("pids", vec![100, 101, 102])],
        );
        // Another parent's lone zombie, and the same subject in another process, stay.
        c.add(10, [zombie("pid:200")]);
        c.add(11, [zombie("pid:100")]);
        let mut per_test = zombie("pid:101");
        per_test.test = Some("test_a.py::test_one".into());
        c.add(10, [per_test]);
        let kept: Vec<(Option<u32>, String)> = c
            .into_findings()
            .into_iter()
            .map(|f| (f.pid, f.subject))
            .collect();
        assert_eq!(
            kept,
            [
                (None, "pid:101".to_string()),
                (None, "pid:200".to_string()),
                (None, "zombies:10:[sh]".to_string()),
                (Some(11), "pid:100".to_string()),
            ]
        );
    }
}
