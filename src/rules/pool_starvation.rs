//! `pool-starvation`: an executor, blocking pool or semaphore has work queued while every
//! worker (permit) is busy for too long, or its queue wait p99 is over the threshold.

use super::Rule;
use super::probe_common::{latest_probe, secs};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;

pub struct PoolStarvation;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "pool-starvation";

impl Rule for PoolStarvation {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "a pool or semaphore has queued work with every worker busy, or a long queue wait"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some((_, probe)) = latest_probe(history) else {
            return Vec::new();
        };
        let saturated_for = config.pool_saturated_for.as_millis() as u64;
        let wait_limit = config.pool_queue_wait_p99.as_secs_f64() * 1000.0;
        let mut out = Vec::new();
        for p in &probe.pools {
            let saturated = p.queued > 0 && p.saturated_ms >= saturated_for;
            let slow_queue = p.queue_wait_p99_ms.is_some_and(|w| w >= wait_limit);
            if !saturated && !slow_queue {
                continue;
            }
            let what = if p.kind == "semaphore" {
                format!(
                    "{} waiter(s) on semaphore {} with all {} permit(s) taken for {:.1}s",
                    p.queued,
                    p.id,
                    p.max_workers,
                    p.saturated_ms as f64 / 1000.0
                )
            } else if saturated {
                format!(
                    "{} {} ({}): {} job(s) queued, {}/{} workers busy for {:.1}s",
                    p.kind,
                    p.name,
                    p.id,
                    p.queued,
                    p.busy_workers,
                    p.max_workers,
                    p.saturated_ms as f64 / 1000.0
                )
            } else {
                format!("{} {} ({}): jobs wait in its queue", p.kind, p.name, p.id)
            };
            let wait = p
                .queue_wait_p99_ms
                .map_or(String::new(), |w| format!(", queue wait p99 {w:.0} ms"));
            out.push(
                Finding::new(
                    ID,
                    Severity::Warning,
                    format!("pool:{}", p.id),
                    format!("{what}{wait}"),
                )
                .with("pool", p.id.clone())
                .with("kind", p.kind.clone())
                .with("name", p.name.clone())
                .with("max_workers", p.max_workers)
                .with("live_workers", p.live_workers)
                .with("busy_workers", p.busy_workers)
                .with("queued", p.queued)
                .with("saturated_s", secs(p.saturated_ms))
                .with("queue_wait_p99_ms", p.queue_wait_p99_ms)
                .with("submitted", p.submitted)
                .with("completed", p.completed)
                .with("created_at", p.created_at.clone()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{Pool, ProbeData};

    fn pool(kind: &str, queued: u64, saturated_ms: u64, p99: Option<f64>) -> Pool {
        Pool {
            id: format!("{kind}-1"),
            kind: kind.into(),
            name: "asyncio".into(),
            max_workers: 2,
            live_workers: 2,
            busy_workers: 2,
            queued,
            saturated_ms,
            queue_wait_p99_ms: p99,
            open: true,
            ..Pool::default()
        }
    }

    fn check(pools: Vec<Pool>) -> Vec<Finding> {
        let data = ProbeData {
            pools,
            ..ProbeData::default()
        };
        PoolStarvation.check(&history(vec![(0, data)]), &Config::default())
    }

    #[test]
    fn fires_on_saturation_and_on_slow_queue() {
        let f = check(vec![pool("default_executor", 25, 4_000, Some(2_400.0))]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "pool:default_executor-1");
        assert_eq!(f[0].evidence["queued"], 25);
        assert_eq!(f[0].evidence["saturated_s"], 4.0);
        assert!(f[0].message.contains("25 job(s) queued, 2/2 workers busy"));
        assert_eq!(
            check(vec![pool("thread_pool", 0, 0, Some(1_500.0))]).len(),
            1
        );
    }

    #[test]
    fn semaphore_with_waiters_and_no_permits_fires() {
        let f = check(vec![pool("semaphore", 3, 2_000, None)]);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("3 waiter(s) on semaphore"));
    }

    #[test]
    fn quiet_when_busy_but_not_starving() {
        assert!(
            check(vec![
                pool("thread_pool", 0, 5_000, Some(10.0)),
                pool("thread_pool", 4, 300, Some(200.0)),
                pool("semaphore", 0, 0, None),
            ])
            .is_empty()
        );
    }
}

/// The shapes the Rust probe and the console source send for tokio (see probes/rust).
#[cfg(test)]
mod tokio_shapes {
    use super::super::probe_common::testing::{history, tokio};
    use super::*;
    use crate::model::Pool;

    fn blocking_pool(queued: u64, busy: u64, saturated_ms: u64) -> Pool {
        Pool {
            id: "blocking_pool".into(),
            kind: "blocking_pool".into(),
            name: "tokio blocking pool".into(),
            max_workers: 2,
            live_workers: 2,
            busy_workers: busy,
            queued,
            saturated_ms,
            open: true,
            ..Pool::default()
        }
    }

    fn semaphore(waiters: u64, saturated_ms: u64) -> Pool {
        Pool {
            id: "semaphore:db".into(),
            kind: "semaphore".into(),
            name: "db".into(),
            max_workers: 1,
            live_workers: 1,
            busy_workers: 1,
            queued: waiters,
            saturated_ms,
            open: true,
            ..Pool::default()
        }
    }

    #[test]
    fn saturated_blocking_pool_with_a_queue() {
        let h = history(vec![(
            0,
            tokio(vec![], vec![], vec![blocking_pool(4, 2, 1_500)]),
        )]);
        let f = PoolStarvation.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "pool:blocking_pool");
        assert_eq!(f[0].evidence["queued"], 4);
        // Busy but no queue, or a queue for less than the threshold: fine.
        let h = history(vec![(
            0,
            tokio(
                vec![],
                vec![],
                vec![blocking_pool(0, 2, 0), blocking_pool(3, 2, 300)],
            ),
        )]);
        assert!(PoolStarvation.check(&h, &Config::default()).is_empty());
    }

    #[test]
    fn semaphore_with_waiters_and_no_permit_for_a_second() {
        let h = history(vec![(0, tokio(vec![], vec![], vec![semaphore(3, 1_200)]))]);
        let f = PoolStarvation.check(&h, &Config::default());
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("3 waiter(s)"), "{}", f[0].message);
        let h = history(vec![(0, tokio(vec![], vec![], vec![semaphore(3, 900)]))]);
        assert!(PoolStarvation.check(&h, &Config::default()).is_empty());
    }
}
