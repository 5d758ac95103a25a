//! `zombie-child`: a descendant exited and its parent has not reaped it (no `wait()`). Judged
//! while it runs (for long enough) and, under `check`, at exit: every child left unreaped.

use super::at_exit::Exit;
use super::{ExitRule, Rule};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::ProcState;

pub struct ZombieChild;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "zombie-child";
const SUMMARY: &str = "a child process exited and its parent has not reaped it";

impl Rule for ZombieChild {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        SUMMARY
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some(latest) = history.latest() else {
            return Vec::new();
        };
        let oldest_ms = history
            .oldest()
            .map_or(latest.taken_at_ms, |s| s.taken_at_ms);
        let mut out = Vec::new();
        for zombie in latest.zombies() {
            // When it was first seen a zombie in the run of samples ending now.
            let first_seen = history
                .iter()
                .rev()
                .take_while(|s| {
                    s.children
                        .iter()
                        .any(|c| c.pid == zombie.pid && c.state == ProcState::Zombie)
                })
                .last()
                .map_or(latest.taken_at_ms, |s| s.taken_at_ms);
            let mut zombie_ms = latest.taken_at_ms.saturating_sub(first_seen);
            // Already a zombie when the history starts: it may be older than what we saw,
            // and cannot be older than the process itself.
            if first_seen == oldest_ms {
                zombie_ms = zombie_ms.max(zombie.age_ms);
            }
            if (zombie_ms as u128) < config.zombie_after.as_millis() {
                continue;
            }
            out.push(
                Finding::new(
                    ID,
                    Severity::Warning,
                    format!("pid:{}", zombie.pid),
                    format!(
                        "child {} ({}) exited and pid {} has not reaped it for {:.0}s: the parent never waits for it",
                        zombie.pid,
                        zombie.cmd,
                        zombie.ppid,
                        zombie_ms as f64 / 1000.0
                    ),
                )
                .about_pid(zombie.pid)
                .with("ppid", zombie.ppid)
                .with("cmd", zombie.cmd.clone())
                .with("zombie_s", (zombie_ms as f64 / 100.0).round() / 10.0),
            );
        }
        out
    }
}

impl ExitRule for ZombieChild {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        SUMMARY
    }

    /// Every zombie present right after the command exited: a child it left unreaped.
    fn judge_exit(&self, exit: &Exit) -> Vec<Finding> {
        let Some(left) = exit.leftovers else {
            return Vec::new();
        };
        left.zombies
            .iter()
            .map(|p| {
                Finding::new(
                    ID,
                    Severity::Warning,
                    format!("pid:{}", p.pid),
                    format!(
                        "`{}` (pid {}) exited but was never reaped (wait()ed for) by its parent",
                        p.cmd, p.pid
                    ),
                )
                .about_pid(p.pid)
                .with("cmd", p.cmd.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Child, Snapshot};

    fn child(pid: u32, state: ProcState, age_ms: u64) -> Child {
        Child {
            pid,
            ppid: 1,
            state,
            cmd: "[worker]".into(),
            age_ms,
            depth: 1,
            has_probe: false,
        }
    }

    fn history(per_sample: &[Vec<Child>]) -> History {
        let mut h = History::default();
        for (i, children) in per_sample.iter().enumerate() {
            h.push(Snapshot {
                taken_at_ms: 100_000 + i as u64 * 1000,
                pid: 1,
                children: children.clone(),
                ..Default::default()
            });
        }
        h
    }

    #[test]
    fn fires_for_a_zombie_seen_long_enough() {
        let mut samples = vec![vec![child(50, ProcState::Sleeping, 1000)]];
        for i in 0..7 {
            samples.push(vec![child(50, ProcState::Zombie, 2000 + i * 1000)]);
        }
        let f = ZombieChild.check(&history(&samples), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject, "pid:50");
        assert_eq!(f[0].evidence["zombie_s"], 6.0);
        assert_eq!(f[0].evidence["ppid"], 1);
    }

    #[test]
    fn a_zombie_older_than_the_history_counts_its_age() {
        let f = ZombieChild.check(
            &history(&[vec![child(60, ProcState::Zombie, 30_000)]]),
            &Config::default(),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["zombie_s"], 30.0);
    }

    #[test]
    fn does_not_fire_for_a_fresh_zombie_or_a_live_child() {
        let c = Config::default();
        // Lived 60 s, died 2 s ago: age is no evidence once we saw it alive.
        let mut samples = vec![vec![child(70, ProcState::Sleeping, 58_000)]; 3];
        samples.push(vec![child(70, ProcState::Zombie, 61_000)]);
        samples.push(vec![child(70, ProcState::Zombie, 62_000)]);
        assert!(ZombieChild.check(&history(&samples), &c).is_empty());
        let live = vec![vec![child(80, ProcState::Sleeping, 90_000)]; 10];
        assert!(ZombieChild.check(&history(&live), &c).is_empty());
    }
}
