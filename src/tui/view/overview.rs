//! Health at a glance: the process, descriptors against the limit with a forecast, sockets
//! by state, loop lag, pools, and the findings, worst first.

use super::ViewSpec;
use super::style::{self, Theme, severity_label};
use super::table::{self, TableSpec};
use crate::model::{ProcState, Snapshot, SocketState, TaskState};
use crate::tui::state::{Effect, State, ViewKind};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline},
};
use std::collections::BTreeMap;

pub(super) const VIEW: ViewSpec = ViewSpec {
    kind: ViewKind::Overview,
    title: "Overview",
    short_title: "Overview",
    letter: 'o',
    key_name: "Overview",
    render,
    rows: |state| state.findings.len(),
    enter: open_in_findings,
};

/// The selected finding, opened in the Findings view.
fn open_in_findings(state: &mut State) -> Option<Effect> {
    let sel = state.selected(ViewKind::Overview);
    state.view = ViewKind::Findings;
    state.cursor(ViewKind::Findings).selected = sel;
    super::findings::open_detail(state)
}

pub fn render(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    let Some(snapshot) = state.snapshot.as_ref() else {
        super::placeholder(
            frame,
            area,
            "Overview",
            vec![Line::from(
                state
                    .status
                    .clone()
                    .unwrap_or_else(|| "waiting for the first sample…".into()),
            )],
        );
        return;
    };
    let [top, lag, rest] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Fill(1),
    ])
    .areas(area);
    let [proc_area, fd_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    frame.render_widget(process_box(snapshot, theme), proc_area);
    render_fds(frame, fd_area, state, snapshot, theme);
    render_lag(frame, lag, state, snapshot, theme);
    render_findings(frame, rest, state, theme);
}

fn process_box(s: &Snapshot, theme: Theme) -> Paragraph<'static> {
    let mut lines = Vec::new();
    match &s.process {
        Some(p) => {
            lines.push(Line::from(vec![
                Span::styled(format!("{} ", p.name), theme.accent()),
                Span::raw(format!("pid {}  {}", p.pid, p.state.as_str())),
            ]));
            lines.push(Line::styled(format!("cmd {}", p.cmd), theme.dim()));
            lines.push(Line::raw(format!(
                "rss {}  cpu {}",
                // The report's sizes, so the dashboard and the reports say the same (MiB).
                crate::report::text::bytes(p.rss_bytes),
                style::duration(p.cpu_time_ms)
            )));
        }
        None => lines.push(Line::raw(format!("{} (no OS view)", s.source))),
    }
    let tasks = s.tasks();
    let running = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count();
    let stuck = tasks.iter().filter(|t| t.lost_waker).count();
    let mut task_line = vec![Span::raw(format!("tasks {}", tasks.len()))];
    if s.probe.is_some() {
        task_line.push(Span::raw(format!(" ({running} running)")));
        if stuck > 0 {
            task_line.push(Span::styled(format!(" {stuck} lost waker"), theme.bad()));
        }
    } else {
        task_line.push(Span::styled(" (no probe)", theme.dim()));
    }
    task_line.push(Span::raw(format!("   threads {}", s.threads.len())));
    lines.push(Line::from(task_line));
    let zombies = s
        .children
        .iter()
        .filter(|c| c.state == ProcState::Zombie)
        .count();
    let mut child_line = vec![Span::raw(format!("children {}", s.children.len()))];
    if zombies > 0 {
        child_line.push(Span::styled(format!(" ({zombies} zombie)"), theme.bad()));
    }
    lines.push(Line::from(child_line));
    Paragraph::new(lines).block(Block::bordered().title("Process"))
}

