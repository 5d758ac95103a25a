//! What the views show, derived from the latest snapshot and findings, plus everything the
//! person controls: the view, selections, filter, sort, pause. Only the main thread touches
//! it. Memory stays bounded: the latest snapshot, short series for sparklines and forecasts,
//! a bounded log ring.

mod cursor;
pub mod findings;
pub mod logs;
pub mod tasks;

pub use cursor::Cursor;
pub use findings::FindingsPane;
pub use logs::{LogBuffer, LogFilter};
pub use tasks::{TaskColumn, TaskTable};

use crate::findings::Finding;
use crate::model::{Child, Snapshot};
use crate::tui::event::{Control, LogLine, ReplayPos, Update};
use std::collections::{HashMap, VecDeque};

/// Names a view. Everything else about a view (title, key, rows, what enter does, how it
/// draws) is in its file under `view/`, listed in the registry `view::VIEWS`; the state only
/// names the views it moves between (a log line to its task, a task to its log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewKind {
    Overview,
    Tasks,
    Threads,
    Processes,
    Files,
    Logs,
    Findings,
}

/// What the person asks for, from `input`'s key table; [`State::apply`] carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Quit,
    Show(ViewKind),
    NextView(isize),
    Help,
    Move(isize),
    Top,
    Bottom,
    /// Tasks: choose the sort column (h/l); elsewhere: previous/next view.
    Column(isize),
    Invert,
    ToggleTree,
    StartFilter,
    /// A character typed into the filter, or `None` for backspace.
    FilterEdit(Option<char>),
    FilterDone,
    FilterCancel,
    Pause,
    /// Replay: step this many snapshots (negative goes back).
    Step(i64),
    Enter,
    Back,
    /// From the selected task or thread to the log lines carrying its id.
    LogsOfSelection,
}

/// What the state asks of the views: the registry (`view::VIEWS`) answers, so the state
/// needs no list of views of its own.
pub trait Views {
    /// How many rows `view`'s list has.
    fn rows(&self, view: ViewKind, state: &mut State) -> usize;
    /// What enter does in `view`.
    fn enter(&self, view: ViewKind, state: &mut State) -> Option<Effect>;
    /// The view `step` tabs away from `view`, wrapping around.
    fn step(&self, view: ViewKind, step: isize) -> ViewKind;
}

/// What the app must do after an intent: the state cannot do it itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Quit,
    Control(Control),
}

const SERIES_LEN: usize = 120;

/// A short series of `(t_ms, value)` for sparklines and forecasts.
#[derive(Debug, Clone, Default)]
pub struct Series(VecDeque<(u64, f64)>);

impl Series {
    pub fn push(&mut self, t_ms: u64, value: f64) {
        if self.0.len() == SERIES_LEN {
            self.0.pop_front();
        }
        self.0.push_back((t_ms, value));
    }

    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().map(|(_, v)| *v)
    }

    pub fn last(&self) -> Option<f64> {
        self.0.back().map(|(_, v)| *v)
    }

    /// Robust slope in units per second over the series (None under 3 points).
    pub fn rate_per_s(&self) -> Option<f64> {
        let start = self.0.front()?.0;
        let points: Vec<(f64, f64)> = self
            .0
            .iter()
            .map(|(t, v)| ((t - start) as f64, *v))
            .collect();
        crate::rules::trend::theil_sen_slope(&points).map(|s| s * 1000.0)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[derive(Debug, Clone, Default)]
pub struct SeriesSet {
    pub fds: Series,
    pub threads: Series,
    pub tasks: Series,
    pub children: Series,
    pub sockets: Series,
    /// Worst loop's lag p99, milliseconds.
    pub lag_p99_ms: Series,
}

/// Text being typed into the `/` filter prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputMode {
    Normal,
    Filter(String),
}

