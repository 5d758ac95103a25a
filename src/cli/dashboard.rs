//! Opening the dashboard on a feed: the shared part of attach, run, replay and demo.

use crate::source::{SampleOptions, Target};
use crate::tui::App;
use crate::tui::event::{AppEvent, Control};
use crate::tui::feed::{self, LiveFeed};
use crate::tui::state::State;
use crate::tui::term::{self, TerminalGuard};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

/// The one channel the UI reads: key presses and feed events. Sized so a burst of log lines
/// does not stall the program writing them, while a UI that falls behind makes the feed
/// skip samples (counted on the status line) rather than queue them.
pub fn channel() -> (SyncSender<AppEvent>, Receiver<AppEvent>) {
    std::sync::mpsc::sync_channel(1024)
}

pub fn require_terminal(command: &str) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "`leakhound {command}` draws a dashboard and needs a terminal: run it in one, or use `leakhound watch TARGET` (or `demo --headless 30s`) for plain output"
        );
    }
    Ok(())
}

/// A fresh state, colours unless NO_COLOR.
pub fn new_state() -> State {
    State::new(term::color_enabled())
}

/// Runs the dashboard until the user quits. The terminal is restored on return and on panic.
pub fn run_ui(
    state: State,
    tx: SyncSender<AppEvent>,
    rx: Receiver<AppEvent>,
    control: std::sync::mpsc::Sender<Control>,
) -> anyhow::Result<()> {
    let (guard, terminal) = TerminalGuard::enter()?;
    let stop = Arc::new(AtomicBool::new(false));
    crate::tui::app::spawn_input_thread(tx, Arc::clone(&stop))?;
    let mut app = App::new(terminal, state).with_control(control);
    let result = app.run(rx);
    stop.store(true, Ordering::Relaxed);
    drop(app);
    drop(guard);
    result
}

/// Starts a live feed on `target` (already opened as `source` when given).
pub fn live_feed(
    target: Target,
    source: Option<Box<dyn crate::source::Source>>,
    interval: std::time::Duration,
    config: crate::config::Config,
    tx: SyncSender<AppEvent>,
) -> anyhow::Result<std::sync::mpsc::Sender<Control>> {
    let feed = LiveFeed {
        target,
        source,
        // A PID stands for the process and its descendants (a service's workers).
        open: Box::new(crate::source::open_tree),
        interval,
        options: SampleOptions::default(),
        config,
    };
    feed::spawn("leakhound-feed", move |tx, ctl| feed.run(tx, ctl), tx)
}
