//! Logs (under `leakhound run`): the program's output with the tid/task ids it carries.
//! Enter on a line jumps to its task or thread; from a task, `g` comes here filtered to it.

use super::ViewSpec;
use super::style::Theme;
use super::table::{self, TableSpec};
use crate::tui::event::Stream;
use crate::tui::state::{LogFilter, State, ViewKind};
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    text::{Line, Span},
    widgets::{Cell, Row},
};

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Logs,
    title: "Logs",
    short_title: "Logs",
    letter: 'g',
    key_name: "loGs",
    render,
    rows: |state| state.log_rows().len(),
    enter: |state| {
        state.jump_from_log();
        None
    },
};

pub fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    if !state.logs.capturing && state.logs.is_empty() {
        super::placeholder(
            frame,
            area,
            "Logs",
            vec![
                Line::from("Log lines are captured when leakhound starts the program:"),
                Line::from(""),
                Line::styled("  leakhound run -- python3 app.py", theme.accent()),
                Line::from(""),
                Line::from(
                    "Lines carrying tid=<thread id> or task=<task id> link to the Threads and Tasks views.",
                ),
            ],
        );
        return;
    }
    let rows = state.log_rows();
    let mut title = vec![Span::raw(format!("Logs ({} lines)", rows.len()))];
    match &state.logs.filter {
        Some(LogFilter::Task(t)) => title.push(Span::styled(
            format!(" of task {t} · esc: all"),
            theme.accent(),
        )),
        Some(LogFilter::Tid(t)) => title.push(Span::styled(
            format!(" of thread {t} · esc: all"),
            theme.accent(),
        )),
        None => title.push(Span::styled(
            " — enter: go to the line's task/thread",
            theme.dim(),
        )),
    }
    let spec = TableSpec {
        title: Line::from(title),
        header: ["", "TID", "TASK", "LINE"].map(String::from).to_vec(),
        widths: vec![
            Constraint::Length(1),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Fill(1),
        ],
        len: rows.len(),
        theme,
        focused: true,
    };
    let mut c = *state.cursor(ViewKind::Logs);
    table::draw(frame, area, spec, &mut c, |i| {
        let line = state.logs.get(rows[i]).expect("index from matching()");
        let marker = match line.stream {
            Stream::Stderr => Cell::from("!").style(theme.warn()),
            Stream::Stdout => Cell::from(" "),
        };
        Row::new(vec![
            marker,
            Cell::from(line.tid.map_or(String::new(), |t| t.to_string())).style(theme.dim()),
            Cell::from(line.task.clone().unwrap_or_default()).style(theme.accent()),
            Cell::from(line.text.clone()),
        ])
    });
    *state.cursor(ViewKind::Logs) = c;
}
