//! Human tables for snapshots and one-line findings.

use crate::findings::Finding;
use crate::model::{FdKind, Snapshot};
use std::fmt::Write;

/// Control characters (a `comm` may hold a newline) escaped so one item stays on one line.
pub fn clean(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    } else {
        text.to_string()
    }
}

/// `1.5s`, `3m20s`, `2h05m`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        if s < 60 {
            format!("{s}s")
        } else {
            format!("{}m{:02}s", s / 60, s % 60)
        }
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One line per finding: `warning fd-exhaustion pid:42 — message`.
pub fn finding_line(f: &Finding) -> String {
    format!(
        "{:<7} {:<16} {:<14} {}",
        f.severity.as_str(),
        f.rule,
        clean(&f.subject),
        clean(&f.message)
    )
}

/// The whole snapshot as tables, then findings and notes.
pub fn snapshot(s: &Snapshot, findings: &[Finding]) -> String {
    let mut out = String::new();
    let o = &mut out;
    if let Some(p) = &s.process {
        let _ = writeln!(
            o,
            "pid {}  ppid {}  uid {}  {}  up {}  rss {}  cpu {}",
            p.pid,
            p.ppid,
            p.uid,
            p.state.as_str(),
            duration_ms(s.taken_at_ms.saturating_sub(p.start_time_ms)),
            bytes(p.rss_bytes),
            duration_ms(p.cpu_time_ms)
        );
        let _ = writeln!(o, "cmd  {}", clean(&p.cmd));
    } else {
        let _ = writeln!(o, "source {}", s.source);
    }

    let _ = writeln!(o, "\nTHREADS ({})", s.threads.len());
    if !s.threads.is_empty() {
        let _ = writeln!(
            o,
            "  {:>8}  {:<26} {:<11} {:>8}  WCHAN",
            "TID", "NAME", "STATE", "CPU"
        );
        for t in &s.threads {
            let _ = writeln!(
                o,
                "  {:>8}  {:<26} {:<11} {:>8}  {}",
                t.tid,
                // A probe's name is the runtime's own (not cut to 15 bytes); `*` = daemon.
                clean(&match (&t.runtime_name, t.daemon) {
                    (Some(n), Some(true)) => format!("{n}*"),
                    (Some(n), _) => n.clone(),
                    (None, _) => t.name.clone(),
                }),
                t.state.as_str(),
                duration_ms(t.cpu_time_ms),
                t.wchan.as_deref().unwrap_or("-")
            );
            if let Some(py) = &t.py_stack {
                python_stack(o, py);
            }
        }
    }

    let _ = writeln!(o, "\nDESCENDANTS ({})", s.children.len());
    if !s.children.is_empty() {
        let _ = writeln!(
            o,
            "  {:>8} {:>8} {:>5}  {:<11} {:>8}  CMD",
            "PID", "PPID", "DEPTH", "STATE", "AGE"
        );
        for c in &s.children {
            let _ = writeln!(
                o,
                "  {:>8} {:>8} {:>5}  {:<11} {:>8}  {}",
                c.pid,
                c.ppid,
                c.depth,
                c.state.as_str(),
                duration_ms(c.age_ms),
                clean(&c.cmd)
            );
        }
    }

    let limit = |l: Option<u64>| l.map_or("unlimited".to_string(), |v| v.to_string());
    let _ = write!(
        o,
        "\nDESCRIPTORS  open {}  soft limit {}  hard limit {}",
        s.fds.open,
        limit(s.fds.soft_limit),
        limit(s.fds.hard_limit)
    );
    if let Some(soft) = s.fds.soft_limit.filter(|&l| l > 0) {
        let _ = write!(
            o,
            "  ({:.0}% of soft)",
            s.fds.open as f64 * 100.0 / soft as f64
        );
    }
    let _ = writeln!(o);
    let kinds: Vec<String> = FdKind::ALL
        .iter()
        .filter_map(|k| s.fds.by_kind.get(k).map(|n| format!("{} {n}", k.as_str())))
        .collect();
    if !kinds.is_empty() {
        let _ = writeln!(o, "  {}", kinds.join("  "));
    }
    if let Some(list) = &s.fd_list {
        let _ = writeln!(o, "  {:>6}  {:<8} TARGET", "FD", "KIND");
        for f in list {
            let _ = writeln!(
                o,
                "  {:>6}  {:<8} {}",
                f.fd,
                f.kind.as_str(),
                clean(&f.target)
            );
        }
    }

    let _ = writeln!(o, "\nSOCKETS ({})", s.sockets.len());
    if !s.sockets.is_empty() {
        let _ = writeln!(
            o,
            "  {:>6}  {:<5} {:<12} {:<28} REMOTE",
            "FD", "PROTO", "STATE", "LOCAL"
        );
        for k in &s.sockets {
            let proto = serde_json::to_value(k.proto).ok();
            let _ = writeln!(
                o,
                "  {:>6}  {:<5} {:<12} {:<28} {}",
                k.fd.map_or("-".into(), |f| f.to_string()),
                proto.as_ref().and_then(|v| v.as_str()).unwrap_or("?"),
                k.state,
                if k.local.is_empty() {
                    "-".into()
                } else {
                    clean(&k.local)
                },
                if k.remote.is_empty() { "-" } else { &k.remote }
            );
        }
    }

    if let Some(probe) = &s.probe {
        probe_section(o, probe);
    }

    let _ = writeln!(o, "\nFINDINGS ({})", findings.len());
    for f in findings {
        let _ = writeln!(o, "  {}", finding_line(f));
    }
    if !s.notes.is_empty() {
        let _ = writeln!(o, "\nNOTES");
        for n in &s.notes {
            let _ = writeln!(o, "  - {}", clean(n));
        }
    }
    out
}

