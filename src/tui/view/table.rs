//! A table that builds rows only for what fits on screen: the list behind it may hold
//! 100,000 entries.

use crate::tui::state::Cursor;
use crate::tui::view::style::Theme;
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    text::Line,
    widgets::{Block, Row, Table},
};

pub struct TableSpec<'a> {
    pub title: Line<'a>,
    pub header: Vec<String>,
    pub widths: Vec<Constraint>,
    pub len: usize,
    pub theme: Theme,
    /// Highlight the selected row.
    pub focused: bool,
}

pub fn draw<'a>(
    frame: &mut Frame,
    area: Rect,
    spec: TableSpec<'a>,
    cursor: &mut Cursor,
    mut row: impl FnMut(usize) -> Row<'a>,
) {
    let block = Block::bordered().title(spec.title).title_bottom(
        Line::from(if spec.len == 0 {
            " empty ".to_string()
        } else {
            format!(" {}/{} ", cursor.selected.min(spec.len - 1) + 1, spec.len)
        })
        .right_aligned(),
    );
    let inner_height = block.inner(area).height.saturating_sub(1) as usize;
    let window = cursor.window(inner_height, spec.len);
    let selected = cursor.selected;
    let rows: Vec<Row> = window
        .map(|i| {
            let r = row(i);
            if spec.focused && i == selected {
                r.style(spec.theme.selected())
            } else {
                r
            }
        })
        .collect();
    let header = Row::new(spec.header).style(spec.theme.header());
    let table = Table::new(rows, spec.widths)
        .header(header)
        .block(block)
        .column_spacing(1);
    frame.render_widget(table, area);
}
