//! `leakhound attach TARGET`: the dashboard on a running target (a recording replays).

use super::{AttachArgs, EXIT_CLEAN, dashboard};
use crate::source::{SampleOptions, Target};

pub fn run(args: AttachArgs) -> anyhow::Result<u8> {
    let config = args.common.config()?;
    if let Target::Recording(path) = &args.target {
        return super::replay::dashboard(path, config, 1.0);
    }
    dashboard::require_terminal("attach")?;
    crate::launch::inject_if_asked(args.inject, &args.target)?;
    let mut source = crate::source::open_tree(&args.target)?;
    // One sample up front: a bad target is a one-line error here, not a blank dashboard.
    source.sample(SampleOptions::default())?;
    let (tx, rx) = dashboard::channel();
    let control = dashboard::live_feed(
        args.target,
        Some(source),
        args.common.interval,
        config,
        tx.clone(),
    )?;
    dashboard::run_ui(dashboard::new_state(), tx, rx, control)?;
    Ok(EXIT_CLEAN)
}
