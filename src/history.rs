//! A bounded ring of snapshots of one target: what the rules read.
//!
//! Bounded three ways, by count, by age and by bytes (each snapshot measured as it is pushed,
//! events and strings included), so memory stays flat however long `watch` or the dashboard
//! runs and however much a probe says.

use crate::model::Snapshot;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct History {
    snapshots: VecDeque<Snapshot>,
    /// What each snapshot in `snapshots` costs ([`Snapshot::approx_bytes`]), same order.
    sizes: VecDeque<usize>,
    /// The sum of `sizes`.
    bytes: usize,
    capacity: usize,
    max_age_ms: u64,
    /// When set, the oldest snapshots go as soon as the ring holds more than this many bytes:
    /// a process with 100,000 tasks (or a probe sending 50 MB of events) gets a shorter
    /// window, not gigabytes.
    byte_budget: Option<usize>,
}

/// What [`History::default`] may hold: 64 MiB of snapshots.
pub const DEFAULT_BYTE_BUDGET: usize = 64 << 20;
/// The default window: 600 samples (10 minutes at 1 Hz), for fd-exhaustion's forecasts.
const DEFAULT_CAPACITY: usize = 600;
const DEFAULT_MAX_AGE_MS: u64 = 600_000;
/// The fewest snapshots a byte budget may shrink the ring to ("unchanged across the last two
/// samples" needs two); each is bounded on its own by the reply caps of the sources.
const MIN_KEPT: usize = 2;

impl History {
    /// `capacity` snapshots at most, none older than `max_age_ms` than the newest.
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        History {
            snapshots: VecDeque::with_capacity(capacity.min(1024)),
            sizes: VecDeque::with_capacity(capacity.min(1024)),
            bytes: 0,
            capacity: capacity.max(1),
            max_age_ms,
            byte_budget: None,
        }
    }

    /// The default window, shortened as needed to keep within `bytes`, as measured on every
    /// snapshot pushed.
    pub fn bounded(bytes: usize) -> Self {
        History {
            byte_budget: Some(bytes),
            ..History::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE_MS)
        }
    }

    pub fn push(&mut self, snapshot: Snapshot) {
        let newest = snapshot.taken_at_ms;
        let size = snapshot.approx_bytes();
        self.snapshots.push_back(snapshot);
        self.sizes.push_back(size);
        self.bytes += size;
        let over_budget = |h: &Self| {
            h.byte_budget
                .is_some_and(|b| h.bytes > b && h.snapshots.len() > MIN_KEPT)
        };
        while self.snapshots.len() > self.capacity || over_budget(self) {
            self.pop_front();
        }
        while let Some(front) = self.snapshots.front() {
            if newest.saturating_sub(front.taken_at_ms) > self.max_age_ms
                && self.snapshots.len() > 1
            {
                self.pop_front();
            } else {
                break;
            }
        }
    }

    fn pop_front(&mut self) {
        self.snapshots.pop_front();
        self.bytes -= self.sizes.pop_front().unwrap_or(0);
    }

    /// What the snapshots held cost in memory, as measured when pushed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn latest(&self) -> Option<&Snapshot> {
        self.snapshots.back()
    }

    pub fn oldest(&self) -> Option<&Snapshot> {
        self.snapshots.front()
    }

    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Snapshot> + ExactSizeIterator {
        self.snapshots.iter()
    }

    /// Milliseconds between the oldest and newest snapshot.
    pub fn span_ms(&self) -> u64 {
        match (self.oldest(), self.latest()) {
            (Some(a), Some(b)) => b.taken_at_ms.saturating_sub(a.taken_at_ms),
            _ => 0,
        }
    }

    /// `(t_ms relative to the oldest, value)` for a metric, oldest first: what trend rules fit.
    pub fn series(&self, metric: impl Fn(&Snapshot) -> f64) -> Vec<(f64, f64)> {
        let start = self.oldest().map_or(0, |s| s.taken_at_ms);
        self.snapshots
            .iter()
            .map(|s| ((s.taken_at_ms.saturating_sub(start)) as f64, metric(s)))
            .collect()
    }
}

impl Default for History {
    fn default() -> Self {
        History::bounded(DEFAULT_BYTE_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: u64) -> Snapshot {
        Snapshot {
            taken_at_ms: t,
            ..Default::default()
        }
    }

    #[test]
    fn bounded_by_count() {
        let mut h = History::new(3, u64::MAX);
        for t in 0..10 {
            h.push(snap(t));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.oldest().unwrap().taken_at_ms, 7);
    }

    #[test]
    fn bounded_by_bytes_as_measured_on_every_push() {
        let small = snap(0);
        let mut h = History::bounded(small.approx_bytes() * 10);
        for t in 0..50 {
            h.push(snap(t));
        }
        assert_eq!(h.len(), 10);

        let mut huge = snap(0);
        huge.threads = vec![Default::default(); 100_000];
        let mut h = History::bounded(1 << 20);
        for t in 0..50 {
            h.push(Snapshot {
                taken_at_ms: t,
                ..huge.clone()
            });
        }
        assert_eq!(h.len(), MIN_KEPT);

        // Small at first, then each one carries megabytes of events: the window shrinks to
        // the budget instead of keeping the count the first snapshot allowed.
        let budget = 8 << 20;
        let mut h = History::bounded(budget);
        for t in 0..10 {
            h.push(snap(t));
        }
        let event = crate::model::ProbeEvent {
            message: "x".repeat(1 << 20),
            ..Default::default()
        };
        for t in 10..40 {
            h.push(Snapshot {
                taken_at_ms: t,
                probe: Some(crate::model::ProbeData {
                    events: vec![event.clone(); 2],
                    ..Default::default()
                }),
                ..Default::default()
            });
            assert!(h.bytes() <= budget, "{} > {budget}", h.bytes());
        }
        assert!(h.len() >= MIN_KEPT && h.len() <= 4, "{}", h.len());
        assert_eq!(
            h.bytes(),
            h.iter().map(Snapshot::approx_bytes).sum::<usize>()
        );
    }

    #[test]
    fn bounded_by_age() {
        let mut h = History::new(100, 1_000);
        for t in (0..5_000).step_by(500) {
            h.push(snap(t));
        }
        assert_eq!(h.oldest().unwrap().taken_at_ms, 3_500);
        assert_eq!(h.span_ms(), 1_000);
    }
}
