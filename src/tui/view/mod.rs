//! Rendering: a pure function of `State` (plus the cursors it scrolls). One module per view,
//! each defining its [`ViewSpec`]; [`VIEWS`] lists them. Adding a view is its file and one
//! line there (and its name in `state::ViewKind`): tabs, number and letter keys, the help
//! line, moving the selection and enter all follow from the registry.

mod files;
mod findings;
mod help;
mod logs;
mod overview;
mod processes;
pub mod style;
mod table;
mod tasks;
mod threads;

use crate::tui::state::{Effect, State, ViewKind, Views};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Modifier,
    text::{Line, Span},
    widgets::{Paragraph, Tabs},
};
use style::Theme;

/// What the dashboard knows of one view. Each view's file defines its own as `VIEW`.
pub struct ViewSpec {
    pub kind: ViewKind,
    pub title: &'static str,
    /// The tab's name on a narrow terminal.
    pub short_title: &'static str,
    /// The letter that switches to it (besides its number).
    pub letter: char,
    /// Its name in the help line, the letter in capitals where it is not the first
    /// (`thReads`).
    pub key_name: &'static str,
    pub render: fn(&mut Frame, Rect, &mut State, Theme),
    /// How many rows its list has (where the selection can move).
    pub rows: fn(&mut State) -> usize,
    /// What enter does there.
    pub enter: fn(&mut State) -> Option<Effect>,
}

/// The registry: every view, in tab order (a view's number is its place here).
pub const VIEWS: &[ViewSpec] = &[
    overview::VIEW,
    tasks::VIEW,
    threads::VIEW,
    processes::VIEW,
    files::VIEW,
    logs::VIEW,
    findings::VIEW,
];

impl ViewKind {
    /// Every view, in tab order.
    pub const ALL: [ViewKind; VIEWS.len()] = {
        let mut all = [ViewKind::Overview; VIEWS.len()];
        let mut i = 0;
        while i < VIEWS.len() {
            all[i] = VIEWS[i].kind;
            i += 1;
        }
        all
    };

    pub fn spec(self) -> &'static ViewSpec {
        VIEWS
            .iter()
            .find(|v| v.kind == self)
            .expect("every ViewKind has its ViewSpec in VIEWS")
    }

    pub fn title(self) -> &'static str {
        self.spec().title
    }

    pub fn short_title(self) -> &'static str {
        self.spec().short_title
    }

    pub fn letter(self) -> char {
        self.spec().letter
    }

    /// Its place in the tabs, from 0.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// The registry as the state asks it.
pub struct Registry;

impl Views for Registry {
    fn rows(&self, view: ViewKind, state: &mut State) -> usize {
        (view.spec().rows)(state)
    }

    fn enter(&self, view: ViewKind, state: &mut State) -> Option<Effect> {
        (view.spec().enter)(state)
    }

    fn step(&self, view: ViewKind, step: isize) -> ViewKind {
        let n = VIEWS.len() as isize;
        ViewKind::ALL[(view.index() as isize + step).rem_euclid(n) as usize]
    }
}

/// The view that number key `digit` (1 for the first) shows.
pub fn numbered(digit: u32) -> Option<ViewKind> {
    let i = (digit as usize).checked_sub(1)?;
    ViewKind::ALL.get(i).copied()
}

/// Does nothing: what enter does in a view where it does nothing.
fn no_enter(_: &mut State) -> Option<Effect> {
    None
}

pub fn render(frame: &mut Frame, state: &mut State) {
    let theme = Theme { color: state.color };
    let banner = state.banner.is_some() as u16;
    let [tabs, banner_area, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_tabs(frame, tabs, state, theme);
    if let Some(text) = &state.banner {
        frame.render_widget(
            Paragraph::new(Line::from(text.as_str()).style(theme.warn())),
            banner_area,
        );
    }
    (state.view.spec().render)(frame, body, state, theme);
    render_status(frame, status, state, theme);
    if state.show_help {
        help::render(frame, body, theme);
    }
}

fn render_tabs(frame: &mut Frame, area: Rect, state: &State, theme: Theme) {
    let wide = area.width >= 100;
    let titles: Vec<Line> = ViewKind::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut title = if wide || *v == state.view {
                v.title().to_string()
            } else {
                // Narrow terminals: short names for the views not shown.
                v.short_title().to_string()
            };
            if *v == ViewKind::Findings && !state.findings.is_empty() {
                title = format!("{title}({})", state.findings.len());
            }
            Line::from(format!("{}:{title}", i + 1))
        })
        .collect();
    let tabs = Tabs::new(titles)
        .select(state.view.index())
        .highlight_style(
            theme
                .accent()
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )
        .padding("", "")
        .divider(" ");
    frame.render_widget(tabs, area);
}

