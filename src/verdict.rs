//! What a `check` run decided, and leakhound's exit codes: a leaf module.
//!
//! It imports only `findings`, so the renderers (`report`) and the CLI (`cli`) can use it and
//! `check` can produce it without any of them importing each other.

use crate::findings::{Finding, Severity};
use serde::Serialize;

/// Exit status: nothing at or above the threshold (or nothing to judge).
pub const EXIT_CLEAN: u8 = 0;
/// Exit status: a finding at or above the threshold.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: leakhound itself could not run.
pub const EXIT_ERROR: u8 = 2;

/// How the command ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommandExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl CommandExit {
    /// The status a shell would report: the code, or 128 + the signal.
    pub fn shell_status(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(code), _) => (code & 0xff) as u8,
            (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
            (None, None) => 0,
        }
    }

    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "unknown status".into(),
        }
    }
}

/// The outcome of one `check` run: what every report renders.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub command: Vec<String>,
    pub exit: CommandExit,
    pub duration_ms: u64,
    /// Samples taken while the command ran.
    pub samples: u64,
    /// Findings that count, highest severity first.
    pub findings: Vec<Finding>,
    /// Findings an ignore entry suppressed.
    pub ignored: Vec<Finding>,
    /// Ignore entries that matched nothing in this run: candidates for removal.
    pub unused_ignores: Vec<String>,
    /// What could not be seen and why.
    pub notes: Vec<String>,
    pub fail_on: Severity,
    /// leakhound's exit status: see [`exit_code`].
    pub exit_code: u8,
}

impl CheckReport {
    /// Findings at or above `--fail-on`.
    pub fn failing(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity >= self.fail_on)
    }
}

/// The exit status: the command's own non-zero status wins; else 1 when a finding is at or
/// above `fail_on`; else 0. (2, leakhound's own error, never reaches here.)
pub fn exit_code(exit: CommandExit, findings: &[Finding], fail_on: Severity) -> u8 {
    let status = exit.shell_status();
    if status != 0 {
        status
    } else if findings.iter().any(|f| f.severity >= fail_on) {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(sev: Severity) -> Finding {
        Finding::new("x", sev, "s", "m")
    }

    #[test]
    fn exit_status_never_masks_the_command() {
        let ok = CommandExit {
            code: Some(0),
            signal: None,
        };
        let failed = CommandExit {
            code: Some(3),
            signal: None,
        };
        let killed = CommandExit {
            code: None,
            signal: Some(9),
        };
        let warn = [finding(Severity::Warning)];
        assert_eq!(exit_code(ok, &[], Severity::Warning), 0);
        assert_eq!(exit_code(ok, &warn, Severity::Warning), 1);
        assert_eq!(exit_code(ok, &warn, Severity::Error), 0);
        assert_eq!(exit_code(ok, &[finding(Severity::Info)], Severity::Info), 1);
        assert_eq!(exit_code(failed, &warn, Severity::Warning), 3);
        assert_eq!(exit_code(failed, &[], Severity::Warning), 3);
        assert_eq!(exit_code(killed, &[], Severity::Warning), 137);
    }
}
