//! Rules: each a pure function of the history and the thresholds, one file per rule.
//!
//! A rule never does I/O; it reads snapshots and says what it finds. To add one: write
//! `src/rules/NAME.rs` with its id constant `ID` and a type implementing [`Rule`] (judged on the
//! history while the program runs) and/or [`ExitRule`] (judged by `check` once it exited), list
//! it in [`all`] / [`at_exit`], document its evidence keys in `docs/RULES.md`. [`catalog`] is
//! the one list of every rule id and summary (`leakhound rules`, JUnit, SARIF).

use crate::config::Config;
use crate::findings::Finding;
use crate::history::History;
use crate::model::Snapshot;

pub mod at_exit;
pub mod close_wait;
pub mod fd_exhaustion;
pub mod leak_growth;
pub mod trend;

pub mod group;
pub mod loop_blocked;
pub mod never_awaited;
pub mod orphan_child;
pub mod pool_starvation;
pub mod probe_common;
pub mod stuck_task;
pub mod thread_leak;
pub mod unclosed_resource;
pub mod zombie_child;

/// One named check, in the manner of tokio-console's lints.
pub trait Rule: Send + Sync {
    /// Stable id, as findings and ignore lists name it.
    fn id(&self) -> &'static str;
    /// One line: what it detects.
    fn summary(&self) -> &'static str;
    /// What is wrong now, judging the whole history. The same subject must keep the same
    /// `subject` string from call to call, so callers can tell new findings from old.
    fn check(&self, history: &History, config: &Config) -> Vec<Finding>;
}

/// A rule `check` decides once the command has exited, from what was left behind.
pub trait ExitRule: Send + Sync {
    /// Stable id, as findings and ignore lists name it (the rule's `ID`).
    fn id(&self) -> &'static str;
    /// One line: what it detects.
    fn summary(&self) -> &'static str;
    /// What was left that should not be; nothing when `exit` lacks what this rule reads.
    fn judge_exit(&self, exit: &at_exit::Exit) -> Vec<Finding>;
}

/// Every rule leakhound knows, in a fixed order.
pub fn all() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(fd_exhaustion::FdExhaustion),
        Box::new(leak_growth::LeakGrowth),
        Box::new(close_wait::CloseWait),
        Box::new(zombie_child::ZombieChild),
        Box::new(stuck_task::StuckTask),
        Box::new(never_awaited::NeverAwaited),
        Box::new(loop_blocked::LoopBlocked),
        Box::new(pool_starvation::PoolStarvation),
        Box::new(unclosed_resource::UnclosedResource),
        Box::new(thread_leak::ThreadLeak),
    ]
}

/// Runs every rule over the history.
pub fn evaluate(rules: &[Box<dyn Rule>], history: &History, config: &Config) -> Vec<Finding> {
    let mut out: Vec<Finding> = rules
        .iter()
        .flat_map(|r| r.check(history, config))
        .collect();
    crate::findings::sort_findings(&mut out);
    out
}

/// Every rule judged at exit, in a fixed order.
pub fn at_exit() -> Vec<Box<dyn ExitRule>> {
    vec![
        Box::new(orphan_child::OrphanChild),
        Box::new(zombie_child::ZombieChild),
        Box::new(unclosed_resource::UnclosedResource),
        Box::new(thread_leak::ThreadLeak),
    ]
}

/// Runs every exit-time rule over what `exit` holds.
pub fn judge_exit(exit: &at_exit::Exit) -> Vec<Finding> {
    at_exit().iter().flat_map(|r| r.judge_exit(exit)).collect()
}

/// Descriptors and threads of one process left at its exit (see [`at_exit::Held`]); nothing
/// when there are too few samples to tell.
pub fn left_open(
    snapshots: &[&Snapshot],
    at_exit: Option<&Snapshot>,
    socket_dir: &str,
    had_probe: bool,
) -> Vec<Finding> {
    judge_exit(&at_exit::Exit {
        held: at_exit::Held::new(snapshots, at_exit, socket_dir, had_probe),
        leftovers: None,
    })
}

