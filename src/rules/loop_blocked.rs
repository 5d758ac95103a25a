//! `loop-blocked`: the event loop is late (lag p99 over the threshold) or was stalled over it
//! recently, with the loop thread's stack captured while it was stuck.

use super::Rule;
use super::probe_common::{latest_probe, secs};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::own_frame;

pub struct LoopBlocked;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "loop-blocked";

impl Rule for LoopBlocked {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "the event loop is blocked: lag over the threshold, with the loop thread's stack"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some((_, probe)) = latest_probe(history) else {
            return Vec::new();
        };
        let limit = config.loop_blocked_lag.as_secs_f64() * 1000.0;
        let mut out = Vec::new();
        for l in &probe.loops {
            // Stalls inside the lag window count: older ones have been reported already.
            let window = l.lag.window_ms.max(1_000);
            let worst = l
                .stalls
                .iter()
                .filter(|s| probe.now_ms.saturating_sub(s.at_ms) <= window)
                .filter(|s| s.duration_ms >= limit)
                .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms));
            if l.lag.p99_ms < limit && worst.is_none() {
                continue;
            }
            // The stack of the longest stall; a shorter one that has a stack beats none.
            let with_stack = l
                .stalls
                .iter()
                .filter(|s| probe.now_ms.saturating_sub(s.at_ms) <= window && !s.stack.is_empty())
                .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms));
            let stall = worst
                .filter(|s| !s.stack.is_empty())
                .or(with_stack)
                .or(worst);
            let stack = stall.map(|s| s.stack.clone()).unwrap_or_default();
            let own = own_frame(&stack).map(str::to_string);
            // The probe sends only the frames the loop runs: the program's own line, else the
            // innermost library frame, said to be one; never the line that started the loop.
            let at = match (own.as_deref(), stack.last()) {
                (Some(f), _) => format!(", blocked at {f}"),
                (None, Some(f)) => format!(", blocked at {f} (no frame of the program's own)"),
                (None, None) => String::new(),
            };
            let stall_ms = worst.map_or(l.lag.max_ms, |s| s.duration_ms);
            // A multi-thread tokio runtime is one "loop" over several workers: no one tid (0);
            // its stall says which worker ran the poll.
            let on_thread = if l.tid == 0 {
                String::new()
            } else {
                format!(" (tid {})", l.tid)
            };
            out.push(
                Finding::new(
                    ID,
                    Severity::Warning,
                    format!("loop:{}", l.id),
                    format!(
                        "event loop {}{} blocked for {:.0} ms (lag p99 {:.0} ms, max {:.0} ms){at}",
                        l.id, on_thread, stall_ms, l.lag.p99_ms, l.lag.max_ms
                    ),
                )
                .with("loop", l.id.clone())
                .with("tid", l.tid)
                .with("p50_ms", l.lag.p50_ms)
                .with("p99_ms", l.lag.p99_ms)
                .with("max_ms", l.lag.max_ms)
                .with("samples", l.lag.samples)
                .with("window_s", secs(l.lag.window_ms))
                .with("stall_ms", stall_ms)
                .with("stall_task", stall.and_then(|s| s.task.clone()))
                .with("blocking_frame", stack.last().cloned())
                .with("own_frame", own)
                .with("stack", stack),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{EventLoop, LagStats, ProbeData, Stall};

    fn lp(p99: f64, max: f64, stalls: Vec<Stall>) -> ProbeData {
        ProbeData {
            now_ms: 100_000,
            loops: vec![EventLoop {
                id: "loop-1".into(),
                tid: 77,
                running: true,
                lag: LagStats {
                    p50_ms: 0.3,
                    p99_ms: p99,
                    max_ms: max,
                    samples: 190,
                    window_ms: 10_000,
                },
                stalls,
                ..EventLoop::default()
            }],
            ..ProbeData::default()
        }
    }

    fn stall(at_ms: u64, ms: f64) -> Stall {
        Stall {
            at_ms,
            duration_ms: ms,
            stack: vec![
                "asyncio/events.py:80 in Handle._run".into(),
                "app.py:14 in handler".into(),
            ],
            task: Some("Task-3".into()),
        }
    }

    #[test]
    fn fires_on_a_recent_stall_with_its_stack() {
        let h = history(vec![(0, lp(2.0, 310.0, vec![stall(97_000, 310.0)]))]);
        let f = LoopBlocked.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "loop:loop-1");
        assert_eq!(f[0].evidence["blocking_frame"], "app.py:14 in handler");
        assert_eq!(f[0].evidence["stall_task"], "Task-3");
        assert!(f[0].message.contains("blocked at app.py:14 in handler"));
    }

    #[test]
    fn a_stack_of_library_frames_only_says_so() {
        let mut s = stall(97_000, 310.0);
        s.stack = vec![
            "/usr/lib/python3.11/asyncio/events.py:80 in Handle._run".into(),
            "/srv/venv/lib/python3.11/site-packages/aiohttp/web_protocol.py:9 in data_received"
                .into(),
        ];
        let f = LoopBlocked.check(
            &history(vec![(0, lp(2.0, 310.0, vec![s]))]),
            &Config::default(),
        );
        assert_eq!(f[0].evidence["own_frame"], serde_json::Value::Null);
        assert!(
            f[0].message.ends_with(
                "blocked at /srv/venv/lib/python3.11/site-packages/aiohttp/web_protocol.py:9 \
                 in data_received (no frame of the program's own)"
            ),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn fires_on_high_p99_alone() {
        let h = history(vec![(0, lp(150.0, 180.0, vec![]))]);
        assert_eq!(LoopBlocked.check(&h, &Config::default()).len(), 1);
    }

    #[test]
    fn quiet_when_fast_or_the_stall_is_old_or_short() {
        for data in [
            lp(1.0, 3.0, vec![]),
            lp(1.0, 3.0, vec![stall(50_000, 900.0)]),
            lp(1.0, 60.0, vec![stall(99_000, 60.0)]),
        ] {
            let h = history(vec![(0, data)]);
            assert!(LoopBlocked.check(&h, &Config::default()).is_empty());
        }
    }
}

/// The shapes the Rust probe and the console source send for tokio (see probes/rust).
#[cfg(test)]
mod tokio_shapes {
    use super::super::probe_common::testing::{history, tokio};
    use super::*;
    use crate::model::Stall;

    #[test]
    fn a_long_tokio_poll_without_a_stack_names_its_task() {
        let stall = Stall {
            at_ms: 99_500,
            duration_ms: 450.0,
            stack: vec![],
            task: Some("12".into()),
        };
        let short = Stall {
            at_ms: 99_800,
            duration_ms: 40.0,
            stack: vec![],
            task: Some("13".into()),
        };
        let h = history(vec![(0, tokio(vec![], vec![short.clone(), stall], vec![]))]);
        let f = LoopBlocked.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "loop:tokio");
        assert_eq!(f[0].evidence["stall_task"], "12");
        assert_eq!(f[0].evidence["stall_ms"], 450.0);
        let h = history(vec![(0, tokio(vec![], vec![short], vec![]))]);
        assert!(LoopBlocked.check(&h, &Config::default()).is_empty());
    }
}
