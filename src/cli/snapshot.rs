//! `leakhound snapshot TARGET`: one sample, judged by every rule, as tables or JSON.

use super::{EXIT_CLEAN, EXIT_FINDINGS, SnapshotArgs};
use crate::config::Config;
use crate::judge::Judge;
use crate::source::SampleOptions;

pub fn run(args: SnapshotArgs) -> anyhow::Result<u8> {
    let config: Config = args.thresholds.config(&[])?;
    let mut source = crate::source::open(&args.target)?;
    let mut snapshot = source.sample(SampleOptions {
        fd_list: args.fds,
        stacks: args.stacks,
    })?;
    crate::report::add_no_probe_note(&mut snapshot);
    let mut judge = Judge::new(config);
    let findings = judge.observe(snapshot).current;
    let snapshot = judge.history().latest().expect("just observed");
    // A closed standard output (`| head`) is the reader's choice, not an error.
    if args.json {
        super::out::println(&crate::report::json::snapshot(snapshot, &findings));
    } else {
        super::out::print(&crate::report::text::snapshot(snapshot, &findings));
    }
    // As `--help` says (and as grep and ripgrep do): 1 when something was found.
    Ok(if findings.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_FINDINGS
    })
}
