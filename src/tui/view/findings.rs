//! Findings: the list, worst first, and the selected one's evidence (numbers, stack,
//! creation site), scrollable after enter.

use super::ViewSpec;
use super::style::{Theme, severity_label};
use super::table::{self, TableSpec};
use crate::findings::Finding;
use crate::tui::state::{Effect, State, ViewKind};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Wrap},
};

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Findings,
    title: "Findings",
    short_title: "Findings",
    letter: 'f',
    key_name: "Findings",
    render,
    rows: |state| state.findings.len() + state.resolved.len(),
    enter: open_detail,
};

/// Opens the selected finding's evidence.
pub(super) fn open_detail(state: &mut State) -> Option<Effect> {
    state.findings_pane.open();
    None
}

pub fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    if state.findings.is_empty() && state.resolved.is_empty() {
        super::placeholder(
            frame,
            area,
            "Findings",
            vec![Line::styled("Nothing found so far.", theme.good())],
        );
        return;
    }
    let list_rows = ((state.findings.len() + state.resolved.len()) as u16 + 3)
        .min(area.height / 2)
        .max(5);
    let [list_area, detail_area] =
        Layout::vertical([Constraint::Length(list_rows), Constraint::Fill(1)]).areas(area);
    let findings = std::mem::take(&mut state.findings);
    let resolved = std::mem::take(&mut state.resolved);
    let live = findings.len();
    let total = live + resolved.len();
    let get = |i: usize| {
        if i < live {
            &findings[i]
        } else {
            &resolved[i - live]
        }
    };
    let spec = TableSpec {
        title: Line::from(if resolved.is_empty() {
            format!("Findings ({live})")
        } else {
            format!("Findings ({live} firing, {} quiet now)", resolved.len())
        }),
        header: ["SEV", "RULE", "SUBJECT", "MESSAGE"]
            .map(String::from)
            .to_vec(),
        widths: vec![
            Constraint::Length(5),
            Constraint::Length(17),
            Constraint::Length(22),
            Constraint::Fill(1),
        ],
        len: total,
        theme,
        focused: !state.findings_pane.detail,
    };
    table::draw(
        frame,
        list_area,
        spec,
        state.cursor(ViewKind::Findings),
        |i| {
            let f = get(i);
            if i >= live {
                return Row::new(vec![
                    Cell::from("was"),
                    Cell::from(f.rule.clone()),
                    Cell::from(f.subject.clone()),
                    Cell::from(f.message.clone()),
                ])
                .style(theme.dim());
            }
            Row::new(vec![
                Cell::from(severity_label(f.severity)).style(theme.severity(f.severity)),
                Cell::from(f.rule.clone()),
                Cell::from(f.subject.clone()),
                Cell::from(f.message.clone()),
            ])
        },
    );
    let selected = state.selected(ViewKind::Findings).min(total - 1);
    let title = if state.findings_pane.detail {
        "Evidence — j/k scroll, esc back"
    } else {
        "Evidence — enter to scroll"
    };
    let mut lines = evidence_lines(get(selected), theme);
    if selected >= live {
        lines.insert(
            0,
            Line::styled("fired earlier, quiet now (last evidence):", theme.dim()),
        );
    }
    let detail = Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .wrap(Wrap { trim: false })
        .scroll((state.findings_pane.scroll, 0));
    frame.render_widget(detail, detail_area);
    state.findings = findings;
    state.resolved = resolved;
}

/// The finding's evidence, one key per line; lists (stacks, sites) one entry per line.
pub fn evidence_lines(f: &Finding, theme: Theme) -> Vec<Line<'static>> {
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                format!("{} ", severity_label(f.severity)),
                theme.severity(f.severity),
            ),
            Span::styled(format!("{} ", f.rule), theme.accent()),
            Span::raw(f.subject.clone()),
        ]),
        Line::raw(f.message.clone()),
        Line::raw(""),
    ];
    for (key, value) in &f.all_evidence() {
        match value {
            serde_json::Value::Array(items) => {
                lines.push(Line::styled(format!("{key}:"), theme.header()));
                for item in items {
                    let text = item
                        .as_str()
                        .map_or_else(|| item.to_string(), str::to_string);
                    lines.push(Line::raw(format!("  {text}")));
                }
            }
            serde_json::Value::String(text) => lines.push(Line::from(vec![
                Span::styled(format!("{key}: "), theme.header()),
                Span::raw(text.clone()),
            ])),
            other => lines.push(Line::from(vec![
                Span::styled(format!("{key}: "), theme.header()),
                Span::raw(other.to_string()),
            ])),
        }
    }
    lines
}
