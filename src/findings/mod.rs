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

/// The evidence behind a finding: named numbers, an await point, a stack, a creation site.
/// Keys are documented per rule in `docs/RULES.md`.
pub type Evidence = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule id, e.g. `fd-exhaustion`.
    pub rule: String,
    pub severity: Severity,
    /// What the finding is about, as `kind:id`: `pid:1234`, `task:Task-7`, `tid:4711`,
    /// `fd`, `pool:default_executor`, `coroutine:app.py:12 fetch`.
    pub subject: String,
    /// One line a person can act on.
    pub message: String,
    pub evidence: Evidence,
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
        }
    }

    /// Adds one piece of evidence; chains.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.evidence.insert(key.to_string(), value.into());
        self
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
