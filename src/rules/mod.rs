//! Rules: each a pure function of the history and the thresholds, one file per rule.
//!
//! A rule never does I/O; it reads snapshots and says what it finds. To add one: write
//! `src/rules/NAME.rs` with a type implementing [`Rule`], list it in [`all`], document its
//! evidence keys in `docs/RULES.md`.

use crate::config::Config;
use crate::findings::Finding;
use crate::history::History;

pub mod close_wait;
pub mod fd_exhaustion;
pub mod leak_growth;
pub mod trend;

pub mod loop_blocked;
pub mod never_awaited;
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
