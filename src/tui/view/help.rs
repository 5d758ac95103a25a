//! The `?` overlay: every key.

use super::style::Theme;
use ratatui::{
    Frame,
    layout::{Constraint, Flex, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
};

/// The keys besides the views' own (`input` maps them).
const KEYS: &[(&str, &str)] = &[
    ("tab / shift-tab", "next / previous view"),
    ("j k  ↓ ↑  pgdn pgup", "move the selection"),
    ("home / end", "first / last row"),
    ("h l  ← →", "Tasks: sort column (elsewhere: switch view)"),
    ("i", "Tasks: invert the sort"),
    ("T", "Tasks: parent tree on/off"),
    ("/", "Tasks: filter (enter keeps it, esc clears it)"),
    (
        "enter",
        "details · drill into a child · log line to its task",
    ),
    ("g", "from a task or thread: its log lines"),
    ("esc", "back: close details, clear filter, leave a child"),
    ("space", "pause / resume"),
    (", .  [ ]", "replay: step back / forward by 1 / by 10"),
    ("?", "this help"),
    ("q / ctrl-c", "quit"),
];

/// The key table the help overlay shows: the views' keys from the registry, then the rest.
pub fn keys() -> Vec<(String, String)> {
    let views = super::VIEWS;
    let letters: Vec<String> = views.iter().map(|v| v.letter.to_string()).collect();
    let names: Vec<&str> = views.iter().map(|v| v.key_name).collect();
    let mut out = vec![(
        format!("1-{} / {}", views.len(), letters.join(" ")),
        names.join(" "),
    )];
    out.extend(KEYS.iter().map(|(k, w)| (k.to_string(), w.to_string())));
    out
}

pub fn render(frame: &mut Frame, area: Rect, theme: Theme) {
    let keys = keys();
    let width = area.width.min(78);
    let height = (keys.len() as u16 + 2).min(area.height);
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    let lines: Vec<Line> = keys
        .into_iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:<21}"), theme.accent()),
                Span::raw(what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("Keys — esc or ? closes")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_views_line_follows_the_registry() {
        let keys = super::keys();
        assert_eq!(
            keys[0],
            (
                "1-7 / o t r p s g f".to_string(),
                "Overview Tasks thReads Processes Sockets loGs Findings".to_string()
            ),
            "the line README.md shows"
        );
        assert_eq!(keys.len(), super::KEYS.len() + 1);
        // Every view is reached by its letter, and no two views share one.
        let mut letters: Vec<char> = super::super::VIEWS.iter().map(|v| v.letter).collect();
        letters.sort();
        letters.dedup();
        assert_eq!(letters.len(), super::super::VIEWS.len());
        assert!(
            crate::tui::state::ViewKind::ALL
                .iter()
                .all(|v| v.spec().kind == *v)
        );
    }
}
