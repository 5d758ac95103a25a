//! `zombie-child`: a descendant exited and its parent has not reaped it (no `wait()`). Judged
//! while it runs (for long enough) and, under `check`, at exit: every child left unreaped.

use super::at_exit::Exit;
use super::{ExitRule, Rule, group};
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
            let finding = Finding::new(
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
                .with("zombie_s", (zombie_ms as f64 / 100.0).round() / 10.0);
            out.push((same_parent(zombie.ppid, &zombie.cmd), finding));
        }
        group::collapse(out, |_, members| {
            let shortest = members
                .iter()
                .filter_map(|f| f.evidence["zombie_s"].as_f64())
                .fold(f64::INFINITY, f64::min);
            grouped(members, |count, ppid, cmd| {
                format!(
                    "{count} children ({cmd}) exited and pid {ppid} has not reaped them for \
                     {shortest:.0}s or more: the parent never waits for them"
                )
            })
            .with("zombie_s", shortest)
        })
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
        let each = left.zombies.iter().map(|p| {
            let finding = Finding::new(
                ID,
                Severity::Warning,
                format!("pid:{}", p.pid),
                format!(
                    "`{}` (pid {}) exited but was never reaped (wait()ed for) by its parent",
                    p.cmd, p.pid
                ),
            )
            .about_pid(p.pid)
            .with("ppid", p.ppid)
            .with("cmd", p.cmd.clone());
            (same_parent(p.ppid, &p.cmd), finding)
        });
        group::collapse(each, |_, members| {
            grouped(members, |count, ppid, cmd| {
                format!(
                    "{count} children `{cmd}` of pid {ppid} exited but were never reaped (wait()ed for)"
                )
            })
        })
    }
}

/// Zombies of one parent and command as one finding, subject `zombies:PPID:CMD`; its message
/// is `says(count, ppid, cmd)`.
fn grouped(
    members: &[Finding],
    says: impl Fn(&str, &serde_json::Value, &str) -> String,
) -> Finding {
    let first = &members[0];
    let (ppid, cmd) = (&first.evidence["ppid"], plain(&first.evidence["cmd"]));
    let message = says(&group::thousands(members.len()), ppid, &cmd);
    Finding::new(ID, first.severity, format!("zombies:{ppid}:{cmd}"), message)
        .with("ppid", ppid.clone())
        .with("cmd", cmd)
        .with("pids", pids(members))
}

/// Zombies of one bug: one parent that never waits, for children of one command.
fn same_parent(ppid: u32, cmd: &str) -> String {
    format!("{ppid}|{cmd}")
}

/// The pids of grouped findings about single processes.
pub(super) fn pids(members: &[Finding]) -> Vec<u32> {
    members.iter().filter_map(|f| f.pid).collect()
}

/// A string evidence value as written (no quotes).
pub(super) fn plain(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
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

    #[test]
    fn zombies_of_one_parent_and_command_are_one_finding_with_a_count() {
        let mut zombies: Vec<Child> = (0..120)
            .map(|i| Child {
                ppid: 7,
                ..child(1000 + i, ProcState::Zombie, 30_000)
            })
            .collect();
        // Another parent's zombie of the same command is another bug.
        zombies.push(Child {
            ppid: 8,
            ..child(2000, ProcState::Zombie, 30_000)
        });
        let f = ZombieChild.check(&history(&[zombies]), &Config::default());
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].subject, "zombies:7:[worker]");
        assert_eq!(f[0].evidence["count"], 120);
        assert_eq!(f[0].evidence["pids"].as_array().unwrap().len(), 120);
        assert_eq!(f[0].evidence["examples"][4], "pid:1004");
        assert_eq!(
            f[0].message,
            "120 children ([worker]) exited and pid 7 has not reaped them for 30s or more: the \
             parent never waits for them"
        );
        assert_eq!(f[1].subject, "pid:2000");
    }

    #[test]
    fn zombies_and_orphans_left_at_exit_are_grouped_by_command() {
        use crate::rules::at_exit::{Leftover, Leftovers};
        let left = |pid, state, cmd: &str| Leftover {
            pid,
            ppid: 1,
            state,
            cmd: cmd.into(),
        };
        let leftovers = Leftovers {
            zombies: (0..4)
                .map(|i| left(10 + i, ProcState::Zombie, "[sh]"))
                .collect(),
            alive: (0..6)
                .map(|i| left(20 + i, ProcState::Sleeping, "sleep 300"))
                .chain([left(30, ProcState::Sleeping, "tail -f log")])
                .collect(),
            killed: true,
            settle: std::time::Duration::from_secs(2),
        };
        let f = crate::rules::judge_leftovers(&leftovers);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["orphans:sleep 300", "pid:30", "zombies:1:[sh]"]);
        assert_eq!(f[0].evidence["count"], 6);
        assert_eq!(
            f[0].evidence["pids"],
            serde_json::json!([20, 21, 22, 23, 24, 25])
        );
        assert!(
            f[0].message
                .starts_with("6 processes `sleep 300` were still running 2.0 s after"),
            "{}",
            f[0].message
        );
        assert_eq!(f[2].evidence["count"], 4);
        assert!(
            f[2].message.starts_with("4 children `[sh]` of pid 1"),
            "{}",
            f[2].message
        );
    }
}