fn render_fds(frame: &mut Frame, area: Rect, state: &State, s: &Snapshot, theme: Theme) {
    let block = Block::bordered().title("Descriptors");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [gauge_area, text_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    let open = s.fds.open;
    let (ratio, label) = match s.fds.soft_limit {
        Some(limit) if limit > 0 => {
            let r = (open as f64 / limit as f64).clamp(0.0, 1.0);
            (r, format!("{open} / {limit} ({:.0}%)", r * 100.0))
        }
        _ => (0.0, format!("{open} open (no limit)")),
    };
    let gauge_style = if ratio >= 0.8 {
        theme.bad()
    } else if ratio >= 0.5 {
        theme.warn()
    } else {
        theme.good()
    };
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(label)
            .gauge_style(gauge_style),
        gauge_area,
    );
    let mut lines = Vec::new();
    lines.push(match state.fd_forecast() {
        Some((rate, Some(eta))) if rate > 0.0 => Line::styled(
            format!(
                "trend +{rate:.1}/s: limit in ~{}",
                style::duration((eta * 1000.0) as u64)
            ),
            if eta < 600.0 {
                theme.bad()
            } else {
                theme.warn()
            },
        ),
        Some((rate, _)) if rate.abs() >= 0.05 => Line::raw(format!("trend {rate:+.1}/s")),
        Some(_) => Line::styled("trend steady", theme.good()),
        None => Line::styled("trend: needs 3 samples", theme.dim()),
    });
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for sock in &s.sockets {
        *by_state.entry(sock.state.as_str()).or_default() += 1;
    }
    let mut spans = vec![Span::raw(format!("sockets {}", s.sockets.len()))];
    for (st, n) in by_state {
        spans.push(Span::raw(" "));
        let style = if st == SocketState::CloseWait.as_str() {
            theme.bad()
        } else {
            theme.dim()
        };
        spans.push(Span::styled(format!("{st} {n}"), style));
    }
    lines.push(Line::from(spans));
    let kinds: Vec<String> = s
        .fds
        .by_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", k.as_str()))
        .collect();
    lines.push(Line::styled(kinds.join(" "), theme.dim()));
    frame.render_widget(Paragraph::new(lines), text_area);
}

fn render_lag(frame: &mut Frame, area: Rect, state: &State, s: &Snapshot, theme: Theme) {
    let block = Block::bordered().title("Event loop lag & pools");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(probe) = s.probe.as_ref() else {
        let lines = vec![
            Line::styled("no probe: tasks, loop lag and pools need one.", theme.dim()),
            Line::styled(
                "Python: leakhound run -- python3 app.py   Rust: leakhound_probe::init()",
                theme.dim(),
            ),
        ];
        frame.render_widget(Paragraph::new(lines), inner);
        return;
    };
    let [spark_area, text_area] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(inner);
    let worst = probe
        .loops
        .iter()
        .max_by(|a, b| a.lag.p99_ms.total_cmp(&b.lag.p99_ms));
    // Tenths of a millisecond, so sub-millisecond lag still draws.
    let data: Vec<u64> = match worst {
        Some(l) if !l.lag_history_ms.is_empty() => l
            .lag_history_ms
            .iter()
            .map(|v| (*v * 10.0) as u64)
            .collect(),
        _ => state
            .series
            .lag_p99_ms
            .values()
            .map(|v| (v * 10.0) as u64)
            .collect(),
    };
    let keep = spark_area.width as usize;
    let data = &data[data.len().saturating_sub(keep)..];
    frame.render_widget(
        Sparkline::default().data(data).style(theme.warn()),
        spark_area,
    );
    let mut lines = Vec::new();
    match worst {
        Some(l) => lines.push(Line::from(vec![
            Span::raw(format!("loop {} ", l.id)),
            Span::styled(
                format!("p99 {:.0}ms", l.lag.p99_ms),
                if l.lag.p99_ms >= 100.0 {
                    theme.bad()
                } else {
                    theme.good()
                },
            ),
            Span::raw(format!(
                " p50 {:.0}ms max {:.0}ms",
                l.lag.p50_ms, l.lag.max_ms
            )),
        ])),
        None => lines.push(Line::styled("no event loop reported", theme.dim())),
    }
    for pool in probe.pools.iter().take(2) {
        let saturated = pool.queued > 0 && pool.busy_workers >= pool.live_workers.max(1);
        lines.push(Line::styled(
            format!(
                "{} {}: {}/{} busy, {} queued",
                pool.kind, pool.name, pool.busy_workers, pool.max_workers, pool.queued
            ),
            if saturated { theme.bad() } else { theme.dim() },
        ));
    }
    frame.render_widget(Paragraph::new(lines), text_area);
}

fn render_findings(frame: &mut Frame, area: Rect, state: &mut State, theme: Theme) {
    let findings = std::mem::take(&mut state.findings);
    let spec = TableSpec {
        title: Line::from(format!(
            "Findings ({}), worst first — enter for details",
            findings.len()
        )),
        header: vec![
            "SEV".into(),
            "RULE".into(),
            "SUBJECT".into(),
            "MESSAGE".into(),
        ],
        widths: vec![
            Constraint::Length(5),
            Constraint::Length(17),
            Constraint::Length(18),
            Constraint::Fill(1),
        ],
        len: findings.len(),
        theme,
        focused: true,
    };
    table::draw(frame, area, spec, state.cursor(ViewKind::Overview), |i| {
        let f = &findings[i];
        Row::new(vec![
            Cell::from(severity_label(f.severity)).style(theme.severity(f.severity)),
            Cell::from(f.rule.clone()),
            Cell::from(f.subject.clone()),
            Cell::from(f.message.clone()),
        ])
    });
    state.findings = findings;
}
