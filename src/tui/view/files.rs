//! Files & sockets: descriptors by kind against the limit, and every socket with its state,
//! CLOSE_WAIT first and marked.

use super::ViewSpec;
use super::style::Theme;
use super::table::{self, TableSpec};
use crate::model::{Proto, SocketState};
use crate::tui::state::{State, ViewKind, socket_order};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row},
};

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Files,
    title: "Files & sockets",
    short_title: "Files",
    letter: 's',
    key_name: "Sockets",
    render,
    rows: |state| state.snapshot.as_ref().map_or(0, |s| s.sockets.len()),
    enter: super::no_enter,
};

fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    super::with_snapshot(frame, area, state, theme, VIEW.title, draw);
}

pub(super) fn draw(
    frame: &mut Frame,
    area: Rect,
    state: &mut State,
    s: &crate::model::Snapshot,
    theme: Theme,
) {
    let order = socket_order(s);
    // Under 100 columns the addresses get the room: no receive queue, a narrower side panel.
    let narrow = area.width < 100;
    let [kinds_area, sockets_area] = Layout::horizontal([
        Constraint::Length(if narrow { 20 } else { 24 }),
        Constraint::Fill(1),
    ])
    .areas(area);
    let mut lines = vec![Line::from(vec![
        Span::raw(format!("open {}", s.fds.open)),
        Span::styled(
            s.fds
                .soft_limit
                .map_or(String::new(), |l| format!(" / {l}")),
            theme.dim(),
        ),
    ])];
    if let Some(h) = s.fds.hard_limit {
        lines.push(Line::styled(format!("hard limit {h}"), theme.dim()));
    }
    lines.push(Line::raw(""));
    for (kind, n) in &s.fds.by_kind {
        lines.push(Line::raw(format!("{:<9}{n:>6}", kind.as_str())));
    }
    if s.fds.by_kind.is_empty() {
        lines.push(Line::styled("kinds unreadable", theme.dim()));
    }
    let close_wait = s.sockets_in_state(SocketState::CloseWait);
    if close_wait > 0 {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!("{close_wait} in CLOSE_WAIT"),
            theme.bad(),
        ));
        lines.push(Line::styled("peer closed; this", theme.dim()));
        lines.push(Line::styled("side never did", theme.dim()));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("Descriptors")),
        kinds_area,
    );
    let mut header: Vec<String> = ["PROTO", "LOCAL", "REMOTE", "STATE", "FD"]
        .map(String::from)
        .to_vec();
    let mut widths = vec![
        Constraint::Length(5),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(11),
        Constraint::Length(4),
    ];
    if !narrow {
        header.push("RECV-Q".into());
        widths.push(Constraint::Length(6));
    }
    let spec = TableSpec {
        title: Line::from(format!("Sockets ({})", s.sockets.len())),
        header,
        widths,
        len: order.len(),
        theme,
        focused: true,
    };
    let sockets = &s.sockets;
    table::draw(
        frame,
        sockets_area,
        spec,
        state.cursor(ViewKind::Files),
        |row| {
            let sock = &sockets[order[row]];
            let state_cell = Cell::from(sock.state.as_str());
            let state_cell = if sock.state == SocketState::CloseWait {
                state_cell.style(theme.bad())
            } else {
                state_cell
            };
            Row::new(vec![
                Cell::from(match sock.proto {
                    Proto::Tcp => "tcp",
                    Proto::Tcp6 => "tcp6",
                    Proto::Udp => "udp",
                    Proto::Udp6 => "udp6",
                    Proto::Unix => "unix",
                }),
                Cell::from(sock.local.clone()),
                Cell::from(sock.remote.clone()),
                state_cell,
                Cell::from(sock.fd.map_or("-".into(), |f| f.to_string())),
                Cell::from(sock.rx_queue.to_string()),
            ])
        },
    );
}
