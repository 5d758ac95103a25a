//! `fd-exhaustion`: the process is close to its soft RLIMIT_NOFILE, or its descriptor count
//! is climbing towards it fast enough to get there within the horizon.

use super::Rule;
use super::trend::{steady_growth, theil_sen_slope};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::FdKind;
use serde_json::json;

pub struct FdExhaustion;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "fd-exhaustion";

/// A trend is only believed over at least this many samples, and growth that is steady (see
/// [`steady_growth`]) …
const MIN_POINTS: usize = 5;

impl Rule for FdExhaustion {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "open descriptors near the soft RLIMIT_NOFILE, or a trend that reaches it soon"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some(latest) = history.latest() else {
            return Vec::new();
        };
        let Some(soft) = latest.fds.soft_limit.filter(|&s| s > 0) else {
            return Vec::new();
        };
        let open = latest.fds.open;
        let ratio = open as f64 / soft as f64;

        let points = history.series(|s| s.fds.open as f64);
        // The slower of the whole window's trend and the recent half's: growth that stopped
        // (a warm-up minutes ago) must not forecast exhaustion now.
        let recent = &points[points.len() / 2..];
        let slope_per_ms = (points.len() >= MIN_POINTS && recent.len() >= 3)
            .then(|| Some(theil_sen_slope(&points)?.min(theil_sen_slope(recent)?)))
            .flatten()
            .filter(|&s| s > 0.0);
        // … and only on growth sustained across the window, judged as leak-growth judges it:
        // a start-up that opens a few sockets and stays flat is no forecast of exhaustion.
        let rose = steady_growth(
            &points,
            config.growth_min_window.as_secs_f64() * 1000.0,
            config.growth_min_increase,
        )
        .is_some();
        let eta_ms = slope_per_ms
            .filter(|_| rose)
            .map(|s| soft.saturating_sub(open) as f64 / s);
        let horizon_ms = config.fd_horizon.as_secs_f64() * 1000.0;
        let over_ratio = ratio >= config.fd_ratio;
        let trend_fires = eta_ms.is_some_and(|eta| eta <= horizon_ms);
        if !over_ratio && !trend_fires {
            return Vec::new();
        }

        // The most seen at once: after a program hit the limit and its teardown closed what it
        // held (what `check` sees last), "5 open now" alone would hide it.
        let peak = history
            .iter()
            .map(|s| s.fds.open)
            .max()
            .unwrap_or(open)
            .max(open);
        let at_limit = peak >= soft;
        let slope_text = format!("{:.1}/min", slope_per_ms.unwrap_or(0.0) * 60_000.0);
        let message = if over_ratio {
            format!(
                "{open} of {soft} descriptors open ({:.0}% of the soft limit): the next open may fail with EMFILE",
                ratio * 100.0
            )
        } else if at_limit {
            format!(
                "descriptors grew by {slope_text} to the soft limit: {peak} of {soft} open at the \
                 peak, so opens failed with EMFILE; {open} open now"
            )
        } else if peak > open {
            format!(
                "descriptors grow by {slope_text}: {peak} of {soft} open at the peak ({:.0}% of \
                 the soft limit), {open} open now; the limit is reached in ~{:.0}s",
                peak as f64 * 100.0 / soft as f64,
                eta_ms.unwrap_or(0.0) / 1000.0
            )
        } else {
            format!(
                "descriptors grow by {slope_text}: {open} open now, the soft limit {soft} is reached in ~{:.0}s",
                eta_ms.unwrap_or(0.0) / 1000.0
            )
        };
        let grew = history
            .oldest()
            .map_or_else(serde_json::Map::new, |oldest| {
                FdKind::ALL
                    .iter()
                    .filter_map(|k| {
                        let before = oldest.fds.by_kind.get(k).copied().unwrap_or(0);
                        let now = latest.fds.by_kind.get(k).copied().unwrap_or(0);
                        (now > before).then(|| (k.as_str().to_string(), json!(now - before)))
                    })
                    .collect()
            });
        let severity = if over_ratio {
            Severity::Error
        } else {
            Severity::Warning
        };
        vec![
            Finding::new(ID, severity, format!("pid:{}", latest.pid), message)
                .with("open", open)
                .with("soft", soft)
                .with("hard", json!(latest.fds.hard_limit))
                .with("ratio", (ratio * 1000.0).round() / 1000.0)
                .with("peak", peak)
                .with("at_limit", at_limit)
                .with(
                    "slope_per_min",
                    json!(slope_per_ms.map(|s| (s * 60_000.0 * 10.0).round() / 10.0)),
                )
                .with("eta_s", json!(eta_ms.map(|e| (e / 1000.0).round())))
                .with("grew", grew),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Snapshot;
    use std::time::Duration;

    fn history(counts: &[u64], soft: u64) -> History {
        let mut h = History::default();
        for (i, &open) in counts.iter().enumerate() {
            let mut s = Snapshot {
                taken_at_ms: 1_000_000 + i as u64 * 1000,
                pid: 7,
                ..Default::default()
            };
            s.fds.open = open;
            s.fds.soft_limit = Some(soft);
            s.fds.hard_limit = Some(soft * 4);
            s.fds.by_kind.insert(FdKind::File, open);
            h.push(s);
        }
        h
    }

    #[test]
    fn fires_over_the_ratio() {
        let f = FdExhaustion.check(&history(&[850], 1000), &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].subject, "pid:7");
        assert_eq!(f[0].evidence["open"], 850);
        assert_eq!(f[0].evidence["hard"], 4000);
    }

