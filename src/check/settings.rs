//! `leakhound.toml`: the settings of `check` kept next to the code they judge.
//!
//! ```toml
//! [check]
//! fail-on = "warning"      # info | warning | error
//! settle = "2s"            # longest wait for things to wind down at exit
//! interval = "500ms"       # time between samples while the command runs
//! keep-orphans = false
//! daemon-threads = "info" # severity of daemon threads still running at exit
//!
//! [thresholds]             # the keys of `leakhound rules`
//! "stuck-task.after" = "5s"
//!
//! [ignore]                 # glob patterns, per kind
//! rule = ["loop-blocked"]
//! thread = ["pydevd*"]
//! task = ["telemetry-*"]
//! location = ["*/site-packages/sentry_sdk/*"]
//! fd = ["/dev/shm/*"]
//! child = ["*chromedriver*"]
//! ```
//!
//! Command-line flags win over the file.

use super::ignore::{Ignore, IgnoreKind};
use crate::config::Config;
use crate::findings::Severity;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    check: CheckSection,
    #[serde(default)]
    thresholds: BTreeMap<String, toml::Value>,
    #[serde(default)]
    ignore: IgnoreSection,
    #[serde(default)]
    agent: crate::agent::settings::AgentSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CheckSection {
    fail_on: Option<String>,
    settle: Option<String>,
    interval: Option<String>,
    keep_orphans: Option<bool>,
    daemon_threads: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreSection {
    #[serde(default)]
    rule: Vec<String>,
    #[serde(default)]
    thread: Vec<String>,
    #[serde(default)]
    task: Vec<String>,
    #[serde(default)]
    location: Vec<String>,
    #[serde(default)]
    fd: Vec<String>,
    #[serde(default)]
    child: Vec<String>,
}

/// What a `leakhound.toml` sets; `None` where the file is silent.
#[derive(Debug, Default)]
pub struct Settings {
    pub path: Option<PathBuf>,
    pub fail_on: Option<Severity>,
    pub settle: Option<Duration>,
    pub interval: Option<Duration>,
    pub keep_orphans: Option<bool>,
    /// The severity of a daemon thread still running at exit (info unless set).
    pub daemon_threads: Option<Severity>,
    /// `KEY=VALUE` assignments, applied to a [`Config`] before the command line's.
    pub thresholds: Vec<String>,
    pub ignores: Vec<Ignore>,
    /// The `[agent]` table, for `leakhound agent`.
    pub agent: crate::agent::settings::AgentSection,
}

impl Settings {
    /// Reads `explicit`, or `./leakhound.toml` when it exists; an explicit file that is
    /// missing is an error, a missing default file is not.
    pub fn load(explicit: Option<&Path>) -> Result<Settings, String> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from("leakhound.toml");
                if !default.exists() {
                    return Ok(Settings::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e}: check the path given to --config",
                path.display()
            )
        })?;
        let mut settings = Settings::parse(&text, &path.display().to_string())?;
        settings.path = Some(path);
        Ok(settings)
    }

    /// Parses the text of a `leakhound.toml`; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Settings, String> {
        let file: File = toml::from_str(text).map_err(|e| {
            format!(
                "{name}: {}: see the leakhound.toml format in docs/CI.md",
                e.message().trim()
            )
        })?;
        let dur = |key: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
            v.as_deref()
                .map(|s| {
                    crate::config::parse_duration(s).map_err(|e| format!("{name}: {key}: {e}"))
                })
                .transpose()
        };
        let severity = |key: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|s| {
                    s.parse::<Severity>()
                        .map_err(|e| format!("{name}: {key}: {e}"))
                })
                .transpose()
        };
        let fail_on = severity("fail-on", &file.check.fail_on)?;
        let daemon_threads = severity("daemon-threads", &file.check.daemon_threads)?;
        let mut thresholds = Vec::new();
        for (key, value) in &file.thresholds {
            let value = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(format!(
                        "{name}: thresholds.{key} = {other} is neither a duration string nor a number"
                    ));
                }
            };
            let assignment = format!("{key}={value}");
            // Validate now so the error names the file.
            Config::default()
                .set(&assignment)
                .map_err(|e| format!("{name}: {e}"))?;
            thresholds.push(assignment);
        }
        let origin = name.to_string();
        let mut ignores = Vec::new();
        let lists = [
            (IgnoreKind::Rule, &file.ignore.rule),
            (IgnoreKind::Thread, &file.ignore.thread),
            (IgnoreKind::Task, &file.ignore.task),
            (IgnoreKind::Location, &file.ignore.location),
            (IgnoreKind::Fd, &file.ignore.fd),
            (IgnoreKind::Child, &file.ignore.child),
        ];
        for (kind, patterns) in lists {
            for p in patterns {
                ignores.push(Ignore::new(kind, p, &origin)?);
            }
        }
        Ok(Settings {
            path: None,
            fail_on,
            settle: dur("settle", &file.check.settle)?,
            interval: dur("interval", &file.check.interval)?,
            keep_orphans: file.check.keep_orphans,
            daemon_threads,
            thresholds,
            ignores,
            agent: file.agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file() {
        let s = Settings::parse(
            r#"
[check]
fail-on = "error"
settle = "500ms"
keep-orphans = true
daemon-threads = "warning"

[thresholds]
"stuck-task.after" = "5s"
"close-wait.min" = 4

[ignore]
rule = ["loop-blocked"]
thread = ["pydevd*", "asyncio_*"]
"#,
            "leakhound.toml",
        )
        .unwrap();
        assert_eq!(s.fail_on, Some(Severity::Error));
        assert_eq!(s.settle, Some(Duration::from_millis(500)));
        assert_eq!(s.keep_orphans, Some(true));
        assert_eq!(s.daemon_threads, Some(Severity::Warning));
        assert_eq!(s.interval, None);
        assert_eq!(
            s.thresholds,
            vec!["close-wait.min=4", "stuck-task.after=5s"]
        );
        assert_eq!(s.ignores.len(), 3);
        assert_eq!(s.ignores[1].display(), "thread=pydevd*");
        assert_eq!(s.ignores[1].origin, "leakhound.toml");
    }

    #[test]
    fn mistakes_are_one_line_and_name_the_file() {
        for (text, expect) in [
            ("[check]\nfail_on = \"x\"", "unknown field"),
            ("[check]\nfail-on = \"fatal\"", "use info, warning or error"),
            ("[check]\ndaemon-threads = \"loud\"", "daemon-threads"),
            ("[check]\nsettle = \"soon\"", "settle"),
            ("[thresholds]\n\"no.such\" = \"1s\"", "leakhound rules"),
            ("[ignore]\ncolour = [\"x\"]", "unknown field"),
            ("[ignore]\nfd = [\"[\"]", "not a valid pattern"),
            ("not toml at all", "leakhound.toml"),
        ] {
            let err = Settings::parse(text, "leakhound.toml").unwrap_err();
            assert!(err.contains(expect), "{text:?} -> {err}");
            assert!(err.contains("leakhound.toml"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/leakhound.toml"))).unwrap_err();
        assert!(err.contains("--config"), "{err}");
    }
}