fn render_status(frame: &mut Frame, area: Rect, state: &State, theme: Theme) {
    let sep = || Span::styled(" │ ", theme.dim());
    let mut spans = vec![Span::styled(
        if state.source.is_empty() {
            "waiting for the first sample…".to_string()
        } else {
            state.source.clone()
        },
        theme.accent(),
    )];
    // Errors first: the status line may be cut on a narrow terminal.
    if let Some(msg) = &state.status {
        spans.push(sep());
        spans.push(Span::styled(msg.clone(), theme.bad()));
    }
    if let Some(pos) = state.replay {
        spans.push(sep());
        spans.push(Span::raw(format!("replay {}/{}", pos.index + 1, pos.total)));
    } else if let Some(age) = state.sample_age_ms() {
        spans.push(sep());
        let text = format!("sample {} ago", style::duration(age));
        spans.push(if age > 5_000 {
            Span::styled(text, theme.warn())
        } else {
            Span::raw(text)
        });
    }
    if let Some(lag) = state
        .collector_lag_ms()
        .filter(|l| *l >= 1_000 && state.replay.is_none())
    {
        spans.push(sep());
        spans.push(Span::styled(
            format!("collector {} behind", style::duration(lag)),
            theme.warn(),
        ));
    }
    let dropped = state
        .snapshot
        .as_ref()
        .and_then(|s| s.probe.as_ref())
        .map(|p| p.dropped.clone());
    let mut lost = Vec::new();
    if let Some(d) = dropped {
        if d.events > 0 {
            lost.push(format!("{} probe events", d.events));
        }
        if d.tasks > 0 {
            lost.push(format!("{} tasks", d.tasks));
        }
    }
    if state.skipped_updates > 0 {
        lost.push(format!("{} samples", state.skipped_updates));
    }
    if state.logs.evicted > 0 {
        lost.push(format!("{} log lines", state.logs.evicted));
    }
    if !lost.is_empty() {
        spans.push(sep());
        spans.push(Span::styled(
            format!("dropped {}", lost.join(", ")),
            theme.warn(),
        ));
    }
    if state.paused {
        spans.push(sep());
        spans.push(Span::styled(
            "PAUSED",
            theme
                .warn()
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    spans.push(sep());
    spans.push(Span::styled("? help  q quit", theme.dim()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

type DrawFn = fn(&mut Frame, Rect, &mut State, &crate::model::Snapshot, Theme);

/// Draws a view that reads the snapshot while it changes the state (cursors, caches): the
/// snapshot is lent out of the state for the draw. Before the first sample: a placeholder.
pub(super) fn with_snapshot(
    frame: &mut Frame,
    area: Rect,
    state: &mut State,
    theme: Theme,
    title: &str,
    draw: DrawFn,
) {
    let Some(snapshot) = state.snapshot.take() else {
        placeholder(
            frame,
            area,
            title,
            vec![Line::from("waiting for the first sample…")],
        );
        return;
    };
    draw(frame, area, state, &snapshot, theme);
    state.snapshot = Some(snapshot);
}

/// A message in place of a view with nothing to show.
pub(crate) fn placeholder(frame: &mut Frame, area: Rect, title: &str, lines: Vec<Line>) {
    let p = Paragraph::new(lines)
        .block(ratatui::widgets::Block::bordered().title(title.to_string()))
        .wrap(ratatui::widgets::Wrap { trim: false });
    frame.render_widget(p, area);
}
