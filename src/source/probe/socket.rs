//! A probe reached directly by its socket (`unix:/path`): the in-process view alone.

use super::client::{ProbeClient, is_refused, sample_probe};
use super::discovery::is_socket;
use super::merge::add_missing_notes;
use crate::model::{Snapshot, Thread};
use crate::source::api::{SampleOptions, Source, SourceError, now_ms};
use std::path::{Path, PathBuf};

/// A probe reached directly by its socket (`unix:/path`): the probe's view only.
pub struct ProbeSocketSource {
    path: PathBuf,
    client: Option<ProbeClient>,
    sampled_once: bool,
}

impl ProbeSocketSource {
    /// Connects now, so a wrong path is an error at once.
    pub fn new(path: &Path) -> Result<Self, SourceError> {
        use std::os::unix::fs::FileTypeExt;
        let shown = path.display();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(SourceError::Unreachable(format!(
                    "permission denied reaching probe socket {shown} (a folder on the way is private to another user): run leakhound as the user that owns the program, or as root"
                )));
            }
            Err(_) => {
                return Err(SourceError::Unreachable(format!(
                    "no probe socket at {shown}: check the path, or give the program's PID instead"
                )));
            }
            Ok(m) if !m.file_type().is_socket() => {
                let what = if m.is_dir() {
                    "a folder"
                } else {
                    "a regular file"
                };
                return Err(SourceError::Unreachable(format!(
                    "{shown} is not a socket ({what}): give a probe's socket, e.g. unix:/tmp/leakhound-UID/PID.sock, or the program's PID"
                )));
            }
            Ok(_) => {}
        }
        let client = ProbeClient::connect(path)?;
        Ok(ProbeSocketSource {
            path: path.to_path_buf(),
            client: Some(client),
            sampled_once: false,
        })
    }
}

impl Source for ProbeSocketSource {
    fn describe(&self) -> String {
        format!("unix:{} (probe)", self.path.display())
    }

    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
        let taken_at_ms = now_ms();
        let result = sample_probe(&mut self.client, &self.path, options.stacks);
        match result {
            Ok((hello, data)) => {
                self.sampled_once = true;
                let mut snapshot = Snapshot {
                    taken_at_ms,
                    pid: hello.pid,
                    source: format!("probe({})", data.runtime),
                    threads: data.threads.iter().map(probe_thread).collect(),
                    ..Snapshot::default()
                };
                if let Some(note) = self.client.as_ref().and_then(|c| c.note.as_ref()) {
                    snapshot.notes.push(format!("probe: {note}"));
                }
                add_missing_notes(&mut snapshot, &data);
                snapshot.probe = Some(data);
                snapshot.notes.push(
                    "reached through its socket: the OS view (fds, sockets, children) needs the PID as target"
                        .into(),
                );
                Ok(snapshot)
            }
            // Once it has answered, a socket that is gone or that nobody listens on any more
            // means its process ended (killed, it cannot remove the file): the end of `watch`.
            Err(e) if self.sampled_once && (!is_socket(&self.path) || is_refused(&e)) => {
                Err(SourceError::Gone(format!(
                    "probe gone: {} no longer answers ({e})",
                    self.path.display()
                )))
            }
            Err(e) => Err(e),
        }
    }
}

fn probe_thread(t: &crate::model::ProbeThread) -> Thread {
    Thread {
        tid: t.native_id,
        name: t.name.chars().take(15).collect(),
        runtime_name: Some(t.name.clone()),
        daemon: Some(t.daemon),
        stack: t.stack.clone(),
        ..Thread::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_target_errors_name_the_fix() {
        let err = ProbeSocketSource::new(Path::new("/nonexistent/leakhound/1.sock"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no probe socket at /nonexistent"), "{err}");
        let err = ProbeSocketSource::new(Path::new("/etc/passwd"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/etc/passwd is not a socket (a regular file)"),
            "{err}"
        );
    }
}
