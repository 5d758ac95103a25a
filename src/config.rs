//! Rule thresholds: one struct, defaults from the design brief, settable from the command line
//! as `--threshold KEY=VALUE` (and, for `check`, from `leakhound.toml`).

use std::time::Duration;

/// The one list of thresholds. Each line gives the `Config` field, how its value is read
/// (`duration`, `number`, `count`, `ratio`), the `-T` / leakhound.toml key, the default as
/// one would write it after `-T KEY=`, and what it sets (the field's doc, `leakhound rules`,
/// and docs/RULES.md's table, which a test keeps equal to this).
macro_rules! thresholds {
    ($($field:ident: $kind:ident, $key:literal, $default:literal, $help:literal;)*) => {
        /// Rule thresholds, one field per entry of [`THRESHOLDS`].
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $(
                #[doc = concat!("`", $key, "` (default ", $default, "): ", $help, ".")]
                pub $field: kinds::$kind::Type,
            )*
        }

        /// Every threshold: key, default, how it is read, what it sets, and its setter.
        pub const THRESHOLDS: &[Threshold] = &[$(
            Threshold {
                key: $key,
                default: $default,
                kind: kinds::$kind::NAME,
                help: $help,
                set: |config, text| {
                    config.$field = kinds::$kind::parse(text)?;
                    Ok(())
                },
            },
        )*];

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($field: kinds::$kind::parse($default)
                        .expect(concat!("the default of ", $key, " parses")),)*
                }
            }
        }
    };
}

thresholds! {
    stuck_task_after: duration, "stuck-task.after", "10s",
        "a live task with no progress for this long";
    never_polled_after: duration, "never-awaited.unpolled-after", "10s",
        "Rust: a spawned task never polled for this long";
    loop_blocked_lag: duration, "loop-blocked.lag", "100ms",
        "event-loop lag or a single poll over this";
    pool_saturated_for: duration, "pool-starvation.saturated-for", "1s",
        "queued work with every worker busy this long";
    pool_queue_wait_p99: duration, "pool-starvation.queue-wait-p99", "1s",
        "queue wait p99 over this";
    fd_ratio: ratio, "fd-exhaustion.ratio", "0.8",
        "open fds over this fraction of the soft limit";
    fd_horizon: duration, "fd-exhaustion.horizon", "10m",
        "trend reaches the soft limit within this";
    growth_min_window: duration, "leak-growth.min-window", "10s",
        "shortest window a growth trend is judged on";
    growth_min_increase: number, "leak-growth.min-increase", "10",
        "least growth across the window that counts";
    close_wait_min: count, "close-wait.min", "3",
        "sockets in CLOSE_WAIT that count as a pile-up";
    close_wait_for: duration, "close-wait.for", "3s",
        "how long the pile-up must last";
    close_wait_pile: count, "close-wait.pile", "100",
        "sockets in CLOSE_WAIT that prove a pile-up in one view (snapshot)";
    thread_leak_min_growth: count, "thread-leak.min-growth", "5",
        "new non-daemon threads, none ended, across the window";
    zombie_after: duration, "zombie-child.after", "5s",
        "an exited child not reaped for this long";
}

/// One threshold of [`THRESHOLDS`].
pub struct Threshold {
    /// The `-T` / leakhound.toml key, `RULE.NAME`.
    pub key: &'static str,
    /// The default, written as after `-T KEY=`.
    pub default: &'static str,
    /// How the value is read: `duration`, `number`, `count` or `ratio`.
    pub kind: &'static str,
    /// What it sets, one line.
    pub help: &'static str,
    set: fn(&mut Config, &str) -> Result<(), String>,
}

/// How each kind of value is read; the error says what was expected.
mod kinds {
    pub mod duration {
        pub type Type = std::time::Duration;
        pub const NAME: &str = "duration";
        pub fn parse(text: &str) -> Result<Type, String> {
            super::super::parse_duration(text)
        }
    }
    pub mod number {
        pub type Type = f64;
        pub const NAME: &str = "number";
        pub fn parse(text: &str) -> Result<Type, String> {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("'{text}' is not a non-negative number"))
        }
    }
    pub mod count {
        pub type Type = u64;
        pub const NAME: &str = "count";
        pub fn parse(text: &str) -> Result<Type, String> {
            super::number::parse(text).map(|v| v as u64)
        }
    }
    pub mod ratio {
        pub type Type = f64;
        pub const NAME: &str = "ratio";
        pub fn parse(text: &str) -> Result<Type, String> {
            super::number::parse(text)
                .ok()
                .filter(|v| *v > 0.0 && *v <= 1.0)
                .ok_or_else(|| format!("'{text}' must be in (0, 1], e.g. 0.8"))
        }
    }
}

