//! The pytest plugin's per-test findings under `check`: each `<pid>.pytest.json` it writes in
//! the run's folder, read once the command has exited.

use crate::findings::Finding;
use std::path::Path;

/// The file the pytest plugin writes under `check`: `<pid>.pytest.json`.
#[derive(Debug, serde::Deserialize)]
pub struct TestFindings {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// Findings from every `*.pytest.json` in the folder; a file that cannot be read or parsed
/// becomes a note, never an error.
pub fn read_test_findings(dir: &Path) -> (Vec<TestFindings>, Vec<String>) {
    let (mut files, mut notes) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (files, notes);
    };
    for path in entries.flatten().map(|e| e.path()) {
        if !path.to_string_lossy().ends_with(".pytest.json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<TestFindings>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(t) => files.push(t),
            Err(e) => notes.push(format!(
                "pytest plugin report {} ignored: {e}",
                path.display()
            )),
        }
    }
    (files, notes)
}
