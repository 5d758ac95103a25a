//! The OS view of a PID joined with its in-process view: [`merge`] puts a probe's data into a
//! /proc snapshot, and [`WithProbe`] does it on every sample of a PID.

use super::client::{Hello, ProbeClient, is_refused, sample_probe};
use super::discovery::{check_peer, check_socket, find_socket, is_socket, socket_dirs, uid_of};
use crate::model::{ProbeData, Snapshot};
use crate::source::api::{SampleOptions, Source, SourceError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Wraps an OS-view source of a PID (ProcSource) and merges the PID's probe into each
/// snapshot: runtime thread names, daemon flags and stacks joined by native id, `has_probe`
/// on descendants that have one, and the probe's own data.
pub struct WithProbe<S: Source> {
    inner: S,
    pid: u32,
    client: Option<ProbeClient>,
    /// The socket we last used, so a vanished one is noticed.
    path: Option<PathBuf>,
    /// Look for a probe that was not there at most this often (zero: every sample).
    relook: Duration,
    /// When the last look found none, and why.
    no_probe: Option<(Instant, Vec<String>)>,
}

impl<S: Source> WithProbe<S> {
    pub fn new(inner: S, pid: u32) -> Self {
        WithProbe {
            inner,
            pid,
            client: None,
            path: None,
            relook: Duration::ZERO,
            no_probe: None,
        }
    }

    /// Looks again for a probe that was not there only after `relook` (`leakhound agent`: a
    /// look reads the target's environment and descriptors and lists the socket folders).
    pub fn relooking_every(mut self, relook: Duration) -> Self {
        self.relook = relook;
        self
    }

    /// The probe's data, or `None` with the notes that say why there is none (no socket, an
    /// untrusted one, one nobody listens on).
    fn probe(
        &mut self,
        stacks: bool,
    ) -> Result<Result<(Hello, ProbeData), Vec<String>>, SourceError> {
        if let Some((at, why)) = &self.no_probe
            && at.elapsed() < self.relook
        {
            return Ok(Err(why.clone()));
        }
        let found = find_socket(self.pid);
        let Some(path) = found.socket else {
            self.client = None;
            self.path = None;
            self.no_probe = Some((Instant::now(), found.ignored.clone()));
            return Ok(Err(found.ignored));
        };
        self.no_probe = None;
        if self.path.as_ref() != Some(&path) {
            self.client = None;
            self.path = Some(path.clone());
        }
        if self.client.is_none() {
            let client = match ProbeClient::connect(&path) {
                Ok(c) => c,
                // Nothing listens: a file left behind, not a probe to retry. One note.
                Err(e) if is_refused(&e) => return Ok(Err(vec![e.to_string()])),
                Err(e) => return Err(e),
            };
            if let Some(uid) = uid_of(self.pid)
                && let Err(why) = check_peer(&path, client.peer, self.pid, uid)
            {
                return Ok(Err(vec![why]));
            }
            self.client = Some(client);
        }
        let (hello, data) = sample_probe(&mut self.client, &path, stacks)?;
        if hello.pid != 0 && hello.pid != self.pid {
            self.client = None;
            return Ok(Err(vec![format!(
                "ignored probe socket {}: it answers for pid {}, not {} (stale)",
                path.display(),
                hello.pid,
                self.pid
            )]));
        }
        Ok(Ok((hello, data)))
    }
}

impl<S: Source> Source for WithProbe<S> {
    fn describe(&self) -> String {
        match &self.client {
            Some(c) => format!("pid {} (procfs+probe {})", self.pid, c.hello.runtime),
            None => self.inner.describe(),
        }
    }

    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
        let mut snapshot = self.inner.sample(options)?;
        match self.probe(options.stacks) {
            Ok(Ok((_, data))) => {
                if let Some(note) = self.client.as_ref().and_then(|c| c.note.clone()) {
                    snapshot.notes.push(format!("probe: {note}"));
                }
                merge(&mut snapshot, data)
            }
            Ok(Err(why)) => snapshot.notes.push(no_probe_note_because(self.pid, &why)),
            Err(e) => snapshot.notes.push(format!(
                "probe of pid {} not read this sample (will retry): {e}",
                self.pid
            )),
        }
        // Descendants inherit the root's environment: look in its folders (one environ
        // read per sample, not one per child; none without children).
        let dirs = if snapshot.children.is_empty() {
            Vec::new()
        } else {
            socket_dirs(self.pid)
        };
        for child in &mut snapshot.children {
            let uid = uid_of(child.pid);
            child.has_probe = dirs.iter().any(|d| {
                let path = d.join(format!("{}.sock", child.pid));
                is_socket(&path) && uid.is_none_or(|uid| check_socket(&path, uid).is_ok())
            });
        }
        Ok(snapshot)
    }
}