    #[test]
    fn fires_on_a_trend_that_reaches_the_limit_within_the_horizon() {
        // 10/s for 11 s with 880 to go: ~88 s, inside 10 minutes.
        let counts: Vec<u64> = (0..12).map(|i| 10 + i * 10).collect();
        let f = FdExhaustion.check(&history(&counts, 1000), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence["slope_per_min"], 600.0);
        assert_eq!(f[0].evidence["eta_s"], 88.0);
        assert_eq!(f[0].evidence["grew"]["file"], 110);
    }

    #[test]
    fn after_the_peak_the_message_says_the_peak_and_whether_it_was_the_limit() {
        // Climbed 10/s to 120 of 1000, then a sample after most were closed again.
        let mut counts: Vec<u64> = (0..12).map(|i| 10 + i * 10).collect();
        counts.push(5);
        let f = FdExhaustion.check(&history(&counts, 1000), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["peak"], 120);
        assert_eq!(f[0].evidence["at_limit"], false);
        assert!(
            f[0].message
                .contains("120 of 1000 open at the peak (12% of the soft limit), 5 open now"),
            "{}",
            f[0].message
        );
        // The same climb to the limit itself (EMFILE), then Python's teardown closed them.
        let mut counts: Vec<u64> = (0..12).map(|i| 10 + i * 10).collect();
        counts.push(5);
        let f = FdExhaustion.check(&history(&counts, 120), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["at_limit"], true);
        assert!(
            f[0].message.contains(
                "to the soft limit: 120 of 120 open at the peak, so opens failed with EMFILE; \
                 5 open now"
            ),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn a_start_up_ramp_is_no_forecast() {
        let c = Config::default();
        // `check` samples every 500 ms: a clean program opens 3 sockets as it starts and
        // ends 2.5 s later. Under `ulimit -n 1024` this once forecast exhaustion "in ~309s".
        let mut h = History::default();
        for (i, open) in [3u64, 3, 4, 5, 6].into_iter().enumerate() {
            let mut s = crate::model::Snapshot {
                taken_at_ms: 1_000_000 + i as u64 * 500,
                pid: 7,
                ..Default::default()
            };
            s.fds.open = open;
            s.fds.soft_limit = Some(1024);
            h.push(s);
        }
        assert!(FdExhaustion.check(&h, &c).is_empty());
        // Still climbing at the end, but only for a few seconds: not yet a trend.
        let short: Vec<u64> = (0..9).map(|i| 3 + i).collect();
        assert!(FdExhaustion.check(&history(&short, 1024), &c).is_empty());
        // The same climb sustained for a minute is one.
        let long: Vec<u64> = (0..60).map(|i| 3 + 2 * i).collect();
        assert_eq!(FdExhaustion.check(&history(&long, 1024), &c).len(), 1);
    }

    #[test]
    fn does_not_fire_on_a_slow_trend_a_flat_line_or_noise() {
        let c = Config::default();
        // 1 per second with 100,000 to go: a day away.
        let slow: Vec<u64> = (0..10).map(|i| 10 + i).collect();
        assert!(FdExhaustion.check(&history(&slow, 100_000), &c).is_empty());
        assert!(FdExhaustion.check(&history(&[50; 20], 1000), &c).is_empty());
        let noisy: Vec<u64> = (0..20).map(|i| 50 + (i % 3)).collect();
        assert!(FdExhaustion.check(&history(&noisy, 100), &c).is_empty());
        // Grew during a warm-up, flat since: no forecast.
        let warm_up: Vec<u64> = (0..30).map(|i| 100 + 40 * i.min(15)).collect();
        assert!(FdExhaustion.check(&history(&warm_up, 1000), &c).is_empty());
        // A burst that closes again.
        let mut burst = vec![50u64; 20];
        burst[8] = 700;
        assert!(FdExhaustion.check(&history(&burst, 1000), &c).is_empty());
        // Unlimited: nothing to run out of.
        let mut h = history(&[900], 1000);
        let mut s = h.latest().unwrap().clone();
        s.fds.soft_limit = None;
        s.taken_at_ms += 1000;
        h.push(s);
        assert!(FdExhaustion.check(&h, &c).is_empty());
    }

    #[test]
    fn thresholds_move_it() {
        let mut c = Config {
            fd_horizon: Duration::from_secs(30),
            ..Config::default()
        };
        let counts: Vec<u64> = (0..12).map(|i| 10 + i * 10).collect();
        assert!(FdExhaustion.check(&history(&counts, 1000), &c).is_empty());
        c.fd_ratio = 0.05;
        assert_eq!(FdExhaustion.check(&history(&counts, 1000), &c).len(), 1);
    }
}
