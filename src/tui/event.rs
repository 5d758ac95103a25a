//! What travels between the dashboard's threads: the feed's `Update`s and messages to the
//! UI, the UI's `Control` messages back to the feed, and the program's captured output. Plain
//! data, shared by `feed` (which sends it), `state` (which applies it) and `app` (which
//! routes it); it depends on neither.

use crate::findings::Finding;
use crate::model::Snapshot;

/// What the UI asks of the feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Replay: stop or resume advancing (live sampling goes on; the UI holds the display).
    Pause(bool),
    /// Replay: show the snapshot this many steps away.
    Step(i64),
    /// Observe another process (drill into a child, or back out).
    Retarget(u32),
}

/// What the feed tells the UI.
#[derive(Debug)]
pub enum FeedEvent {
    Update(Box<Update>),
    /// Sampling failed this time; the feed keeps trying.
    Error(String),
    /// The target is gone (exited, end of recording); the feed waits for a retarget.
    Gone(String),
    Log(LogLine),
}

/// Everything the UI's single channel carries.
#[derive(Debug)]
pub enum AppEvent {
    Input(crossterm::event::Event),
    Feed(FeedEvent),
}

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPos {
    /// 0-based index of the snapshot shown.
    pub index: usize,
    pub total: usize,
}

/// One sample as the feed hands it to the UI: the snapshot and what the rules made of it.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub snapshot: Snapshot,
    pub findings: Vec<Finding>,
    /// `Source::describe()` of what produced it.
    pub source: String,
    pub replay: Option<ReplayPos>,
    /// Updates the feed skipped so far because the UI was behind.
    pub skipped: u64,
    /// Findings that fired earlier and are quiet now (the newest few), so a person who looks
    /// later still sees what happened.
    pub resolved: Vec<Finding>,
}

/// Which of the program's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of the program's output, with the thread and task ids it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    pub text: String,
    pub tid: Option<u32>,
    pub task: Option<String>,
}

impl LogLine {
    pub fn parse(stream: Stream, text: &str) -> Self {
        let mut tid = None;
        let mut task = None;
        for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == ';') {
            if let Some(v) = word.strip_prefix("tid=") {
                tid = tid.or_else(|| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok());
            } else if let Some(v) = word.strip_prefix("task=") {
                let v = v.trim_matches(|c| c == '"' || c == '\'' || c == ')' || c == ']');
                if !v.is_empty() && task.is_none() {
                    task = Some(v.to_string());
                }
            }
        }
        LogLine {
            stream,
            text: text.to_string(),
            tid,
            task,
        }
    }
}