/// Puts a probe's data into an OS snapshot: threads joined by native id, source renamed
/// (`procfs+probe(python)`), and what the probe cannot see as notes.
pub fn merge(snapshot: &mut Snapshot, data: ProbeData) {
    add_missing_notes(snapshot, &data);
    let via = format!("probe({})", data.runtime);
    join(snapshot, data, &via);
}

/// The one join of an OS view and an in-process view (a probe's, or a tokio-console
/// endpoint's): runtime names, daemon flags and stacks go onto the /proc threads with the
/// same native id, the source becomes `<os>+<via>`, and the in-process data is kept whole.
pub fn join(snapshot: &mut Snapshot, data: ProbeData, via: &str) {
    for thread in &mut snapshot.threads {
        if let Some(p) = data.threads.iter().find(|p| p.native_id == thread.tid) {
            thread.runtime_name = Some(p.name.clone());
            thread.daemon = Some(p.daemon);
            if !p.stack.is_empty() {
                thread.stack = p.stack.clone();
            }
        }
    }
    snapshot.source = format!("{}+{via}", snapshot.source);
    snapshot.probe = Some(data);
}

/// What the probe says it cannot see (and how to turn it on) becomes notes.
pub(super) fn add_missing_notes(snapshot: &mut Snapshot, data: &ProbeData) {
    snapshot
        .notes
        .extend(data.missing.iter().map(|m| format!("probe: {m}")));
}

/// What a snapshot of a PID without a probe still shows, and how to load one.
pub fn no_probe_note(pid: u32) -> String {
    no_probe_note_because(pid, &[])
}

/// [`no_probe_note`] with the reasons a socket that was there is not used (one note, so the
/// reader is not told both "probe not read" and "no probe").
pub fn no_probe_note_because(pid: u32, why: &[String]) -> String {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({})", why.join("; "))
    };
    format!(
        "no probe found in pid {pid}{why}: showing the OS view only (threads, children, fds, \
         sockets, limits). For tasks, event-loop lag, pools and never-awaited/unclosed events, \
         start it with a probe: `leakhound run -- CMD`, or LEAKHOUND_PROBE=1 \
         PYTHONPATH=$(python3 -m leakhound_probe hook-dir) python3 app.py, or call \
         leakhound_probe.install() (Python) / leakhound_probe::init() (Rust)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Thread;

    #[test]
    fn merge_joins_threads_by_native_id() {
        let mut snap = Snapshot {
            source: "procfs".into(),
            threads: vec![
                Thread {
                    tid: 10,
                    name: "python3".into(),
                    ..Thread::default()
                },
                Thread {
                    tid: 11,
                    name: "worker-with-a-l".into(),
                    ..Thread::default()
                },
            ],
            ..Snapshot::default()
        };
        let data = ProbeData {
            runtime: "python".into(),
            missing: vec!["loops, tasks: this process has not imported asyncio".into()],
            threads: vec![crate::model::ProbeThread {
                native_id: 11,
                name: "worker-with-a-long-name".into(),
                daemon: false,
                stack: vec!["app.py:3 in work".into()],
                ..Default::default()
            }],
            ..ProbeData::default()
        };
        merge(&mut snap, data);
        assert_eq!(snap.source, "procfs+probe(python)");
        assert_eq!(
            snap.notes,
            vec!["probe: loops, tasks: this process has not imported asyncio".to_string()]
        );
        assert_eq!(snap.threads[0].runtime_name, None);
        assert_eq!(
            snap.threads[1].runtime_name.as_deref(),
            Some("worker-with-a-long-name")
        );
        assert_eq!(snap.threads[1].daemon, Some(false));
        assert_eq!(snap.threads[1].stack, vec!["app.py:3 in work".to_string()]);
    }

    #[test]
    fn a_console_join_labels_the_source_and_keeps_notes_to_the_caller() {
        let mut snap = Snapshot {
            source: "procfs".into(),
            ..Snapshot::default()
        };
        let data = ProbeData {
            runtime: "tokio-console".into(),
            missing: vec!["lag: not measured".into()],
            ..ProbeData::default()
        };
        join(&mut snap, data.clone(), "console");
        assert_eq!(snap.source, "procfs+console");
        assert!(snap.notes.is_empty(), "{:?}", snap.notes);
        assert_eq!(snap.probe, Some(data));
    }
}
