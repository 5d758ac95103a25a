//! `leakhound snapshot TARGET`: one sample, judged by every rule, as tables or JSON.

use super::{EXIT_CLEAN, SnapshotArgs};
use crate::config::Config;
use crate::history::History;
use crate::source::SampleOptions;

pub fn run(args: SnapshotArgs) -> anyhow::Result<u8> {
    let mut config = Config::default();
    for t in &args.thresholds {
        config.set(t).map_err(anyhow::Error::msg)?;
    }
    crate::launch::inject_if_asked(args.inject, &args.target)?;
    let mut source = crate::source::open_once(&args.target, args.nonblocking)?;
    let mut snapshot = source.sample(SampleOptions {
        fd_list: args.fds,
        stacks: args.stacks,
    })?;
    crate::report::add_no_probe_note(&mut snapshot);
    let mut history = History::default();
    history.push(snapshot);
    let findings = crate::rules::evaluate(&crate::rules::all(), &history, &config);
    let snapshot = history.latest().expect("just pushed");
    // A closed standard output (`| head`) is the reader's choice, not an error.
    if args.json {
        super::out::println(&crate::report::json::snapshot(snapshot, &findings));
    } else {
        super::out::print(&crate::report::text::snapshot(snapshot, &findings));
    }
    // A snapshot reports; it is not a verdict (that is `check`), so findings do not fail it.
    Ok(EXIT_CLEAN)
}
