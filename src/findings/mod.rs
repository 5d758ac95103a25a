//! Findings: what a rule says about a target, with the evidence for it.

use serde::{Deserialize, Serialize};

mod tracker;
use std::collections::BTreeMap;
pub use tracker::Tracker;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            other => Err(format!(
                "unknown severity '{other}': use info, warning or error"
            )),
        }
    }
}

/// The evidence keys under which rules put where a thing was made or spawned (a
/// `path:line in function` frame, or frames innermost last), most specific first; docs/RULES.md
/// names them per rule. `location=` ignores and SARIF's locations read these.
pub const LOCATION_KEYS: [&str; 3] = ["site", "spawn_location", "created_at"];

/// The evidence behind a finding: named numbers, an await point, a stack, a creation site.
/// Keys are documented per rule in `docs/RULES.md`.
pub type Evidence = BTreeMap<String, serde_json::Value>;

/// Who saw what a finding reports, where code treats the two differently (`check` lets the
/// pytest plugin's per-test findings replace the probe's, never the /proc view's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seen {
    /// leakhound's own /proc reading.
    Procfs,
    /// An in-process probe's report.
    Probe,
}

/// A finding as it is written and read: the typed fields travel inside `evidence`, under the
/// keys they always had, so the JSON is the same as when they were plain evidence.
#[derive(Serialize, Deserialize)]
struct FindingJson {
    rule: String,
    severity: Severity,
    subject: String,
    message: String,
    evidence: Evidence,
}

/// Evidence keys of the typed fields of [`Finding`].
const SOURCE: &str = "source";
const PID: &str = "pid";
const TEST: &str = "test";
const DESTROYED_PENDING: &str = "destroyed_pending";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "FindingJson", from = "FindingJson")]
pub struct Finding {
    /// The rule id, e.g. `fd-exhaustion`.
    pub rule: String,
    pub severity: Severity,
    /// What the finding is about, as `kind:id`: `pid:1234`, `task:Task-7`, `tid:4711`,
    /// `fd`, `pool:default_executor`, `coroutine:app.py:12 fetch`.
    pub subject: String,
    /// One line a person can act on.
    pub message: String,
    /// Everything else: shown and written, never branched on.
    pub evidence: Evidence,
    /// Who saw it, when that matters (evidence `source`).
    pub source: Option<Seen>,
    /// The process it is about when that is not the command itself (evidence `pid`).
    pub pid: Option<u32>,
    /// The test that caused it, from the pytest plugin (evidence `test`).
    pub test: Option<String>,
    /// A task collected while still pending (evidence `destroyed_pending`).
    pub destroyed_pending: Option<bool>,
}

impl From<FindingJson> for Finding {
    fn from(f: FindingJson) -> Self {
        let mut finding = Finding::new(&f.rule, f.severity, f.subject, f.message);
        finding.evidence = f.evidence;
        let evidence = &mut finding.evidence;
        finding.source = typed(evidence, SOURCE);
        finding.pid = typed(evidence, PID);
        finding.test = typed(evidence, TEST);
        finding.destroyed_pending = typed(evidence, DESTROYED_PENDING);
        finding
    }
}

/// Takes the entry `key` out of the evidence as a typed value; one of another type stays.
fn typed<T: serde::de::DeserializeOwned>(evidence: &mut Evidence, key: &str) -> Option<T> {
    let value = serde_json::from_value(evidence.get(key)?.clone()).ok()?;
    evidence.remove(key);
    Some(value)
}

impl From<Finding> for FindingJson {
    fn from(f: Finding) -> Self {
        let evidence = f.all_evidence();
        FindingJson {
            rule: f.rule,
            severity: f.severity,
            subject: f.subject,
            message: f.message,
            evidence,
        }
    }
}

impl Finding {
    pub fn new(
        rule: &str,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            rule: rule.to_string(),
            severity,
            subject: subject.into(),
            message: message.into(),
            evidence: Evidence::new(),
            source: None,
            pid: None,
            test: None,
            destroyed_pending: None,
        }
    }

    /// Adds one piece of evidence; chains. The typed fields have their own setters.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        debug_assert!(
            ![SOURCE, PID, TEST, DESTROYED_PENDING].contains(&key),
            "evidence `{key}` is a typed field of Finding"
        );
        self.evidence.insert(key.to_string(), value.into());
        self
    }

    /// Says who saw it; chains.
    pub fn seen_by(mut self, source: Seen) -> Self {
        self.source = Some(source);
        self
    }

    /// Names the process it is about; chains.
    pub fn about_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Marks a task collected while still pending; chains.
    pub fn destroyed_pending(mut self) -> Self {
        self.destroyed_pending = Some(true);
        self
    }

    /// The evidence as written: the plain entries and the typed fields under their keys.
    pub fn all_evidence(&self) -> Evidence {
        let mut evidence = self.evidence.clone();
        let typed = [
            (SOURCE, self.source.map(|s| serde_json::json!(s))),
            (PID, self.pid.map(Into::into)),
            (TEST, self.test.clone().map(Into::into)),
            (DESTROYED_PENDING, self.destroyed_pending.map(Into::into)),
        ];
        for (key, value) in typed {
            if let Some(value) = value {
                evidence.insert(key.to_string(), value);
            }
        }
        evidence
    }

    /// Identity for de-duplication: the same rule about the same subject is one finding.
    pub fn key(&self) -> (String, String) {
        (self.rule.clone(), self.subject.clone())
    }
}

/// Highest severity first, then by rule and subject, so every output lists findings alike.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.subject.cmp(&b.subject))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_fields_read_and_write_as_the_evidence_they_were() {
        let text = r#"{"rule":"stuck-task","severity":"warning","subject":"task:t","message":"m","evidence":{"age_s":3,"destroyed_pending":true,"pid":42,"source":"probe","test":"t.py::x"}}"#;
        let f: Finding = serde_json::from_str(text).unwrap();
        assert_eq!(f.source, Some(Seen::Probe));
        assert_eq!(f.pid, Some(42));
        assert_eq!(f.test.as_deref(), Some("t.py::x"));
        assert_eq!(f.destroyed_pending, Some(true));
        assert_eq!(f.evidence.keys().collect::<Vec<_>>(), vec!["age_s"]);
        assert_eq!(serde_json::to_string(&f).unwrap(), text);
    }

    #[test]
    fn a_key_of_another_type_stays_plain_evidence() {
        let text = r#"{"rule":"r","severity":"info","subject":"s","message":"m","evidence":{"pid":"not a number","source":"elsewhere"}}"#;
        let f: Finding = serde_json::from_str(text).unwrap();
        assert_eq!((f.pid, f.source), (None, None));
        assert_eq!(f.evidence["pid"], "not a number");
        assert_eq!(serde_json::to_string(&f).unwrap(), text);
    }
}
