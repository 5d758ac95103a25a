//! What the probe-based rules share: reading the newest probe view, formatting durations.

use crate::history::History;
use crate::model::{ProbeData, ProbeEvent, ProbeEventKind, Snapshot};

/// The newest snapshot that carries probe data, with that data.
pub fn latest_probe(history: &History) -> Option<(&Snapshot, &ProbeData)> {
    let latest = history.latest()?;
    latest.probe.as_ref().map(|p| (latest, p))
}

/// Events of one kind in the newest probe view (the probe's ring holds them until they fall
/// out, so the newest view has every recent one, coalesced with its count).
pub fn events_of(history: &History, kind: ProbeEventKind) -> Vec<&ProbeEvent> {
    latest_probe(history)
        .map(|(_, p)| p.events.iter().filter(|e| e.kind == kind).collect())
        .unwrap_or_default()
}

/// Events of one kind as findings name them: one per subject and innermost site frame. A probe
/// coalesces repeats of the exact (subject, whole site); one line reached from several callers
/// is still one bug, so those are merged here, counts summed, the first one's site kept.
pub fn events_by_site(history: &History, kind: ProbeEventKind) -> Vec<ProbeEvent> {
    let mut out: Vec<ProbeEvent> = Vec::new();
    for e in events_of(history, kind) {
        match out
            .iter_mut()
            .find(|o| o.subject == e.subject && innermost(&o.site) == innermost(&e.site))
        {
            Some(same) => same.count += e.count,
            None => out.push(e.clone()),
        }
    }
    out
}

/// Seconds with one decimal, for evidence.
pub fn secs(ms: u64) -> f64 {
    (ms as f64 / 100.0).round() / 10.0
}

/// `where` for a subject: the innermost site frame, or `unknown site`.
pub fn innermost(site: &[String]) -> &str {
    site.last().map_or("unknown site", |s| s.as_str())
}

#[cfg(test)]
pub mod testing {
    use crate::history::History;
    use crate::model::{EventLoop, LagStats, Pool, ProbeData, Snapshot, Stall, Task, TaskState};

    /// A history of probe views, one per `(t_ms, data)`, for pid 42.
    pub fn history(views: Vec<(u64, ProbeData)>) -> History {
        let mut h = History::default();
        for (t, data) in views {
            h.push(Snapshot {
                taken_at_ms: t,
                pid: 42,
                probe: Some(data),
                ..Snapshot::default()
            });
        }
        h
    }

    /// A tokio task as the Rust probe and the console source send it.
    pub fn tokio_task(id: &str, polls: u64, age_ms: u64, since_progress_ms: u64) -> Task {
        Task {
            id: id.into(),
            kind: "task".into(),
            state: TaskState::Idle,
            spawn_location: Some("src/main.rs:10:5".into()),
            age_ms,
            since_progress_ms,
            polls: Some(polls),
            busy_ms: Some(0),
            loop_id: Some("tokio".into()),
            ..Task::default()
        }
    }

    /// A tokio runtime view, `now_ms` 100 s, a 10 s lag window.
    pub fn tokio(tasks: Vec<Task>, stalls: Vec<Stall>, pools: Vec<Pool>) -> ProbeData {
        ProbeData {
            runtime: "tokio".into(),
            now_ms: 100_000,
            loops: vec![EventLoop {
                id: "tokio".into(),
                running: true,
                lag: LagStats {
                    window_ms: 10_000,
                    ..LagStats::default()
                },
                stalls,
                ..EventLoop::default()
            }],
            tasks,
            pools,
            ..ProbeData::default()
        }
    }
}