/// What was left under leakhound once the command exited: orphans and zombies.
pub fn judge_leftovers(left: &at_exit::Leftovers) -> Vec<Finding> {
    judge_exit(&at_exit::Exit {
        held: None,
        leftovers: Some(left),
    })
}

/// Every rule id with its one-line summary, once each: the rules of [`all`], then the ones
/// only judged at exit.
pub fn catalog() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> =
        all().iter().map(|r| (r.id(), r.summary())).collect();
    for rule in at_exit() {
        if out.iter().all(|(id, _)| *id != rule.id()) {
            out.push((rule.id(), rule.summary()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::at_exit::{Leftover, Leftovers};
    use super::orphan_child::ID as ORPHAN_CHILD;
    use super::zombie_child::ID as ZOMBIE_CHILD;
    use super::*;
    use crate::model::{Fd, FdKind, ProbeData, ProcState, Proto, Snapshot, Socket, Thread};
    use std::time::Duration;

    #[test]
    fn the_catalog_names_every_rule_once() {
        let ids: Vec<&str> = catalog().iter().map(|(id, _)| *id).collect();
        let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{ids:?}");
        for rule in at_exit() {
            assert!(ids.contains(&rule.id()), "{} missing", rule.id());
        }
        for rule in all() {
            assert!(ids.contains(&rule.id()), "{} missing", rule.id());
        }
    }

    fn leftover(pid: u32, state: ProcState) -> Leftover {
        Leftover {
            pid,
            ppid: 1,
            state,
            cmd: "sleep 30".into(),
        }
    }

    #[test]
    fn leftovers_become_findings() {
        let left = Leftovers {
            zombies: vec![leftover(7, ProcState::Zombie)],
            alive: vec![leftover(8, ProcState::Sleeping)],
            killed: true,
            settle: Duration::from_secs(2),
        };
        let f = judge_leftovers(&left);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].rule, ORPHAN_CHILD);
        assert_eq!(f[0].subject, "pid:8");
        assert!(f[0].message.contains("killed"), "{}", f[0].message);
        assert_eq!(f[1].rule, ZOMBIE_CHILD);
        assert!(judge_leftovers(&Leftovers::default()).is_empty());
    }

    fn snap(fds: &[(i32, &str)], tids: &[u32]) -> Snapshot {
        Snapshot {
            pid: 100,
            fd_list: Some(
                fds.iter()
                    .map(|(fd, t)| Fd {
                        fd: *fd,
                        kind: if t.starts_with("socket:") {
                            FdKind::Socket
                        } else {
                            FdKind::File
                        },
                        target: t.to_string(),
                    })
                    .collect(),
            ),
            threads: tids
                .iter()
                .map(|tid| Thread {
                    tid: *tid,
                    name: format!("t{tid}"),
                    ..Default::default()
                })
                .collect(),
            sockets: vec![Socket {
                proto: Proto::Unix,
                local: "/tmp/lh/100.sock".into(),
                remote: String::new(),
                state: "LISTEN".into(),
                inode: 55,
                fd: Some(5),
                rx_queue: 0,
                tx_queue: 0,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_things_held_to_the_end_count() {
        let first = snap(&[(0, "/dev/null"), (3, "/etc/base")], &[100]);
        // fd 4 held in both final samples: a leak. fd 6 appears only in the last: work in
        // progress. fd 7 changed target between the two: reused, not held. fd 5 is the probe.
        let mid = snap(
            &[
                (3, "/etc/base"),
                (4, "/tmp/leak"),
                (5, "socket:[55]"),
                (7, "/tmp/a"),
            ],
            &[100, 101, 102],
        );
        let last = snap(
            &[
                (3, "/etc/base"),
                (4, "/tmp/leak"),
                (5, "socket:[55]"),
                (6, "/tmp/busy"),
                (7, "/tmp/b"),
            ],
            &[100, 101, 103],
        );
        let f = left_open(&[&first, &mid, &last], None, "/tmp/lh", false);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, vec!["fd:4", "thread:t101"]);
        assert!(f[0].message.contains("/tmp/leak"));
        // Too few samples to tell held from busy: say nothing.
        assert!(left_open(&[&first, &last], None, "/tmp/lh", false).is_empty());
        // Seen at the exit itself, fd 6 counts (opened late, never closed) and fd 4 does not
        // when it was closed before the exit.
        let exit = snap(&[(3, "/etc/base"), (6, "/tmp/busy")], &[100]);
        let f = left_open(&[&first, &mid, &last], Some(&exit), "/tmp/lh", false);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, vec!["fd:6"]);
    }

    #[test]
    fn a_shell_holding_the_script_it_sources_is_not_a_leak() {
        let as_shell = |mut s: Snapshot, name: &str| {
            s.process = Some(crate::model::Process {
                name: "wrapper".into(),
                cmd: format!("/usr/bin/{name} /usr/bin/wrapper --flag"),
                ..Default::default()
            });
            s
        };
        let first = snap(&[(255, "/usr/bin/wrapper")], &[100]);
        let fds = [(255, "/usr/lib/hooks/rehash.bash"), (4, "/tmp/out")];
        let exit = snap(&fds, &[100]);
        let subjects = |name: &str| -> Vec<String> {
            let (first, exit) = (as_shell(first.clone(), name), as_shell(exit.clone(), name));
            left_open(&[&first, &exit], Some(&exit), "/tmp/lh", false)
                .into_iter()
                .map(|f| f.subject)
                .collect()
        };
        // A bash script: the sourced hook on fd 255 is the shell's; fd 4 (a redirection) counts.
        assert_eq!(subjects("bash"), vec!["fd:4"]);
        // Any other program: both count.
        assert_eq!(subjects("python3"), vec!["fd:255", "fd:4"]);
    }

    #[test]
    fn a_tokio_runtime_left_running_is_named_and_a_naming_probe_vouches_for_unnamed_threads() {
        let tokio_view = |tids: &[u32], probe: Option<ProbeData>| {
            let mut s = snap(&[], tids);
            for t in s.threads.iter_mut().filter(|t| t.tid != 100) {
                t.name = "tokio-rt-worker".into();
            }
            s.probe = probe;
            s
        };
        // The Rust probe names no threads: /proc's names are judged, and tokio's are said so.
        let rust_probe = || Some(ProbeData::default());
        let first = tokio_view(&[100], rust_probe());
        let mid = tokio_view(&[100, 101], rust_probe());
        let last = tokio_view(&[100, 101], rust_probe());
        let f = left_open(&[&first, &mid, &last], None, "/tmp/lh", false);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject, "thread:tokio-rt-worker");
        assert!(f[0].message.contains("tokio runtime"), "{}", f[0].message);
        assert_eq!(f[0].evidence["runtime"], "tokio");
        // Several workers of one runtime: one finding that names every one of them.
        let mid = tokio_view(&[100, 101, 102, 103], rust_probe());
        let last = tokio_view(&[100, 101, 102, 103], rust_probe());
        let f = left_open(&[&first, &mid, &last], None, "/tmp/lh", false);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["tids"], serde_json::json!([101, 102, 103]));
        assert!(
            f[0].message
                .starts_with("3 threads 'tokio-rt-worker' (tids 101, 102, 103,"),
            "{}",
            f[0].message
        );
        // A probe that names threads and never named this one: its own, not judged.
        let naming = || {
            Some(ProbeData {
                threads: vec![crate::model::ProbeThread {
                    native_id: 100,
                    name: "MainThread".into(),
                    ..Default::default()
                }],
                ..ProbeData::default()
            })
        };
        let (first, mid, last) = (
            tokio_view(&[100], naming()),
            tokio_view(&[100, 101], naming()),
            tokio_view(&[100, 101], naming()),
        );
        assert!(left_open(&[&first, &mid, &last], None, "/tmp/lh", false).is_empty());
    }
}
