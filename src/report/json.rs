//! JSON renderings: the snapshot document of `docs/SNAPSHOT.md` and the JSON lines of `watch`.

use crate::findings::Finding;
use crate::model::Snapshot;
use serde::Serialize;

/// `leakhound snapshot --json`: every field of the snapshot plus `findings[]`.
#[derive(Serialize)]
struct SnapshotDocument<'a> {
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    findings: &'a [Finding],
}

pub fn snapshot(snapshot: &Snapshot, findings: &[Finding]) -> String {
    serde_json::to_string_pretty(&SnapshotDocument { snapshot, findings })
        .expect("a snapshot always serializes")
}

/// One `watch --json` line for a finding that just fired: `"type": "finding"`, the time it
/// fired, then the finding's own fields.
pub fn finding_line(finding: &Finding, at_ms: u64) -> String {
    let mut value = serde_json::to_value(finding).expect("a finding always serializes");
    if let Some(map) = value.as_object_mut() {
        map.insert("type".into(), "finding".into());
        map.insert("at_ms".into(), at_ms.into());
    }
    value.to_string()
}

/// The last `watch --json` line.
#[derive(Debug, Serialize)]
pub struct WatchSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub target: String,
    pub samples: u64,
    pub duration_ms: u64,
    /// `duration` (the --for time ran out), `target_exited`, or `interrupted` (Ctrl-C).
    pub ended: &'static str,
    /// Why the target is gone, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_message: Option<String>,
    /// How many times a finding fired.
    pub fired: usize,
    /// Everything that fired, one per rule and subject, with its latest evidence.
    pub findings: Vec<Finding>,
    /// Those still firing at the end: `[rule, subject]` pairs.
    pub active: Vec<(String, String)>,
    /// Transient sampling errors seen.
    pub errors: u64,
}

pub fn summary_line(summary: &WatchSummary) -> String {
    serde_json::to_string(summary).expect("a summary always serializes")
}
