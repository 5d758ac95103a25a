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
    /// The signal that cut the run short ("SIGTERM", "SIGINT"), absent when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// leakhound's exit status: see [`exit_code`] and [`interrupted_exit_code`].
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

/// The exit status of a run cut short by `signal` (a CI cancel's SIGTERM, Ctrl-C's SIGINT):
/// the command's own non-zero exit code when it chose one (a SIGTERM trap that exits 3), else
/// 128 + the signal, as a shell reports what it interrupted. Never 0, whatever was found: an
/// interrupted run proved nothing.
pub fn interrupted_exit_code(exit: CommandExit, signal: i32) -> u8 {
    match exit.code {
        Some(code) if code != 0 => exit.shell_status(),
        _ => (128 + signal).clamp(0, 255) as u8,
    }
}

/// "SIGINT", "SIGTERM", … for the signals a run can be interrupted by; else "signal N".
pub fn signal_name(signal: i32) -> String {
    match signal {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        3 => "SIGQUIT".into(),
        9 => "SIGKILL".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
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

    #[test]
    fn an_interrupted_run_never_passes_and_keeps_the_commands_own_failure() {
        let exited = |code| CommandExit {
            code: Some(code),
            signal: None,
        };
        let killed = |sig| CommandExit {
            code: None,
            signal: Some(sig),
        };
        // Ended by the forwarded signal, or by leakhound's SIGKILL after the settle time.
        assert_eq!(interrupted_exit_code(killed(15), 15), 143);
        assert_eq!(interrupted_exit_code(killed(9), 15), 143);
        assert_eq!(interrupted_exit_code(killed(9), 2), 130);
        // A trap that cleaned up and exited 0 still was interrupted.
        assert_eq!(interrupted_exit_code(exited(0), 15), 143);
        // A trap that chose its own status keeps it.
        assert_eq!(interrupted_exit_code(exited(3), 15), 3);
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(2), "SIGINT");
        assert_eq!(signal_name(40), "signal 40");
    }
}
