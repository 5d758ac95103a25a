//! `leakhound snapshot TARGET`: one sample, judged by every rule, as tables or JSON.

use super::{EXIT_CLEAN, EXIT_FINDINGS, SnapshotArgs};
use crate::config::Config;
use crate::findings::Finding;
use crate::judge::Judges;
use crate::model::Snapshot;
use crate::source::SampleOptions;

pub fn run(args: SnapshotArgs) -> anyhow::Result<u8> {
    let config: Config = args.thresholds.config(&[])?;
    // A PID stands for the process and its descendants: each worker with a probe is sampled.
    crate::launch::inject_if_asked(args.inject, &args.target)?;
    let mut source = crate::source::open_tree_once(&args.target, args.nonblocking)?;
    let mut snapshot = source.sample(SampleOptions {
        fd_list: args.fds,
        stacks: args.stacks,
    })?;
    crate::report::add_no_probe_note(&mut snapshot);
    let findings = Judges::new(config).observe_tree(snapshot.clone()).current;
    // A closed standard output (`| head`) is the reader's choice, not an error.
    if args.json {
        super::out::println(&crate::report::json::snapshot(&snapshot, &findings));
    } else {
        super::out::print(&text(&snapshot, &findings));
    }
    // As `--help` says (and as grep and ripgrep do): 1 when something was found.
    Ok(if findings.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_FINDINGS
    })
}

/// The root's tables and every finding (the workers' included, each naming its pid), then each
/// worker's own tables under a `WORKER pid N` heading.
fn text(snapshot: &Snapshot, findings: &[Finding]) -> String {
    let mut out = crate::report::text::snapshot(snapshot, findings);
    for worker in &snapshot.workers {
        out.push_str(&format!(
            "\n==== WORKER pid {} ({}) ====\n",
            worker.pid, worker.source
        ));
        let own: Vec<Finding> = findings
            .iter()
            .filter(|f| f.pid == Some(worker.pid))
            .cloned()
            .collect();
        out.push_str(&crate::report::text::snapshot(worker, &own));
    }
    out
}
