//! A bounded ring of snapshots of one target: what the rules read.
//!
//! Bounded two ways, by count and by age, so memory stays flat however long `watch` or the
//! dashboard runs.

use crate::model::Snapshot;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct History {
    snapshots: VecDeque<Snapshot>,
    capacity: usize,
    max_age_ms: u64,
    /// When set, the first snapshot pushed sizes `capacity` so the ring stays within this
    /// many bytes: a process with 100,000 tasks gets a shorter window, not gigabytes.
    byte_budget: Option<usize>,
}

/// What [`History::default`] may hold: 64 MiB of snapshots.
pub const DEFAULT_BYTE_BUDGET: usize = 64 << 20;
/// The default window: 600 samples (10 minutes at 1 Hz), for fd-exhaustion's forecasts.
const DEFAULT_CAPACITY: usize = 600;
const DEFAULT_MAX_AGE_MS: u64 = 600_000;
/// The fewest snapshots a budget may shrink the ring to (a trend needs several points).
const MIN_CAPACITY: usize = 3;

impl History {
    /// `capacity` snapshots at most, none older than `max_age_ms` than the newest.
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        History {
            snapshots: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            max_age_ms,
            byte_budget: None,
        }
    }

    /// The default window, shortened as needed to keep within `bytes`, judged by the size of
    /// the first snapshot pushed.
    pub fn bounded(bytes: usize) -> Self {
        History {
            byte_budget: Some(bytes),
            ..History::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE_MS)
        }
    }

    pub fn push(&mut self, snapshot: Snapshot) {
        if let Some(budget) = self.byte_budget.take() {
            let fit = budget / snapshot.approx_bytes().max(1);
            self.capacity = fit.clamp(MIN_CAPACITY, self.capacity.max(MIN_CAPACITY));
        }
        let newest = snapshot.taken_at_ms;
        self.snapshots.push_back(snapshot);
        while self.snapshots.len() > self.capacity {
            self.snapshots.pop_front();
        }
        while let Some(front) = self.snapshots.front() {
            if newest.saturating_sub(front.taken_at_ms) > self.max_age_ms
                && self.snapshots.len() > 1
            {
                self.snapshots.pop_front();
            } else {
                break;
            }
        }
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
    fn bounded_by_bytes_from_the_first_snapshot() {
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
        assert_eq!(h.len(), MIN_CAPACITY);
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