#[derive(Debug)]
pub struct State {
    pub view: ViewKind,
    pub show_help: bool,
    pub paused: bool,
    /// False under NO_COLOR: views then use only bold/reverse/underline.
    pub color: bool,
    /// The clock the views measure ages against (set by the app before each draw).
    pub now_ms: u64,
    pub source: String,
    pub snapshot: Option<Snapshot>,
    pub findings: Vec<Finding>,
    /// Fired before, quiet now.
    pub resolved: Vec<Finding>,
    /// The newest update held back while paused.
    pending: Option<Box<Update>>,
    /// When the shown snapshot reached the UI (ms since epoch): its lag is this minus
    /// `taken_at_ms`.
    pub received_at_ms: u64,
    /// Last error or end-of-target message from the feed.
    pub status: Option<String>,
    /// Updates the feed had to skip because the UI was behind.
    pub skipped_updates: u64,
    pub series: SeriesSet,
    pub tasks: TaskTable,
    cursors: HashMap<ViewKind, Cursor>,
    pub findings_pane: FindingsPane,
    pub logs: LogBuffer,
    pub input: InputMode,
    /// PIDs drilled out of, innermost last; esc goes back.
    pub drill_stack: Vec<u32>,
    pub replay: Option<ReplayPos>,
    /// A line shown under the tabs, e.g. "demo: thresholds shortened".
    pub banner: Option<String>,
    /// Per-thread CPU% from the last two samples.
    pub cpu_pct: HashMap<u32, f64>,
    prev_cpu: HashMap<u32, (u64, u64)>,
    pub updates_seen: u64,
}

impl Default for State {
    fn default() -> Self {
        State::new(true)
    }
}

impl State {
    pub fn new(color: bool) -> Self {
        State {
            view: ViewKind::Overview,
            show_help: false,
            paused: false,
            color,
            now_ms: 0,
            source: String::new(),
            snapshot: None,
            findings: Vec::new(),
            resolved: Vec::new(),
            pending: None,
            received_at_ms: 0,
            status: None,
            skipped_updates: 0,
            series: SeriesSet::default(),
            tasks: TaskTable::default(),
            cursors: HashMap::new(),
            findings_pane: FindingsPane::default(),
            logs: LogBuffer::default(),
            input: InputMode::Normal,
            drill_stack: Vec::new(),
            replay: None,
            banner: None,
            cpu_pct: HashMap::new(),
            prev_cpu: HashMap::new(),
            updates_seen: 0,
        }
    }

    pub fn cursor(&mut self, view: ViewKind) -> &mut Cursor {
        self.cursors.entry(view).or_default()
    }

    pub fn selected(&self, view: ViewKind) -> usize {
        self.cursors.get(&view).map_or(0, |c| c.selected)
    }

    /// Takes a new sample (or holds it while paused).
    pub fn apply_update(&mut self, update: Box<Update>) {
        if self.paused && update.replay.is_none() {
            self.pending = Some(update);
            return;
        }
        self.show(update);
    }

    fn show(&mut self, update: Box<Update>) {
        let Update {
            snapshot,
            findings,
            source,
            replay,
            skipped,
            resolved,
        } = *update;
        self.resolved = resolved;
        self.skipped_updates = skipped;
        self.received_at_ms = self.now_ms;
        self.updates_seen += 1;
        self.record_series(&snapshot);
        self.record_cpu(&snapshot);
        self.source = source;
        self.findings = findings;
        self.replay = replay;
        let old = self.snapshot.replace(snapshot);
        // Freeing 100,000 tasks' strings takes tens of ms: do it off the UI thread.
        if let Some(old) = old.filter(|s| s.tasks().len() > 10_000) {
            let _ = std::thread::Builder::new()
                .name("leakhound-free".into())
                .spawn(move || drop(old));
        }
        self.tasks.invalidate();
        self.status = None;
    }

    fn record_series(&mut self, s: &Snapshot) {
        let t = s.taken_at_ms;
        let sr = &mut self.series;
        sr.fds.push(t, s.fds.open as f64);
        sr.threads.push(t, s.threads.len() as f64);
        sr.tasks.push(t, s.tasks().len() as f64);
        sr.children.push(t, s.children.len() as f64);
        sr.sockets.push(t, s.sockets.len() as f64);
        if let Some(p99) = s
            .probe
            .as_ref()
            .and_then(|p| p.loops.iter().map(|l| l.lag.p99_ms).reduce(f64::max))
        {
            sr.lag_p99_ms.push(t, p99);
        }
    }

    fn record_cpu(&mut self, s: &Snapshot) {
        let mut next = HashMap::with_capacity(s.threads.len());
        self.cpu_pct.clear();
        for th in &s.threads {
            if let Some(&(cpu, at)) = self.prev_cpu.get(&th.tid) {
                let dt = s.taken_at_ms.saturating_sub(at);
                if dt > 0 {
                    let pct = th.cpu_time_ms.saturating_sub(cpu) as f64 * 100.0 / dt as f64;
                    self.cpu_pct.insert(th.tid, pct);
                }
            }
            next.insert(th.tid, (th.cpu_time_ms, s.taken_at_ms));
        }
        self.prev_cpu = next;
    }

