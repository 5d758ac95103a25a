//! SARIF 2.1.0, the format code-scanning services (GitHub, GitLab, Azure) import.
//!
//! One run; the tool's driver lists every rule `check` can report; each finding is a result
//! with the rule's index, a level, the message, the subject and evidence as properties, and a
//! physical location when the evidence carries a source site (`path:line in function`).
//! Validated against the OASIS schema in `probes/python/tests/test_check_reports.py`.

use crate::findings::{Finding, LOCATION_KEYS, Severity};
use crate::verdict::CheckReport;
use serde_json::{Value, json};

const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// Evidence keys that may hold where a thing is stuck; a source site is looked for in
/// [`LOCATION_KEYS`] (where it was made) first, then in these.
const STUCK_KEYS: [&str; 2] = ["stack", "await_chain"];

pub fn render(report: &CheckReport) -> String {
    let catalog = crate::rules::catalog();
    let rules: Vec<Value> = catalog
        .iter()
        .map(|(id, summary)| {
            json!({
                "id": id,
                "name": id,
                "shortDescription": {"text": summary},
            })
        })
        .collect();
    let cwd = std::env::current_dir().ok();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| result(f, &catalog, cwd.as_deref()))
        .collect();
    let doc = json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "leakhound",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [invocation(report)],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// The run itself; an interrupted one did not complete, and says by what.
fn invocation(report: &CheckReport) -> Value {
    let mut invocation = json!({
        "executionSuccessful": report.interrupted.is_none(),
        "commandLine": crate::report::verdict::command_line(&report.command),
        "exitCode": report.exit.shell_status(),
        "properties": {"leakhoundExitCode": report.exit_code},
    });
    if let Some(signal) = &report.interrupted {
        invocation["toolExecutionNotifications"] = json!([{
            "level": "error",
            "message": {"text": format!("interrupted by {signal}")},
        }]);
    }
    invocation
}

fn result(f: &Finding, catalog: &[(&str, &str)], cwd: Option<&std::path::Path>) -> Value {
    let level = match f.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    };
    let mut r = json!({
        "ruleId": f.rule,
        "level": level,
        "message": {"text": f.message},
        "partialFingerprints": {"leakhoundSubject/v1": format!("{}:{}", f.rule, f.subject)},
        "properties": {"subject": f.subject, "evidence": f.all_evidence()},
    });
    if let Some(index) = catalog.iter().position(|(id, _)| *id == f.rule) {
        r["ruleIndex"] = json!(index);
    }
    if let Some((path, line)) = site(f) {
        let mut artifact = json!({"uri": path});
        // Repository-relative URIs are what code-scanning services map onto files.
        if let Some(rel) = cwd.and_then(|c| std::path::Path::new(&path).strip_prefix(c).ok()) {
            artifact = json!({"uri": rel.display().to_string(), "uriBaseId": "%SRCROOT%"});
        } else if path.starts_with('/') {
            artifact = json!({"uri": format!("file://{path}")});
        }
        let mut physical = json!({"artifactLocation": artifact});
        if line > 0 {
            physical["region"] = json!({"startLine": line});
        }
        r["locations"] = json!([{"physicalLocation": physical}]);
    }
    r
}

/// The innermost source site in the evidence, as (path, line).
fn site(f: &Finding) -> Option<(String, u64)> {
    for key in LOCATION_KEYS.iter().chain(&STUCK_KEYS) {
        let frame = match f.evidence.get(*key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => items
                .iter()
                .rev()
                .filter_map(|i| i.as_str())
                .find(|s| parse_frame(s).is_some())
                .map(str::to_string),
            _ => None,
        };
        if let Some(parsed) = frame.as_deref().and_then(parse_frame) {
            return Some(parsed);
        }
    }
    None
}

/// `path:line in function` or `path:line` → (path, line).
pub fn parse_frame(frame: &str) -> Option<(String, u64)> {
    let location = frame.split(" in ").next()?.trim();
    let (path, line) = location.rsplit_once(':')?;
    let line: u64 = line.trim().parse().ok()?;
    if path.is_empty() || path.starts_with('<') {
        return None;
    }
    Some((path.to_string(), line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            parse_frame("/app/x.py:12 in main"),
            Some(("/app/x.py".into(), 12))
        );
        assert_eq!(parse_frame("src/lib.rs:7"), Some(("src/lib.rs".into(), 7)));
        assert_eq!(parse_frame("<frozen importlib>:1 in x"), None);
        assert_eq!(parse_frame("no site"), None);
    }
}
