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
            "  {:>8}  {:<16} {:<11} {:>8}  WCHAN",
            "TID", "NAME", "STATE", "CPU"
        );
        for t in &s.threads {
            let _ = writeln!(
                o,
                "  {:>8}  {:<16} {:<11} {:>8}  {}",
                t.tid,
                clean(&t.name),
                t.state.as_str(),
                duration_ms(t.cpu_time_ms),
                t.wchan.as_deref().unwrap_or("-")
            );
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
        let _ = writeln!(
            o,
            "\nPROBE  {} {}  tasks {}  loops {}  pools {}",
            probe.runtime,
            probe.runtime_version,
            probe.tasks.len(),
            probe.loops.len(),
            probe.pools.len()
        );
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
