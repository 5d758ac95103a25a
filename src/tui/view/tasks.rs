//! Tasks: id, name, state, age, time since progress, polls, where it waits; sort by any
//! column (h/l, i inverts), filter with `/`, parent tree with `T`. Only visible rows are built.

use super::ViewSpec;
use super::style::{self, Theme};
use super::table::{self, TableSpec};
use crate::model::{Task, TaskState};
use crate::tui::state::tasks::{location, short_frame, state_name};
use crate::tui::state::{InputMode, State, TaskColumn, ViewKind};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Wrap},
};

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Tasks,
    title: "Tasks",
    short_title: "Tasks",
    letter: 't',
    key_name: "Tasks",
    render,
    rows: |state| {
        let tasks = state.snapshot.as_ref().map_or(&[][..], |s| s.tasks());
        state.tasks.len(tasks)
    },
    enter: |state| {
        state.tasks.detail = !state.tasks.detail;
        None
    },
};

fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    super::with_snapshot(frame, area, state, theme, VIEW.title, draw);
}

pub(super) fn draw(
    frame: &mut Frame,
    area: Rect,
    state: &mut State,
    snapshot: &crate::model::Snapshot,
    theme: Theme,
) {
    let Some(probe) = snapshot.probe.as_ref() else {
        let mut lines = vec![
            Line::from("No task data: this target has no probe loaded."),
            Line::from(""),
            Line::from(
                "Python:  leakhound run -- python3 app.py   (or: import leakhound_probe; leakhound_probe.install())",
            ),
            Line::from(
                "Rust:    leakhound_probe::init() in main, or attach to a console-subscriber: leakhound attach http://127.0.0.1:6669",
            ),
        ];
        lines.extend(
            snapshot
                .notes
                .iter()
                .map(|n| Line::styled(n.clone(), theme.dim())),
        );
        super::placeholder(frame, area, "Tasks", lines);
        return;
    };
    let tasks = probe.tasks.as_slice();
    let filtering = matches!(state.input, InputMode::Filter(_)) || !state.tasks.filter.is_empty();
    let detail_rows = if state.tasks.detail { 9 } else { 0 };
    let [filter_area, table_area, detail_area] = Layout::vertical([
        Constraint::Length(filtering as u16),
        Constraint::Fill(1),
        Constraint::Length(detail_rows),
    ])
    .areas(area);
    let sort = state.tasks.sort;
    let arrow = if state.tasks.descending { "▼" } else { "▲" };
    let header: Vec<String> = TaskColumn::ALL
        .iter()
        .map(|c| {
            if *c == sort && !state.tasks.tree {
                format!("{}{arrow}", c.title())
            } else {
                c.title().to_string()
            }
        })
        .collect();
    let len = state.tasks.len(tasks);
    // Only the rows that can be on screen need to be in order.
    let cursor_now = *state.cursor(ViewKind::Tasks);
    let need = cursor_now.selected.max(cursor_now.offset) + area.height as usize + 1;
    state.tasks.order_upto(tasks, need);
    if filtering {
        let editing = matches!(state.input, InputMode::Filter(_));
        let line = Line::from(vec![
            Span::styled("/", theme.accent()),
            Span::raw(state.tasks.filter.clone()),
            Span::styled(if editing { "█" } else { "" }, theme.accent()),
            Span::styled(
                format!(
                    "   {len} of {} tasks match{}",
                    tasks.len(),
                    if editing {
                        " — enter keeps, esc clears"
                    } else {
                        ""
                    }
                ),
                theme.dim(),
            ),
        ]);
        frame.render_widget(Paragraph::new(line), filter_area);
    }
    let mut title = vec![Span::raw(format!("Tasks ({}) ", tasks.len()))];
    if state.tasks.tree {
        title.push(Span::styled("tree ", theme.accent()));
    }
    title.push(Span::styled(
        "h/l sort · i invert · / filter · T tree · g logs",
        theme.dim(),
    ));
    if probe.dropped.tasks > 0 {
        title.push(Span::styled(
            format!(" · {} not sent (size cap)", probe.dropped.tasks),
            theme.warn(),
        ));
    }
    // Python task ids are names (`wait_for_config`); tokio's are numbers.
    let id_width = tasks
        .iter()
        .take(1000)
        .map(|t| t.id.chars().count())
        .max()
        .unwrap_or(2)
        .clamp(4, 18) as u16;
    let spec = TableSpec {
        title: Line::from(title),
        header,
        widths: vec![
            Constraint::Length(id_width),
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Fill(1),
        ],
        len,
        theme,
        focused: true,
    };
    let mut cursor = *state.cursor(ViewKind::Tasks);
    let table_state = &state.tasks;
    // order() ran above, so the cached order is fresh.
    let order = table_state.cached_order();
    table::draw(frame, table_area, spec, &mut cursor, |row| {
        let task = &tasks[order[row] as usize];
        let depth = table_state.depth(row) as usize;
        task_row(task, depth, theme)
    });
    *state.cursor(ViewKind::Tasks) = cursor;
    if state.tasks.detail
        && let Some(i) = state
            .tasks
            .order_upto(tasks, cursor.selected + 1)
            .get(cursor.selected)
    {
        frame.render_widget(detail(&tasks[*i as usize], theme), detail_area);
    }
}

