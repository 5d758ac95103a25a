//! Processes: the target and its descendants as a tree, zombies marked; enter drills into
//! a child (the feed switches to its pid), esc comes back.

use super::ViewSpec;
use super::style::{self, Theme};
use super::table::{self, TableSpec};
use crate::model::ProcState;
use crate::tui::event::Control;
use crate::tui::state::{Effect, State, ViewKind, process_rows};
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    text::{Line, Span},
    widgets::{Cell, Row},
};

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Processes,
    title: "Processes",
    short_title: "Procs",
    letter: 'p',
    key_name: "Processes",
    render,
    rows: // row 0 is the root process
    |state| 1 + state.snapshot.as_ref().map_or(0, |s| process_rows(s).len()),
    enter: drill_in,
};

fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    super::with_snapshot(frame, area, state, theme, VIEW.title, draw);
}

/// Drills into the selected child: the feed switches to its pid (esc comes back).
fn drill_in(state: &mut State) -> Option<Effect> {
    let sel = state.selected(ViewKind::Processes);
    if sel == 0 {
        return None;
    }
    let snapshot = state.snapshot.as_ref()?;
    let root = snapshot.pid;
    let child = process_rows(snapshot)
        .get(sel - 1)
        .map(|c| (c.pid, c.state));
    match child {
        Some((_, ProcState::Zombie)) => {
            state.set_status("a zombie has nothing to show: its parent must reap it".into())
        }
        Some((pid, _)) => {
            state.drill_stack.push(root);
            state.cursor(ViewKind::Processes).top();
            return Some(Effect::Control(Control::Retarget(pid)));
        }
        None => {}
    }
    None
}

pub(super) fn draw(
    frame: &mut Frame,
    area: Rect,
    state: &mut State,
    snapshot: &crate::model::Snapshot,
    theme: Theme,
) {
    let root = snapshot.process.as_ref();
    let rows = process_rows(snapshot);
    let mut title = vec![Span::raw(format!(
        "Processes ({} descendants) — enter: drill into a child",
        rows.len()
    ))];
    if let Some(back) = state.drill_stack.last() {
        title.push(Span::styled(
            format!(" · esc: back to pid {back}"),
            theme.accent(),
        ));
    }
    let spec = TableSpec {
        title: Line::from(title),
        header: ["PID", "PPID", "STATE", "AGE", "PROBE", "COMMAND"]
            .map(String::from)
            .to_vec(),
        widths: vec![
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Fill(1),
        ],
        len: rows.len() + 1,
        theme,
        focused: true,
    };
    let now = state.now_ms;
    table::draw(frame, area, spec, state.cursor(ViewKind::Processes), |i| {
        if i == 0 {
            return match &root {
                Some(p) => Row::new(vec![
                    Cell::from(p.pid.to_string()),
                    Cell::from(p.ppid.to_string()),
                    Cell::from(p.state.as_str()),
                    Cell::from(style::duration(now.saturating_sub(p.start_time_ms))),
                    Cell::from(""),
                    Cell::from(format!("{} (target)", p.cmd)),
                ])
                .style(theme.accent()),
                None => Row::new(vec![
                    Cell::from("-"),
                    Cell::from(""),
                    Cell::from(""),
                    Cell::from(""),
                    Cell::from(""),
                    Cell::from("(no OS view)"),
                ]),
            };
        }
        let c = &rows[i - 1];
        let zombie = c.state == ProcState::Zombie;
        let indent = "  ".repeat(c.depth.saturating_sub(1).min(8) as usize);
        Row::new(vec![
            Cell::from(c.pid.to_string()),
            Cell::from(c.ppid.to_string()),
            Cell::from(if zombie {
                "ZOMBIE".to_string()
            } else {
                c.state.as_str().to_string()
            })
            .style(if zombie { theme.bad() } else { theme.dim() }),
            Cell::from(style::duration(c.age_ms)),
            Cell::from(if c.has_probe { "yes" } else { "" }).style(theme.good()),
            Cell::from(format!("{indent}└ {}", c.cmd)),
        ])
    });
}
