//! The `check` verdict as text (for people) and JSON (for scripts).

use crate::findings::Finding;
use crate::verdict::CheckReport;
use std::fmt::Write;

/// Evidence keys shown under a finding in text, in this order; the rest stay in JSON.
const SHOWN_EVIDENCE: &[&str] = &[
    "test",
    "cmd",
    "target",
    "example",
    "examples",
    "thread_name",
    "coroutine",
    "spawn_location",
    "site",
    "stack",
    "await_chain",
];

pub fn text(report: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leakhound check: `{}` ended with {} after {:.1} s ({} samples)",
        command_line(&report.command),
        report.exit.describe(),
        report.duration_ms as f64 / 1000.0,
        report.samples
    );
    if !report.findings.is_empty() {
        out.push('\n');
    }
    let width = report
        .findings
        .iter()
        .map(|f| f.rule.len())
        .max()
        .unwrap_or(0);
    for f in &report.findings {
        let _ = writeln!(
            out,
            "{:<7} {:<width$}  {}",
            f.severity.as_str().to_uppercase(),
            f.rule,
            f.message
        );
        for line in evidence_lines(f) {
            let _ = writeln!(out, "        {:<width$}  {line}", "");
        }
    }
    out.push('\n');
    let count = |sev| report.findings.iter().filter(|f| f.severity == sev).count();
    use crate::findings::Severity::*;
    let _ = write!(
        out,
        "{} finding{} ({} error, {} warning, {} info)",
        report.findings.len(),
        if report.findings.len() == 1 { "" } else { "s" },
        count(Error),
        count(Warning),
        count(Info)
    );
    if !report.ignored.is_empty() {
        let _ = write!(out, ", {} ignored", report.ignored.len());
    }
    out.push('\n');
    for unused in &report.unused_ignores {
        let _ = writeln!(
            out,
            "unused ignore: {unused} matched nothing in this run; remove it if it is stale"
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let status = report.exit.shell_status();
    let verdict = if let Some(signal) = &report.interrupted {
        format!("FAIL (exit {}): interrupted by {signal}", report.exit_code)
    } else if status != 0 {
        format!(
            "FAIL (exit {}): the command itself failed",
            report.exit_code
        )
    } else if report.failing().next().is_some() {
        format!(
            "FAIL (exit {}): findings at or above {}",
            report.exit_code,
            report.fail_on.as_str()
        )
    } else {
        format!("PASS (exit {})", report.exit_code)
    };
    let _ = writeln!(out, "verdict: {verdict}");
    out
}

/// The command as a shell would take it back: words with spaces or quotes are single-quoted.
pub fn command_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn evidence_lines(f: &Finding) -> Vec<String> {
    let mut lines = Vec::new();
    let evidence = f.all_evidence();
    for key in SHOWN_EVIDENCE {
        let Some(value) = evidence.get(*key) else {
            continue;
        };
        match value {
            serde_json::Value::Array(items) if !items.is_empty() => {
                lines.push(format!("{key}:"));
                // Innermost frame last; the last few frames are the useful ones.
                let skip = items.len().saturating_sub(6);
                if skip > 0 {
                    lines.push(format!("  … {skip} more"));
                }
                for item in &items[skip..] {
                    lines.push(format!("  {}", plain(item)));
                }
            }
            serde_json::Value::Array(_) | serde_json::Value::Null => {}
            other => lines.push(format!("{key}: {}", plain(other))),
        }
    }
    lines
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn json(report: &CheckReport) -> String {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("version".into(), serde_json::json!(1));
    }
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_read_back_as_typed() {
        let words: Vec<String> = ["sh", "-c", "sleep 1 & echo it's", "a.py"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_line(&words),
            r#"sh -c 'sleep 1 & echo it'\''s' a.py"#
        );
    }
}
