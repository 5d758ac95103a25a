//! Rule thresholds: one struct, defaults from the design brief, settable from the command line
//! as `--threshold KEY=VALUE` (and, for `check`, from `leakhound.toml`).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// stuck-task: a live task with no progress for this long.
    pub stuck_task_after: Duration,
    /// never-awaited (Rust): a spawned task never polled for this long.
    pub never_polled_after: Duration,
    /// loop-blocked: event-loop lag (or one poll) over this.
    pub loop_blocked_lag: Duration,
    /// pool-starvation: queued work with every worker busy for this long …
    pub pool_saturated_for: Duration,
    /// … or a queue-wait p99 over this.
    pub pool_queue_wait_p99: Duration,
    /// fd-exhaustion: open fds over this fraction of the soft limit …
    pub fd_ratio: f64,
    /// … or a trend that reaches the soft limit within this horizon.
    pub fd_horizon: Duration,
    /// leak-growth: the window must span at least this long …
    pub growth_min_window: Duration,
    /// … and the count must have grown by at least this much across it.
    pub growth_min_increase: f64,
    /// close-wait: this many sockets in CLOSE_WAIT …
    pub close_wait_min: u64,
    /// … held or growing for this long.
    pub close_wait_for: Duration,
    /// zombie-child: a child exited and not reaped for this long.
    pub zombie_after: Duration,
    /// thread-leak: this many new non-daemon threads, none ended, across the growth window.
    pub thread_leak_min_growth: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stuck_task_after: Duration::from_secs(10),
            never_polled_after: Duration::from_secs(10),
            loop_blocked_lag: Duration::from_millis(100),
            pool_saturated_for: Duration::from_secs(1),
            pool_queue_wait_p99: Duration::from_secs(1),
            fd_ratio: 0.8,
            fd_horizon: Duration::from_secs(600),
            growth_min_window: Duration::from_secs(10),
            growth_min_increase: 10.0,
            close_wait_min: 3,
            close_wait_for: Duration::from_secs(3),
            zombie_after: Duration::from_secs(5),
            thread_leak_min_growth: 5,
        }
    }
}

/// Every key `--threshold` takes, with what it sets; `leakhound rules` prints this.
pub const KEYS: &[(&str, &str)] = &[
    (
        "stuck-task.after",
        "a live task with no progress for this long (duration)",
    ),
    (
        "never-awaited.unpolled-after",
        "Rust: a spawned task never polled for this long (duration)",
    ),
    (
        "loop-blocked.lag",
        "event-loop lag or a single poll over this (duration)",
    ),
    (
        "pool-starvation.saturated-for",
        "queued work with every worker busy this long (duration)",
    ),
    (
        "pool-starvation.queue-wait-p99",
        "queue wait p99 over this (duration)",
    ),
    (
        "fd-exhaustion.ratio",
        "open fds over this fraction of the soft limit (0..1)",
    ),
    (
        "fd-exhaustion.horizon",
        "trend reaches the soft limit within this (duration)",
    ),
    (
        "leak-growth.min-window",
        "shortest window a growth trend is judged on (duration)",
    ),
    (
        "leak-growth.min-increase",
        "least growth across the window that counts (number)",
    ),
    (
        "close-wait.min",
        "sockets in CLOSE_WAIT that count as a pile-up (number)",
    ),
    (
        "close-wait.for",
        "how long the pile-up must last (duration)",
    ),
    (
        "thread-leak.min-growth",
        "new non-daemon threads, none ended, across the window (number)",
    ),
    (
        "zombie-child.after",
        "an exited child not reaped for this long (duration)",
    ),
];

impl Config {
    /// Applies one `KEY=VALUE`; the error names the problem and the fix.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            format!("threshold '{assignment}' is not KEY=VALUE: write e.g. stuck-task.after=30s")
        })?;
        let (key, value) = (key.trim(), value.trim());
        let dur = || parse_duration(value).map_err(|e| format!("threshold {key}: {e}"));
        let num = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("threshold {key}: '{value}' is not a non-negative number"))
        };
        match key {
            "stuck-task.after" => self.stuck_task_after = dur()?,
            "never-awaited.unpolled-after" => self.never_polled_after = dur()?,
            "loop-blocked.lag" => self.loop_blocked_lag = dur()?,
            "pool-starvation.saturated-for" => self.pool_saturated_for = dur()?,
            "pool-starvation.queue-wait-p99" => self.pool_queue_wait_p99 = dur()?,
            "fd-exhaustion.ratio" => {
                let v = num()?;
                if !(0.0..=1.0).contains(&v) || v == 0.0 {
                    return Err(format!(
                        "threshold {key}: '{value}' must be in (0, 1], e.g. 0.8"
                    ));
                }
                self.fd_ratio = v;
            }
            "fd-exhaustion.horizon" => self.fd_horizon = dur()?,
            "leak-growth.min-window" => self.growth_min_window = dur()?,
            "leak-growth.min-increase" => self.growth_min_increase = num()?,
            "close-wait.min" => self.close_wait_min = num()? as u64,
            "close-wait.for" => self.close_wait_for = dur()?,
            "zombie-child.after" => self.zombie_after = dur()?,
            "thread-leak.min-growth" => self.thread_leak_min_growth = num()? as u64,
            other => {
                return Err(format!(
                    "unknown threshold '{other}': run `leakhound rules` to list the keys"
                ));
            }
        }
        Ok(())
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
    fn every_documented_key_is_settable() {
        for (key, _) in KEYS {
            let value = if key.ends_with("ratio") {
                "0.5"
            } else if key.contains("min") && !key.contains("window") {
                "4"
            } else {
                "3s"
            };
            Config::default().set(&format!("{key}={value}")).unwrap();
        }
    }

    #[test]
    fn bad_assignments_name_the_fix() {
        let mut c = Config::default();
        assert!(c.set("nonsense").unwrap_err().contains("KEY=VALUE"));
        assert!(c.set("no.such=1").unwrap_err().contains("leakhound rules"));
        assert!(
            c.set("fd-exhaustion.ratio=2")
                .unwrap_err()
                .contains("(0, 1]")
        );
    }
}
