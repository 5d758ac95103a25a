//! `leakhound replay FILE`: a recording in the dashboard (space pauses, `,` `.` step, `[` `]`
//! seek), or with `--json` its findings as JSON lines, each once when it first fires.

use super::{EXIT_CLEAN, EXIT_FINDINGS, ReplayArgs, dashboard};
use crate::config::Config;
use crate::judge::Judge;
use crate::source::replay::Recording;
use crate::tui::feed::{self, ReplayFeed};
use std::path::Path;

pub fn run(args: ReplayArgs) -> anyhow::Result<u8> {
    let config = args.thresholds.config(&[])?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        anyhow::bail!("--speed must be above zero: write e.g. --speed 2");
    }
    if args.json {
        return print_findings(&args.file, config);
    }
    dashboard(&args.file, config, args.speed)
}

fn open(path: &Path) -> anyhow::Result<Recording> {
    let recording = Recording::open(path)?;
    for w in &recording.warnings {
        eprintln!("leakhound: warning: {w}");
    }
    Ok(recording)
}

fn print_findings(path: &Path, config: Config) -> anyhow::Result<u8> {
    let mut recording = open(path)?;
    let mut judge = Judge::new(config);
    let mut stdout_open = true;
    for i in 0..recording.len() {
        let snapshot = match recording.read(i) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("leakhound: warning: {e}");
                continue;
            }
        };
        let at = snapshot.taken_at_ms;
        for f in judge.observe(snapshot).new {
            // Once the reader has gone (`| head`), judging goes on for the exit status only.
            stdout_open =
                stdout_open && super::out::println(&crate::report::json::finding_line(&f, at));
        }
    }
    Ok(if judge.fired_count() > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    })
}

/// The recording in the dashboard.
pub fn dashboard(path: &Path, config: Config, speed: f64) -> anyhow::Result<u8> {
    let recording = open(path)?;
    dashboard::require_terminal("replay")?;
    let mut state = dashboard::new_state();
    // Kept on screen for the whole replay (the status line is for what changes).
    state.banner = recording.warnings.first().cloned();
    let (tx, rx) = dashboard::channel();
    let feed = ReplayFeed {
        recording,
        config,
        speed,
        paused: false,
    };
    let control = feed::spawn(
        "leakhound-replay",
        move |tx, ctl| feed.run(tx, ctl),
        tx.clone(),
    )?;
    dashboard::run_ui(state, tx, rx, control)?;
    Ok(EXIT_CLEAN)
}
