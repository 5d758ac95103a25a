//! Threads: tid, name, state, CPU% (from cpu_time deltas), wchan, daemon, and the tasks
//! that run on it where the runtime tells (an asyncio loop's thread).

use super::ViewSpec;
use super::style::{self, Theme};
use super::table::{self, TableSpec};
use crate::model::{ProcState, Snapshot};
use crate::tui::state::{State, ViewKind};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row},
};
use std::collections::HashMap;

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Threads,
    title: "Threads",
    short_title: "Threads",
    letter: 'r',
    key_name: "thReads",
    render,
    rows: |state| state.snapshot.as_ref().map_or(0, |s| s.threads.len()),
    enter: |state| {
        state.logs_of_selection();
        None
    },
};

fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    super::with_snapshot(frame, area, state, theme, VIEW.title, draw);
}

/// `tid -> "loop main: 12 tasks"` for threads that run an event loop.
fn tasks_by_thread(s: &Snapshot) -> HashMap<u32, String> {
    let Some(probe) = s.probe.as_ref() else {
        return HashMap::new();
    };
    let mut per_loop: HashMap<&str, usize> = HashMap::new();
    for t in &probe.tasks {
        if let Some(l) = t.loop_id.as_deref() {
            *per_loop.entry(l).or_default() += 1;
        }
    }
    probe
        .loops
        .iter()
        .filter(|l| l.tid != 0)
        .map(|l| {
            let n = per_loop.get(l.id.as_str()).copied().unwrap_or(0);
            (l.tid, format!("loop {}: {n} tasks", l.id))
        })
        .collect()
}

pub(super) fn draw(frame: &mut Frame, area: Rect, state: &mut State, s: &Snapshot, theme: Theme) {
    let selected = state
        .selected(ViewKind::Threads)
        .min(s.threads.len().saturating_sub(1));
    let stack = s
        .threads
        .get(selected)
        .map(|t| t.stack.clone())
        .unwrap_or_default();
    let stack_rows = if stack.is_empty() {
        0
    } else {
        (stack.len() as u16 + 2).min(area.height / 3)
    };
    let [table_area, stack_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(stack_rows)]).areas(area);
    let loops = tasks_by_thread(s);
    let spec = TableSpec {
        title: Line::from(format!(
            "Threads ({}) — g or enter: its log lines",
            s.threads.len()
        )),
        header: ["TID", "NAME", "STATE", "CPU%", "WCHAN", "DAEMON", "TASKS"]
            .map(String::from)
            .to_vec(),
        widths: vec![
            Constraint::Length(8),
            Constraint::Length(18),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Length(6),
            Constraint::Fill(1),
        ],
        len: s.threads.len(),
        theme,
        focused: true,
    };
    let cpu = state.cpu_pct.clone();
    table::draw(
        frame,
        table_area,
        spec,
        state.cursor(ViewKind::Threads),
        |i| {
            let t = &s.threads[i];
            let pct = cpu.get(&t.tid).copied();
            let pct_cell = Cell::from(pct.map_or("-".into(), |p| format!("{p:.0}")));
            let pct_cell = if pct.is_some_and(|p| p >= 90.0) {
                pct_cell.style(theme.warn())
            } else {
                pct_cell
            };
            let st = Cell::from(t.state.as_str());
            let st = match t.state {
                ProcState::Running => st.style(theme.good()),
                ProcState::DiskSleep | ProcState::Zombie => st.style(theme.bad()),
                _ => st,
            };
            Row::new(vec![
                Cell::from(t.tid.to_string()),
                Cell::from(t.runtime_name.clone().unwrap_or_else(|| t.name.clone())),
                st,
                pct_cell,
                Cell::from(t.wchan.clone().unwrap_or_else(|| "-".into())),
                Cell::from(match t.daemon {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }),
                Cell::from(loops.get(&t.tid).cloned().unwrap_or_default()),
            ])
        },
    );
    if stack_rows > 0 {
        let lines: Vec<Line> = stack
            .iter()
            .rev()
            .map(|f| Line::raw(style::fit(f, area.width as usize)))
            .collect();
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title("Stack (innermost first)")),
            stack_area,
        );
    }
}