    /// Adds a captured line; an unfiltered view whose selection sits on the last line
    /// follows the output.
    pub fn push_log(&mut self, line: LogLine) {
        let len = self.logs.len();
        let follow = self.logs.filter.is_none() && self.selected(ViewKind::Logs) + 1 >= len;
        self.logs.push(line);
        if follow {
            let len = self.logs.len();
            self.cursor(ViewKind::Logs).bottom(len);
        }
    }

    pub fn set_status(&mut self, message: String) {
        self.status = Some(message);
    }

    /// Sample age in ms, for the status line.
    pub fn sample_age_ms(&self) -> Option<u64> {
        self.snapshot
            .as_ref()
            .map(|s| self.now_ms.saturating_sub(s.taken_at_ms))
    }

    /// How late the shown sample reached the UI, ms.
    pub fn collector_lag_ms(&self) -> Option<u64> {
        self.snapshot
            .as_ref()
            .map(|s| self.received_at_ms.saturating_sub(s.taken_at_ms))
    }

    /// Seconds until the descriptor count reaches the soft limit at the current trend.
    pub fn fd_forecast(&self) -> Option<(f64, Option<f64>)> {
        let s = self.snapshot.as_ref()?;
        let rate = self.series.fds.rate_per_s()?;
        let eta = match s.fds.soft_limit {
            Some(limit) if rate > 0.0 && s.fds.open < limit => {
                Some((limit - s.fds.open) as f64 / rate)
            }
            _ => None,
        };
        Some((rate, eta))
    }

    pub fn log_rows(&self) -> Vec<usize> {
        self.logs.matching(self.logs.filter.as_ref())
    }

    /// Moves the selection of the current view, whose list has `len` rows (or scrolls an
    /// open finding).
    fn move_selection(&mut self, delta: isize, len: usize) {
        let view = self.view;
        if view == ViewKind::Findings && self.findings_pane.detail {
            self.findings_pane.scroll_by(delta);
            return;
        }
        self.cursor(view).move_by(delta, len);
    }

    /// Carries out one intent, asking `views` (the registry, `view::VIEWS`) what depends on
    /// the view; returns what only the app can do.
    pub fn apply(&mut self, intent: Intent, views: &dyn Views) -> Option<Effect> {
        match intent {
            Intent::Quit => return Some(Effect::Quit),
            Intent::Show(view) => {
                self.view = view;
                self.show_help = false;
            }
            Intent::NextView(step) => self.view = views.step(self.view, step),
            Intent::Help => self.show_help = !self.show_help,
            Intent::Move(delta) => {
                let len = views.rows(self.view, self);
                self.move_selection(delta, len);
            }
            Intent::Top => self.cursor(self.view).top(),
            Intent::Bottom => {
                let len = views.rows(self.view, self);
                self.cursor(self.view).bottom(len);
            }
            Intent::Column(step) => {
                if self.view == ViewKind::Tasks {
                    self.tasks.next_column(step);
                } else {
                    return self.apply(Intent::NextView(step), views);
                }
            }
            Intent::Invert => self.tasks.invert(),
            Intent::ToggleTree => self.tasks.toggle_tree(),
            Intent::StartFilter => {
                if self.view != ViewKind::Tasks {
                    self.view = ViewKind::Tasks;
                }
                self.input = InputMode::Filter(self.tasks.filter.clone());
            }
            Intent::FilterEdit(c) => {
                if let InputMode::Filter(text) = &mut self.input {
                    match c {
                        Some(c) => text.push(c),
                        None => {
                            text.pop();
                        }
                    }
                    let text = text.clone();
                    self.tasks.set_filter(text);
                    self.cursor(ViewKind::Tasks).top();
                }
            }
            Intent::FilterDone => self.input = InputMode::Normal,
            Intent::FilterCancel => {
                self.input = InputMode::Normal;
                self.tasks.set_filter(String::new());
            }
            Intent::Pause => {
                self.paused = !self.paused;
                if !self.paused
                    && let Some(update) = self.pending.take()
                {
                    self.show(update);
                }
                return Some(Effect::Control(Control::Pause(self.paused)));
            }
            Intent::Step(delta) => {
                if self.replay.is_some() {
                    self.paused = true;
                    return Some(Effect::Control(Control::Step(delta)));
                }
            }
            Intent::Enter => return views.enter(self.view, self),
            Intent::Back => return self.back(),
            Intent::LogsOfSelection => self.logs_of_selection(),
        }
        None
    }

