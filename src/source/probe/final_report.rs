//! The file a probe leaves at exit (PROTOCOL.md, "At exit").

use super::client::{REPLY_LINE_CAP, REPLY_PARSED_CAP, parsed_bytes_bound};
use crate::source::api::SourceError;
pub use leakhound_protocol::FinalReport;
use std::path::{Path, PathBuf};

/// Final reports size cap, like a reply line.
pub const FINAL_FILE_CAP: u64 = REPLY_LINE_CAP as u64;

/// Reads one final report; a missing, oversized or malformed file is a one-line error.
pub fn read_final(path: &Path) -> Result<FinalReport, SourceError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        SourceError::Unreachable(format!(
            "cannot read probe final report {}: {e}",
            path.display()
        ))
    })?;
    let mut text = String::new();
    file.take(FINAL_FILE_CAP + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            SourceError::Protocol(format!("probe final report {}: {e}", path.display()))
        })?;
    if text.len() as u64 > FINAL_FILE_CAP {
        return Err(SourceError::Protocol(format!(
            "probe final report {} is over the {} MiB cap; ignored",
            path.display(),
            FINAL_FILE_CAP >> 20
        )));
    }
    if parsed_bytes_bound(text.as_bytes()) > REPLY_PARSED_CAP {
        return Err(SourceError::Protocol(format!(
            "probe final report {} would take over {} MiB to hold; ignored",
            path.display(),
            REPLY_PARSED_CAP >> 20
        )));
    }
    serde_json::from_str(&text).map_err(|e| {
        SourceError::Protocol(format!(
            "probe final report {} is malformed ({e}); ignored",
            path.display()
        ))
    })
}

/// Every `<pid>.final.json` in a socket folder, by pid; unreadable ones become notes.
pub fn read_finals(socket_dir: &Path) -> (Vec<FinalReport>, Vec<String>) {
    let mut reports = Vec::new();
    let mut notes = Vec::new();
    let Ok(entries) = std::fs::read_dir(socket_dir) else {
        return (reports, notes);
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".final.json"))
        .collect();
    paths.sort();
    for path in paths {
        match read_final(&path) {
            Ok(r) => reports.push(r),
            Err(e) => notes.push(e.to_string()),
        }
    }
    (reports, notes)
}