fn task_row(task: &Task, depth: usize, theme: Theme) -> Row<'static> {
    let state_style = match task.state {
        TaskState::Running => theme.good(),
        TaskState::Scheduled => theme.accent(),
        TaskState::Idle => theme.dim(),
        TaskState::Done => theme.dim(),
    };
    let mut name = String::new();
    if depth > 0 {
        name.push_str(&"  ".repeat(depth.min(8) - 1));
        name.push_str("└ ");
    }
    name.push_str(task.label());
    let since = Cell::from(style::duration(task.since_progress_ms));
    let since = if task.since_progress_ms >= 10_000 {
        since.style(theme.warn())
    } else {
        since
    };
    let mut state_text = state_name(task.state).to_string();
    if task.lost_waker {
        state_text = "LOST WAKER".into();
    }
    Row::new(vec![
        Cell::from(task.id.clone()),
        Cell::from(name),
        Cell::from(state_text).style(if task.lost_waker {
            theme.bad()
        } else {
            state_style
        }),
        Cell::from(style::duration(task.age_ms)),
        since,
        Cell::from(task.polls.map_or("-".into(), |p| p.to_string())),
        Cell::from(short_frame(location(task))),
    ])
}

fn detail(task: &Task, theme: Theme) -> Paragraph<'static> {
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("task {} ", task.id), theme.accent()),
        Span::raw(format!("{} ({})", task.label(), task.kind)),
    ])];
    let mut facts = Vec::new();
    if let Some(p) = &task.parent {
        facts.push(format!("parent {p}"));
    }
    if let Some(w) = &task.waiting_on {
        facts.push(format!("waiting on {w}"));
    }
    if let Some(l) = &task.loop_id {
        facts.push(format!("loop {l}"));
    }
    if let Some(b) = task.busy_ms {
        facts.push(format!("busy {}", style::duration(b)));
    }
    if !facts.is_empty() {
        lines.push(Line::raw(facts.join("  ")));
    }
    if let Some(s) = &task.spawn_location {
        lines.push(Line::raw(format!("spawned at {s}")));
    }
    if !task.await_chain.is_empty() {
        lines.push(Line::styled("await chain (innermost last):", theme.dim()));
        lines.extend(task.await_chain.iter().map(|f| Line::raw(format!("  {f}"))));
    }
    Paragraph::new(lines)
        .block(Block::bordered().title("Task detail (enter/esc closes)"))
        .wrap(Wrap { trim: false })
}
