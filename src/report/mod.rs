//! Renderers: they only format what the model and the rules produced, never judge.
//!
//! `text` is for people (tables), `json` is the stable machine interface of
//! `docs/SNAPSHOT.md` and the JSON lines of `watch`. Other formats (JUnit, SARIF) sit beside
//! them, one module each.

pub mod json;
pub mod junit;
pub mod sarif;
pub mod text;
pub mod verdict;

use crate::model::Snapshot;

/// What a snapshot lacks without a probe, and how to load one. Consumers add it to the notes
/// when a local process answered without a probe.
pub fn no_probe_note(snapshot: &Snapshot) -> Option<String> {
    if snapshot.probe.is_some() || snapshot.pid == 0 {
        return None;
    }
    Some(crate::source::probe::no_probe_note(snapshot.pid))
}

/// Adds [`no_probe_note`] to the snapshot's notes when it applies (once).
pub fn add_no_probe_note(snapshot: &mut Snapshot) {
    if let Some(note) = no_probe_note(snapshot)
        && !snapshot
            .notes
            .iter()
            .any(|n| n.starts_with("no probe found"))
    {
        snapshot.notes.push(note);
    }
}