impl Config {
    /// The defaults with each `KEY=VALUE` applied in order (later ones win): the one place
    /// `-T`, leakhound.toml's `[thresholds]` and the demo's shortened thresholds are applied.
    pub fn with<S: AsRef<str>>(assignments: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut config = Config::default();
        for assignment in assignments {
            config.set(assignment.as_ref())?;
        }
        Ok(config)
    }

    /// Applies one `KEY=VALUE`; the error names the problem and the fix.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            format!("threshold '{assignment}' is not KEY=VALUE: write e.g. stuck-task.after=30s")
        })?;
        let (key, value) = (key.trim(), value.trim());
        let threshold = THRESHOLDS.iter().find(|t| t.key == key).ok_or_else(|| {
            format!("unknown threshold '{key}': run `leakhound rules` to list the keys")
        })?;
        (threshold.set)(self, value).map_err(|e| format!("threshold {key}: {e}"))
    }
}

/// `250ms`, `10s`, `1.5s`, `10m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write e.g. 500ms, 10s, 5m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn every_key_is_settable_and_its_default_is_what_config_default_holds() {
        for t in THRESHOLDS {
            let mut set = Config::default();
            set.set(&format!("{}={}", t.key, t.default)).unwrap();
            assert_eq!(set, Config::default(), "{}", t.key);
            let other = if t.kind == "ratio" { "0.5" } else { "7" };
            set.set(&format!("{}={other}", t.key)).unwrap();
            assert_ne!(set, Config::default(), "{} sets nothing", t.key);
        }
    }

    #[test]
    fn keys_are_unique_and_later_assignments_win() {
        let mut keys: Vec<&str> = THRESHOLDS.iter().map(|t| t.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), THRESHOLDS.len());
        let c = Config::with(["close-wait.min=4", "close-wait.min=9"]).unwrap();
        assert_eq!(c.close_wait_min, 9);
        assert!(Config::with(["close-wait.min=4", "bogus"]).is_err());
    }

    /// docs/RULES.md's threshold table lists exactly these keys, with these defaults and
    /// words, and each rule's "Default(s)" line agrees with the table.
    #[test]
    fn rules_doc_matches_the_threshold_table() {
        let doc = include_str!("../docs/RULES.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .skip_while(|l| !l.starts_with("## Thresholds"))
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        let want: Vec<Vec<String>> = THRESHOLDS
            .iter()
            .map(|t| {
                vec![
                    format!("`{}`", t.key),
                    format!("`{}`", t.default),
                    t.kind.to_string(),
                    t.help.to_string(),
                ]
            })
            .collect();
        assert_eq!(rows, want, "docs/RULES.md's table differs from THRESHOLDS");
        let mut in_rules = 0;
        for line in doc.lines().filter(|l| l.starts_with("- **Default")) {
            for part in line.split('`').skip(1).step_by(2) {
                let (key, value) = part.split_once('=').expect("`key=value` in a Default line");
                let t = THRESHOLDS.iter().find(|t| t.key == key);
                assert_eq!(t.map(|t| t.default), Some(value), "docs/RULES.md: {line}");
                in_rules += 1;
            }
        }
        assert_eq!(
            in_rules,
            THRESHOLDS.len(),
            "a rule's Default line is missing a key"
        );
    }

    #[test]
    fn bad_assignments_name_the_fix() {
        let mut c = Config::default();
        for (assignment, fix) in [
            ("nonsense", "KEY=VALUE"),
            ("no.such=1", "leakhound rules"),
            ("fd-exhaustion.ratio=2", "(0, 1]"),
            ("fd-exhaustion.ratio=0", "(0, 1]"),
            ("close-wait.min=-1", "non-negative"),
            ("close-wait.for=soon", "duration"),
        ] {
            let err = c.set(assignment).unwrap_err();
            assert!(err.contains(fix), "{assignment}: {err}");
        }
        assert_eq!(
            c,
            Config::default(),
            "a rejected assignment changed nothing"
        );
    }
}