/// Rows of each probe table shown; the JSON form has them all.
const PROBE_ROWS: usize = 15;

/// The in-process view: loops, the tasks waiting longest, pools, runtime children, events.
fn probe_section(o: &mut String, p: &crate::model::ProbeData) {
    let _ = writeln!(
        o,
        "\nPROBE  {} {}  probe {}  tasks {}  loops {}  pools {}  events {}",
        p.runtime,
        p.runtime_version,
        p.probe_version,
        p.tasks.len(),
        p.loops.len(),
        p.pools.len(),
        p.events.len()
    );
    if !p.loops.is_empty() {
        let _ = writeln!(o, "\nLOOPS ({})", p.loops.len());
        let _ = writeln!(
            o,
            "  {:<10} {:>8} {:>9} {:>9} {:>9}  STALLS",
            "ID", "TID", "LAG P50", "P99", "MAX"
        );
        for l in &p.loops {
            let _ = writeln!(
                o,
                "  {:<10} {:>8} {:>7.1}ms {:>7.1}ms {:>7.1}ms  {}",
                clean(&l.id),
                l.tid,
                l.lag.p50_ms,
                l.lag.p99_ms,
                l.lag.max_ms,
                l.stalls.len()
            );
            // The latest stall whose stack the watchdog caught, if any.
            let stall = l.stalls.iter().rev().find(|s| !s.stack.is_empty());
            if let Some(stall) = stall.or(l.stalls.last()) {
                let at = crate::model::own_frame(&stall.stack)
                    .or(stall.stack.last().map(String::as_str))
                    .unwrap_or("-");
                let _ = writeln!(
                    o,
                    "  {:<10} last stall {:.0}ms at {}",
                    "",
                    stall.duration_ms,
                    clean(at)
                );
            }
        }
    }
    if !p.tasks.is_empty() {
        let mut tasks: Vec<&crate::model::Task> = p.tasks.iter().collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.since_progress_ms));
        let _ = writeln!(
            o,
            "\nTASKS ({}, longest without progress first)",
            p.tasks.len()
        );
        let _ = writeln!(
            o,
            "  {:<16} {:<9} {:>8} {:>8}  {:<20} AWAITING",
            "ID", "STATE", "AGE", "STILL", "COROUTINE"
        );
        for t in tasks.iter().take(PROBE_ROWS) {
            let at = crate::model::own_frame(&t.await_chain)
                .or(t.await_chain.last().map(String::as_str))
                .unwrap_or("-");
            let _ = writeln!(
                o,
                "  {:<16} {:<9} {:>8} {:>8}  {:<20} {}",
                clean(&t.id),
                format!("{:?}", t.state).to_lowercase(),
                duration_ms(t.age_ms),
                duration_ms(t.since_progress_ms),
                clean(t.label()),
                clean(at)
            );
        }
    }
    if !p.pools.is_empty() {
        let _ = writeln!(o, "\nPOOLS ({})", p.pools.len());
        let _ = writeln!(
            o,
            "  {:<18} {:<17} {:>4} {:>5} {:>5} {:>7} {:>10}  NAME",
            "ID", "KIND", "MAX", "LIVE", "BUSY", "QUEUED", "WAIT P99"
        );
        for pool in p.pools.iter().take(PROBE_ROWS) {
            let wait = pool
                .queue_wait_p99_ms
                .map_or("-".to_string(), |w| format!("{w:.0}ms"));
            let _ = writeln!(
                o,
                "  {:<18} {:<17} {:>4} {:>5} {:>5} {:>7} {:>10}  {}",
                clean(&pool.id),
                clean(&pool.kind),
                pool.max_workers,
                pool.live_workers,
                pool.busy_workers,
                pool.queued,
                wait,
                clean(&pool.name)
            );
        }
    }
    if !p.children.is_empty() {
        let _ = writeln!(o, "\nRUNTIME CHILDREN ({})", p.children.len());
        for c in &p.children {
            let _ = writeln!(
                o,
                "  {:>8}  {:<20} {}",
                c.pid,
                clean(&c.name),
                if c.alive { "alive" } else { "exited" }
            );
        }
    }
    if !p.events.is_empty() {
        let _ = writeln!(o, "\nEVENTS ({})", p.events.len());
        for e in p.events.iter().rev().take(PROBE_ROWS) {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(o, "  {:<18} x{:<4} {}", kind, e.count, clean(&e.message));
        }
    }
}

/// A thread's Python stack read from outside, under its /proc row: the GIL holder and idle
/// threads marked, innermost frame last.
fn python_stack(o: &mut String, py: &crate::model::PyStack) {
    let _ = writeln!(
        o,
        "            python{}{}",
        if py.gil { " [holds the GIL]" } else { "" },
        if py.idle { " (idle)" } else { " (active)" }
    );
    for frame in &py.frames {
        let _ = writeln!(o, "              {}", clean(frame));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_on_one_line() {
        assert_eq!(clean("a\nb) c"), "a\\nb) c");
        assert_eq!(clean("plain"), "plain");
    }

    #[test]
    fn human_units() {
        assert_eq!(duration_ms(1500), "1.5s");
        assert_eq!(duration_ms(200_000), "3m20s");
        assert_eq!(duration_ms(7_500_000), "2h05m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
