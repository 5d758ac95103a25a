//! `orphan-child`: a descendant was still running after the command under `check` exited and
//! things were given the settle time to wind down. Judged at exit only.

use super::at_exit::Exit;
use super::zombie_child::{pids, plain};
use super::{ExitRule, group};
use crate::findings::{Finding, Severity};

pub struct OrphanChild;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "orphan-child";

impl ExitRule for OrphanChild {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "a descendant was still running after the command under check exited"
    }

    fn judge_exit(&self, exit: &Exit) -> Vec<Finding> {
        let Some(left) = exit.leftovers else {
            return Vec::new();
        };
        let fate = if left.killed {
            "; leakhound killed it"
        } else {
            "; left running (--keep-orphans)"
        };
        let each = left.alive.iter().map(|p| {
            let finding = Finding::new(
                ID,
                Severity::Error,
                format!("pid:{}", p.pid),
                format!(
                    "`{}` (pid {}) was still running {:.1} s after the command exited{fate}",
                    p.cmd,
                    p.pid,
                    left.settle.as_secs_f64()
                ),
            )
            .about_pid(p.pid)
            .with("cmd", p.cmd.clone())
            .with("state", p.state.as_str())
            .with("killed", left.killed);
            // Orphans of one bug run one command (a worker started per job, never stopped).
            (p.cmd.clone(), finding)
        });
        group::collapse(each, |cmd, members| {
            let first = &members[0];
            Finding::new(
                ID,
                first.severity,
                format!("orphans:{cmd}"),
                format!(
                    "{} processes `{cmd}` were still running {:.1} s after the command exited{fate}",
                    group::thousands(members.len()),
                    left.settle.as_secs_f64()
                ),
            )
            .with("cmd", plain(&first.evidence["cmd"]))
            .with("killed", left.killed)
            .with("pids", pids(members))
        })
    }
}
