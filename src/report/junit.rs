//! JUnit XML, the format every CI system shows as test results.
//!
//! One `<testsuite>` per run. Findings blamed on a test (evidence `test`, from the pytest
//! plugin) become a failing `<testcase>` named after that test; the rest get one `<testcase>`
//! per rule, so every rule that was checked and found nothing shows as a passing case. A
//! command that failed on its own is one more failing case. Findings below `--fail-on` are
//! listed in `<system-out>` of their case, which stays passing.

use crate::findings::Finding;
use crate::verdict::CheckReport;
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn render(report: &CheckReport) -> String {
    // (classname, name) -> findings
    let mut cases: BTreeMap<(String, String), Vec<&Finding>> = BTreeMap::new();
    for (id, _) in crate::rules::catalog() {
        cases
            .entry(("leakhound".into(), id.to_string()))
            .or_default();
    }
    for f in &report.findings {
        let key = match f.test.as_deref() {
            Some(test) => test_case_name(test),
            None => ("leakhound".into(), f.rule.clone()),
        };
        cases.entry(key).or_default().push(f);
    }
    // An interrupted run is a failing case of its own: it proved nothing.
    let command_failed = report.exit.shell_status() != 0 || report.interrupted.is_some();
    let failures = cases
        .values()
        .filter(|fs| fs.iter().any(|f| f.severity >= report.fail_on))
        .count()
        + usize::from(command_failed);
    let tests = cases.len() + usize::from(command_failed);
    let time = report.duration_ms as f64 / 1000.0;
    let suite = format!(
        "leakhound check: {}",
        crate::report::verdict::command_line(&report.command)
    );

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"leakhound\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">",
        escape(&suite)
    );
    if command_failed {
        let _ = writeln!(
            out,
            "    <testcase classname=\"leakhound\" name=\"command\" time=\"{time:.3}\">\n      <failure type=\"command\" message=\"{}\"/>\n    </testcase>",
            escape(&format!(
                "{}`{}` ended with {}",
                report
                    .interrupted
                    .as_ref()
                    .map_or(String::new(), |s| format!("interrupted by {s}: ")),
                crate::report::verdict::command_line(&report.command),
                report.exit.describe()
            ))
        );
    }
    for ((classname, name), findings) in &cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
            escape(classname),
            escape(name)
        );
        if findings.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        let (failing, below): (Vec<&Finding>, Vec<&Finding>) =
            findings.iter().partition(|f| f.severity >= report.fail_on);
        if let Some(first) = failing.first() {
            let message = if failing.len() == 1 {
                first.message.clone()
            } else {
                format!("{} findings; first: {}", failing.len(), first.message)
            };
            let _ = writeln!(
                out,
                "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                escape(&first.rule),
                escape(&message),
                escape(&details(&failing))
            );
        }
        if !below.is_empty() {
            let _ = writeln!(
                out,
                "      <system-out>{}</system-out>",
                escape(&details(&below))
            );
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// `tests/test_x.py::TestA::test_b[1]` → (`tests.test_x.TestA`, `test_b[1]`), the way
/// pytest's own JUnit output names cases, so the two line up in CI.
fn test_case_name(nodeid: &str) -> (String, String) {
    let mut parts: Vec<&str> = nodeid.split("::").collect();
    let name = parts.pop().unwrap_or(nodeid).to_string();
    let class = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                p.trim_end_matches(".py").replace('/', ".")
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".");
    (
        if class.is_empty() {
            "leakhound".into()
        } else {
            class
        },
        name,
    )
}

fn details(findings: &[&Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "[{}] {} {}: {}",
            f.severity.as_str(),
            f.rule,
            f.subject,
            f.message
        );
        for (key, value) in &f.all_evidence() {
            let _ = writeln!(out, "    {key}: {value}");
        }
    }
    out
}

/// XML-escapes text for attributes and content; drops the control characters XML 1.0 forbids.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_pytest() {
        assert_eq!(
            test_case_name("tests/test_x.py::TestA::test_b[1]"),
            ("tests.test_x.TestA".into(), "test_b[1]".into())
        );
        assert_eq!(
            test_case_name("test_y.py::test_c"),
            ("test_y".into(), "test_c".into())
        );
    }

    #[test]
    fn escapes_what_xml_forbids() {
        assert_eq!(
            escape("a<b & \"c\"\u{1}\n"),
            "a&lt;b &amp; &quot;c&quot;&#10;"
        );
    }
}