    fn back(&mut self) -> Option<Effect> {
        if self.show_help {
            self.show_help = false;
        } else if self.findings_pane.detail {
            self.findings_pane.detail = false;
        } else if self.tasks.detail {
            self.tasks.detail = false;
        } else if self.view == ViewKind::Logs && self.logs.filter.is_some() {
            self.logs.filter = None;
        } else if self.view == ViewKind::Tasks && !self.tasks.filter.is_empty() {
            self.tasks.set_filter(String::new());
        } else if self.view == ViewKind::Processes
            && let Some(pid) = self.drill_stack.pop()
        {
            return Some(Effect::Control(Control::Retarget(pid)));
        } else {
            self.view = ViewKind::Overview;
        }
        None
    }

    /// From a task or thread, the log lines that carry its id.
    pub fn logs_of_selection(&mut self) {
        let filter = match self.view {
            ViewKind::Tasks => {
                let sel = self.selected(ViewKind::Tasks);
                let Some(s) = self.snapshot.as_ref() else {
                    return;
                };
                let order = self.tasks.order_upto(s.tasks(), sel + 1);
                order
                    .get(sel)
                    .map(|i| LogFilter::Task(s.tasks()[*i as usize].id.clone()))
            }
            ViewKind::Threads => {
                let sel = self.selected(ViewKind::Threads);
                self.snapshot
                    .as_ref()
                    .and_then(|s| s.threads.get(sel))
                    .map(|t| LogFilter::Tid(t.tid))
            }
            _ => None,
        };
        self.logs.filter = filter;
        self.view = ViewKind::Logs;
        let len = self.log_rows().len();
        self.cursor(ViewKind::Logs).bottom(len);
    }

    /// From a log line to the task (or else the thread) it names.
    pub fn jump_from_log(&mut self) {
        let rows = self.log_rows();
        let Some(line) = rows
            .get(self.selected(ViewKind::Logs))
            .and_then(|i| self.logs.get(*i))
            .cloned()
        else {
            return;
        };
        let Some(snapshot) = self.snapshot.as_ref() else {
            return;
        };
        if let Some(task) = &line.task {
            let tasks = snapshot.tasks();
            if !self
                .tasks
                .order(tasks)
                .iter()
                .any(|i| tasks[*i as usize].id == *task)
            {
                self.tasks.set_filter(String::new());
            }
            let order = self.tasks.order(tasks);
            if let Some(row) = order.iter().position(|i| tasks[*i as usize].id == *task) {
                self.view = ViewKind::Tasks;
                self.cursor(ViewKind::Tasks).selected = row;
                return;
            }
        }
        if let Some(tid) = line.tid
            && let Some(row) = snapshot.threads.iter().position(|t| t.tid == tid)
        {
            self.view = ViewKind::Threads;
            self.cursor(ViewKind::Threads).selected = row;
            return;
        }
        self.set_status("that line names no task or thread that is alive now".into());
    }
}

/// The descendants in tree order (each parent before its children), root excluded.
pub fn process_rows(s: &Snapshot) -> Vec<&Child> {
    let mut by_parent: HashMap<u32, Vec<&Child>> = HashMap::new();
    for c in &s.children {
        by_parent.entry(c.ppid).or_default().push(c);
    }
    for kids in by_parent.values_mut() {
        kids.sort_by_key(|c| c.pid);
    }
    let mut out = Vec::with_capacity(s.children.len());
    let mut stack: Vec<&Child> = by_parent
        .remove(&s.pid)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .collect();
    while let Some(c) = stack.pop() {
        out.push(c);
        if let Some(kids) = by_parent.remove(&c.pid) {
            stack.extend(kids.into_iter().rev());
        }
    }
    // Descendants whose parent is not listed (reparented mid-scan) still show.
    let mut rest: Vec<&Child> = by_parent.into_values().flatten().collect();
    rest.sort_by_key(|c| c.pid);
    out.extend(rest);
    out
}

/// Sockets with CLOSE_WAIT first, then as the source listed them.
pub fn socket_order(s: &Snapshot) -> Vec<usize> {
    let mut order: Vec<usize> = (0..s.sockets.len()).collect();
    order.sort_by_key(|i| s.sockets[*i].state != crate::model::SocketState::CloseWait);
    order
}
