//! The probe source: reaches a probe (Python `leakhound_probe`, Rust `leakhound-probe`) over
//! the `leakhound/1` wire protocol of `probes/PROTOCOL.md`, and merges what it says into the
//! /proc view of a PID.
//!
//! Also: [`inject`], which starts a program with the Python probe loaded (the probe's files are
//! embedded in this binary and written to a versioned cache folder, so an installed leakhound
//! is self-contained), and [`read_final`], the file a probe leaves at exit.

use super::{SampleOptions, Source, SourceError, now_ms};
use crate::model::{ProbeData, Snapshot, Thread};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PROTOCOL: &str = "leakhound/1";
/// A probe's line may be at most this long (PROTOCOL.md): a longer one is refused, not buffered.
pub const REPLY_LINE_CAP: usize = 64 << 20;
/// Every socket operation gives up after this long: a silent probe costs one sample, not more.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// The probe's first line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Hello {
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol: String,
    pub runtime: String,
    pub runtime_version: String,
    pub probe_version: String,
    pub pid: u32,
    pub capabilities: Vec<String>,
}

/// One connection to a probe: hello exchanged, requests answered one at a time.
pub struct ProbeClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub hello: Hello,
    next_id: u64,
    pub path: PathBuf,
    timeout: Duration,
    line_cap: usize,
}

impl ProbeClient {
    /// Connects, reads the probe's hello and sends ours. Errors are one line naming the fix.
    pub fn connect(path: &Path) -> Result<Self, SourceError> {
        Self::connect_with_timeout(path, IO_TIMEOUT)
    }

    /// [`ProbeClient::connect`] with another per-operation timeout.
    pub fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<Self, SourceError> {
        let shown = path.display();
        let stream = UnixStream::connect(path).map_err(|e| {
            SourceError::Unreachable(format!(
                "cannot connect to probe socket {shown}: {e}; is the program still running with its probe loaded?"
            ))
        })?;
        let io = |e: std::io::Error| SourceError::Unreachable(format!("probe socket {shown}: {e}"));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut client = ProbeClient {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            hello: Hello::default(),
            next_id: 1,
            path: path.to_path_buf(),
            timeout,
            line_cap: REPLY_LINE_CAP,
        };
        let line = client.read_line()?;
        let hello: Hello = serde_json::from_str(&line).map_err(|e| {
            SourceError::Protocol(format!(
                "probe socket {shown} sent a malformed hello ({e}); is it a leakhound probe?"
            ))
        })?;
        if hello.kind == "error" {
            return Err(SourceError::Protocol(format!(
                "probe at {shown} refused the connection: {}",
                short(&line)
            )));
        }
        if hello.kind != "hello" || !hello.protocol.starts_with("leakhound/") {
            return Err(SourceError::Protocol(format!(
                "probe socket {shown} did not greet with a leakhound hello: {}",
                short(&line)
            )));
        }
        if hello.protocol != PROTOCOL {
            return Err(SourceError::Protocol(format!(
                "probe at {shown} speaks {} but this leakhound speaks {PROTOCOL}: use matching versions",
                hello.protocol
            )));
        }
        client.hello = hello;
        let ours = serde_json::json!({
            "type": "hello",
            "protocol": PROTOCOL,
            "client": concat!("leakhound ", env!("CARGO_PKG_VERSION")),
        });
        client.send(&ours)?;
        Ok(client)
    }

    /// One `snapshot` request and its reply.
    pub fn snapshot(&mut self, stacks: bool) -> Result<ProbeData, SourceError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&serde_json::json!({"type": "snapshot", "id": id, "stacks": stacks}))?;
        let line = self.read_line()?;
        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            id: Option<serde_json::Value>,
            #[serde(default)]
            data: Option<ProbeData>,
            #[serde(default)]
            error: Option<String>,
        }
        let reply: Reply = serde_json::from_str(&line).map_err(|e| {
            SourceError::Protocol(format!(
                "probe at {} sent a malformed snapshot ({e})",
                self.path.display()
            ))
        })?;
        match (reply.kind.as_str(), reply.data) {
            ("snapshot", Some(data)) if reply.id.as_ref().and_then(|v| v.as_u64()) == Some(id) => {
                Ok(data)
            }
            ("error", _) => Err(SourceError::Protocol(format!(
                "probe at {} answered with an error: {}",
                self.path.display(),
                reply.error.unwrap_or_default()
            ))),
            _ => Err(SourceError::Protocol(format!(
                "probe at {} sent an unexpected reply to snapshot {id}: {}",
                self.path.display(),
                short(&line)
            ))),
        }
    }

    fn send(&mut self, message: &serde_json::Value) -> Result<(), SourceError> {
        let mut line = message.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| {
            SourceError::Unreachable(format!(
                "probe at {} stopped listening: {e}",
                self.path.display()
            ))
        })
    }

    /// Reads one line, refusing (not buffering) anything over [`REPLY_LINE_CAP`].
    fn read_line(&mut self) -> Result<String, SourceError> {
        read_capped_line(&mut self.reader, self.line_cap).map_err(|e| match e {
            LineError::Io(e) if is_timeout(&e) => SourceError::Unreachable(format!(
                "probe at {} did not answer within {:?}",
                self.path.display(),
                self.timeout
            )),
            LineError::Io(e) => {
                SourceError::Unreachable(format!("probe at {}: {e}", self.path.display()))
            }
            LineError::Closed => SourceError::Unreachable(format!(
                "probe at {} closed the connection",
                self.path.display()
            )),
            LineError::TooLong => SourceError::Protocol(format!(
                "probe at {} sent a line over the {}-byte cap; refused",
                self.path.display(),
                self.line_cap
            )),
            LineError::NotUtf8 => SourceError::Protocol(format!(
                "probe at {} sent a line that is not UTF-8",
                self.path.display()
            )),
        })
    }
}

#[derive(Debug)]
enum LineError {
    Io(std::io::Error),
    Closed,
    TooLong,
    NotUtf8,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One `\n`-terminated line, at most `cap` bytes; never holds more than `cap` in memory.
fn read_capped_line(reader: &mut impl BufRead, cap: usize) -> Result<String, LineError> {
    let mut line = Vec::new();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Io(e)),
        };
        if chunk.is_empty() {
            return Err(LineError::Closed);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > cap {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return String::from_utf8(line).map_err(|_| LineError::NotUtf8);
        }
    }
}

fn short(line: &str) -> String {
    let mut s: String = line.chars().take(120).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

// --- finding a PID's socket ---------------------------------------------------------------

/// Folders a probe of `pid` may listen in (PROTOCOL.md), most specific first: the target's own
/// `LEAKHOUND_SOCKET_DIR` / `XDG_RUNTIME_DIR` (read from /proc/PID/environ when allowed), ours,
/// then `/tmp/leakhound-<uid>` for the target's uid and ours.
pub fn socket_dirs(pid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let from_target = |key: &str| -> Option<String> {
        environ.split(|&b| b == 0).find_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (k, v) = text.split_once('=')?;
            (k == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    let ours = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    for value in [
        from_target("LEAKHOUND_SOCKET_DIR"),
        ours("LEAKHOUND_SOCKET_DIR"),
    ]
    .into_iter()
    .flatten()
    {
        dirs.push(PathBuf::from(value));
    }
    for value in [from_target("XDG_RUNTIME_DIR"), ours("XDG_RUNTIME_DIR")]
        .into_iter()
        .flatten()
    {
        dirs.push(Path::new(&value).join("leakhound"));
    }
    let target_uid = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    for uid in [target_uid, Some(rustix::process::getuid().as_raw())]
        .into_iter()
        .flatten()
    {
        dirs.push(PathBuf::from(format!("/tmp/leakhound-{uid}")));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The socket a probe of `pid` listens on, if one exists.
pub fn find_socket(pid: u32) -> Option<PathBuf> {
    socket_dirs(pid)
        .into_iter()
        .map(|d| d.join(format!("{pid}.sock")))
        .find(|p| is_socket(p))
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

// --- sources --------------------------------------------------------------------------------

/// A probe reached directly by its socket (`unix:/path`): the probe's view only.
pub struct ProbeSocketSource {
    path: PathBuf,
    client: Option<ProbeClient>,
    sampled_once: bool,
}

impl ProbeSocketSource {
    /// Connects now, so a wrong path is an error at once.
    pub fn new(path: &Path) -> Result<Self, SourceError> {
        if !path.exists() {
            return Err(SourceError::Unreachable(format!(
                "no probe socket at {}: check the path, or give the program's PID instead",
                path.display()
            )));
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
                add_missing_notes(&mut snapshot, &data);
                snapshot.probe = Some(data);
                snapshot.notes.push(
                    "reached through its socket: the OS view (fds, sockets, children) needs the PID as target"
                        .into(),
                );
                Ok(snapshot)
            }
            Err(e) if self.sampled_once && !is_socket(&self.path) => Err(SourceError::Gone(
                format!("probe socket {} is gone: {e}", self.path.display()),
            )),
            Err(e) => Err(e),
        }
    }
}

/// Samples through `client`, connecting first if needed; any failure drops the connection so
/// the next sample reconnects.
fn sample_probe(
    client: &mut Option<ProbeClient>,
    path: &Path,
    stacks: bool,
) -> Result<(Hello, ProbeData), SourceError> {
    if client.is_none() {
        *client = Some(ProbeClient::connect(path)?);
    }
    let connected = client.as_mut().expect("set above");
    match connected.snapshot(stacks) {
        Ok(data) => Ok((connected.hello.clone(), data)),
        Err(e) => {
            *client = None;
            Err(e)
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

/// Wraps an OS-view source of a PID (ProcSource) and merges the PID's probe into each
/// snapshot: runtime thread names, daemon flags and stacks joined by native id, `has_probe`
/// on descendants that have one, and the probe's own data.
pub struct WithProbe<S: Source> {
    inner: S,
    pid: u32,
    client: Option<ProbeClient>,
    /// The socket we last used, so a vanished one is noticed.
    path: Option<PathBuf>,
}

impl<S: Source> WithProbe<S> {
    pub fn new(inner: S, pid: u32) -> Self {
        WithProbe {
            inner,
            pid,
            client: None,
            path: None,
        }
    }

    fn probe(&mut self, stacks: bool) -> Result<Option<(Hello, ProbeData)>, SourceError> {
        let Some(path) = find_socket(self.pid) else {
            self.client = None;
            self.path = None;
            return Ok(None);
        };
        if self.path.as_ref() != Some(&path) {
            self.client = None;
            self.path = Some(path.clone());
        }
        let (hello, data) = sample_probe(&mut self.client, &path, stacks)?;
        if hello.pid != 0 && hello.pid != self.pid {
            self.client = None;
            return Err(SourceError::Protocol(format!(
                "stale probe socket {}: it answers for pid {}, not {}",
                path.display(),
                hello.pid,
                self.pid
            )));
        }
        Ok(Some((hello, data)))
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
            Ok(Some((_, data))) => merge(&mut snapshot, data),
            Ok(None) => snapshot.notes.push(no_probe_note(self.pid)),
            Err(e) => snapshot.notes.push(format!(
                "probe of pid {} not read this sample (will retry): {e}",
                self.pid
            )),
        }
        // Descendants inherit the root's environment: look in its folders (one environ
        // read per sample, not one per child).
        let dirs = socket_dirs(self.pid);
        for child in &mut snapshot.children {
            child.has_probe = dirs
                .iter()
                .any(|d| is_socket(&d.join(format!("{}.sock", child.pid))));
        }
        Ok(snapshot)
    }
}

/// Puts a probe's data into an OS snapshot: threads joined by native id, source renamed.
pub fn merge(snapshot: &mut Snapshot, data: ProbeData) {
    for thread in &mut snapshot.threads {
        if let Some(p) = data.threads.iter().find(|p| p.native_id == thread.tid) {
            thread.runtime_name = Some(p.name.clone());
            thread.daemon = Some(p.daemon);
            if !p.stack.is_empty() {
                thread.stack = p.stack.clone();
            }
        }
    }
    snapshot.source = format!("{}+probe({})", snapshot.source, data.runtime);
    add_missing_notes(snapshot, &data);
    snapshot.probe = Some(data);
}

/// What the probe says it cannot see (and how to turn it on) becomes notes.
fn add_missing_notes(snapshot: &mut Snapshot, data: &ProbeData) {
    snapshot
        .notes
        .extend(data.missing.iter().map(|m| format!("probe: {m}")));
}

/// What a snapshot of a PID without a probe still shows, and how to load one.
pub fn no_probe_note(pid: u32) -> String {
    format!(
        "no probe found in pid {pid}: showing the OS view only (threads, children, fds, \
         sockets, limits). For tasks, event-loop lag, pools and never-awaited/unclosed events, \
         start it with a probe: `leakhound run -- CMD`, or LEAKHOUND_PROBE=1 \
         PYTHONPATH=$(python3 -m leakhound_probe hook-dir) python3 app.py, or call \
         leakhound_probe.install() (Python) / leakhound_probe::init() (Rust)"
    )
}

// --- the file a probe leaves at exit ------------------------------------------------------

/// `$LEAKHOUND_SOCKET_DIR/<pid>.final.json`, written by a probe when shutdown begins and again
/// at exit (PROTOCOL.md, "At exit").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FinalReport {
    pub protocol: String,
    pub pid: u32,
    pub data: ProbeData,
}

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

// --- starting a program with the Python probe ---------------------------------------------

/// The Python probe's files, embedded so an installed binary needs nothing else.
const PYTHON_PROBE_FILES: &[(&str, &str)] = &[
    (
        "leakhound_probe/__init__.py",
        include_str!("../../probes/python/src/leakhound_probe/__init__.py"),
    ),
    (
        "leakhound_probe/__main__.py",
        include_str!("../../probes/python/src/leakhound_probe/__main__.py"),
    ),
    (
        "leakhound_probe/_util.py",
        include_str!("../../probes/python/src/leakhound_probe/_util.py"),
    ),
    (
        "leakhound_probe/_probe.py",
        include_str!("../../probes/python/src/leakhound_probe/_probe.py"),
    ),
    (
        "leakhound_probe/_patches.py",
        include_str!("../../probes/python/src/leakhound_probe/_patches.py"),
    ),
    (
        "leakhound_probe/_server.py",
        include_str!("../../probes/python/src/leakhound_probe/_server.py"),
    ),
    (
        "leakhound_probe/_logids.py",
        include_str!("../../probes/python/src/leakhound_probe/_logids.py"),
    ),
    (
        "leakhound_probe/_runtime.py",
        include_str!("../../probes/python/src/leakhound_probe/_runtime.py"),
    ),
    (
        "leakhound_probe/_open_at_exit.py",
        include_str!("../../probes/python/src/leakhound_probe/_open_at_exit.py"),
    ),
    (
        "leakhound_probe/_sites.py",
        include_str!("../../probes/python/src/leakhound_probe/_sites.py"),
    ),
    (
        "leakhound_probe/pytest_plugin.py",
        include_str!("../../probes/python/src/leakhound_probe/pytest_plugin.py"),
    ),
    (
        "leakhound_probe/_hook/__init__.py",
        include_str!("../../probes/python/src/leakhound_probe/_hook/__init__.py"),
    ),
    (
        "leakhound_probe/_hook/sitecustomize.py",
        include_str!("../../probes/python/src/leakhound_probe/_hook/sitecustomize.py"),
    ),
];

/// FNV-1a over the embedded files: names the cache folder, so a new build never reuses
/// another build's files.
fn files_hash() -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, body) in PYTHON_PROBE_FILES {
        for byte in name.bytes().chain([0]).chain(body.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn cache_root() -> PathBuf {
    let from_env = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dir) = from_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("leakhound");
    }
    if let Some(home) = from_env("HOME") {
        return PathBuf::from(home).join(".cache").join("leakhound");
    }
    std::env::temp_dir().join(format!(
        "leakhound-{}-cache",
        rustix::process::getuid().as_raw()
    ))
}

/// Writes the embedded probe to its versioned cache folder (once) and returns the folder to
/// put on `PYTHONPATH` (the one holding `sitecustomize.py`).
pub fn python_hook_dir() -> std::io::Result<PathBuf> {
    let root = cache_root().join(format!(
        "python-probe-{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        files_hash()
    ));
    let hook = root.join("leakhound_probe").join("_hook");
    if root.join(".complete").exists() {
        return Ok(hook);
    }
    // Written beside, then renamed into place: two leakhounds starting at once both succeed.
    let parent = root.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".staging-{}-{}", std::process::id(), now_ms()));
    for (name, body) in PYTHON_PROBE_FILES {
        let path = staging.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, body)?;
    }
    std::fs::write(staging.join(".complete"), b"")?;
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if !root.join(".complete").exists() {
            return Err(std::io::Error::other(format!(
                "could not place the Python probe in {}",
                root.display()
            )));
        }
    }
    Ok(hook)
}

/// Prepares `cmd` so the Python programs it starts (and all their Python children) load the
/// probe and listen in `socket_dir`: sets `LEAKHOUND_PROBE=1`, `LEAKHOUND_SOCKET_DIR`, and puts
/// the probe's hook folder first on `PYTHONPATH`. Creates `socket_dir` (0700) if needed.
/// Returns the hook folder.
pub fn inject(cmd: &mut std::process::Command, socket_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let hook = python_hook_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(socket_dir)?;
    std::fs::set_permissions(socket_dir, std::fs::Permissions::from_mode(0o700))?;
    let existing = cmd
        .get_envs()
        .find(|(k, _)| *k == "PYTHONPATH")
        .map(|(_, v)| v.map(|v| v.to_os_string()))
        .unwrap_or_else(|| std::env::var_os("PYTHONPATH"));
    let mut paths = vec![hook.clone()];
    if let Some(existing) = existing {
        paths.extend(std::env::split_paths(&existing));
    }
    let joined = std::env::join_paths(paths).map_err(std::io::Error::other)?;
    cmd.env("LEAKHOUND_PROBE", "1")
        .env("LEAKHOUND_SOCKET_DIR", socket_dir)
        .env("PYTHONPATH", joined);
    Ok(hook)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn capped_line_reader_refuses_long_lines_without_buffering_them() {
        let mut ok = Cursor::new(b"{\"a\":1}\nrest".to_vec());
        assert_eq!(read_capped_line(&mut ok, 100).unwrap(), "{\"a\":1}");
        let mut long = BufReader::with_capacity(8, Cursor::new(vec![b'x'; 1000]));
        assert!(matches!(
            read_capped_line(&mut long, 100),
            Err(LineError::TooLong)
        ));
        // Refused after reading just past the cap, not the whole input.
        assert!(long.into_inner().position() <= 116);
        let mut half = Cursor::new(b"{\"type\":\"hel".to_vec());
        assert!(matches!(
            read_capped_line(&mut half, 100),
            Err(LineError::Closed)
        ));
        let mut bad = Cursor::new(vec![0xff, 0xfe, b'\n']);
        assert!(matches!(
            read_capped_line(&mut bad, 100),
            Err(LineError::NotUtf8)
        ));
    }

    /// A fake probe: greets with `hello`, then answers the first request line with `reply`
    /// (or stays silent when `None`), then hangs up.
    fn fake_probe(hello: &'static str, reply: Option<String>) -> (tempfile::TempDir, PathBuf) {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = conn.write_all(hello.as_bytes());
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            // Our hello, then the request.
            while seen.iter().filter(|&&b| b == b'\n').count() < 2 {
                match conn.read(&mut byte) {
                    Ok(1) => seen.push(byte[0]),
                    _ => return,
                }
            }
            match reply {
                Some(r) => {
                    let _ = conn.write_all(r.as_bytes());
                }
                None => std::thread::sleep(Duration::from_millis(800)),
            }
        });
        (dir, path)
    }

    const HELLO: &str =
        "{\"type\":\"hello\",\"protocol\":\"leakhound/1\",\"runtime\":\"python\",\"pid\":1}\n";

    fn snapshot_from(hello: &'static str, reply: Option<String>) -> Result<ProbeData, SourceError> {
        let (_dir, path) = fake_probe(hello, reply);
        let mut client = ProbeClient::connect_with_timeout(&path, Duration::from_millis(300))?;
        client.snapshot(false)
    }

    #[test]
    fn a_good_reply_parses_and_unknown_fields_are_ignored() {
        let reply = "{\"type\":\"snapshot\",\"id\":1,\"new_field\":true,\"data\":{\"runtime\":\"python\",\"tasks\":[{\"id\":\"Task-1\",\"future\":1}]}}\n";
        let data = snapshot_from(HELLO, Some(reply.into())).unwrap();
        assert_eq!(data.tasks[0].id, "Task-1");
    }

    #[test]
    fn bad_probes_give_one_line_errors_not_panics() {
        let cases: Vec<(&'static str, Option<String>, &str)> = vec![
            (HELLO, Some("not json\n".into()), "malformed snapshot"),
            (
                HELLO,
                Some("{\"type\":\"snapshot\",\"id\":1,\"data\":{\"tasks\":7}}\n".into()),
                "malformed",
            ),
            (
                HELLO,
                Some("{\"type\":\"error\",\"id\":1,\"error\":\"boom\"}\n".into()),
                "boom",
            ),
            (
                HELLO,
                Some("{\"type\":\"snapshot\",\"id\":9,\"data\":{}}\n".into()),
                "unexpected reply",
            ),
            (
                HELLO,
                Some("{\"type\":\"snapsh".into()),
                "closed the connection",
            ),
            (HELLO, None, "did not answer"),
            (
                "{\"type\":\"hello\",\"protocol\":\"leakhound/2\"}\n",
                None,
                "speaks leakhound/2",
            ),
            ("GET / HTTP/1.1\n", None, "malformed hello"),
            ("{\"type\":\"greeting\"}\n", None, "did not greet"),
        ];
        for (hello, reply, expected) in cases {
            let err = snapshot_from(hello, reply).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_reply_over_the_cap_is_refused() {
        let (_dir, path) = fake_probe(HELLO, Some(format!("{}\n", "x".repeat(4096))));
        let mut client =
            ProbeClient::connect_with_timeout(&path, Duration::from_millis(300)).unwrap();
        client.line_cap = 1024;
        let err = client.snapshot(false).unwrap_err().to_string();
        assert!(err.contains("over the 1024-byte cap"), "{err}");
    }

    #[test]
    fn socket_target_errors_name_the_fix() {
        let err = ProbeSocketSource::new(Path::new("/nonexistent/leakhound/1.sock"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no probe socket at /nonexistent"), "{err}");
    }

    #[test]
    fn every_probe_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/python/src");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.join("leakhound_probe")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("__pycache__") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "py") {
                    let rel = path.strip_prefix(&root).unwrap();
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = PYTHON_PROBE_FILES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new probe files to PYTHON_PROBE_FILES"
        );
    }

    #[test]
    fn inject_sets_the_environment_and_writes_the_hook() {
        let tmp = tempfile::tempdir().unwrap();
        let socket_dir = tmp.path().join("sockets");
        let mut cmd = std::process::Command::new("python3");
        cmd.env("PYTHONPATH", "/somewhere/else");
        let hook = inject(&mut cmd, &socket_dir).unwrap();
        assert!(hook.join("sitecustomize.py").is_file());
        assert!(hook.parent().unwrap().join("_probe.py").is_file());
        let env: std::collections::HashMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
            .collect();
        let path = env["PYTHONPATH".as_ref() as &std::ffi::OsStr]
            .clone()
            .unwrap();
        let parts: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(parts, vec![hook.clone(), PathBuf::from("/somewhere/else")]);
        assert_eq!(
            env["LEAKHOUND_PROBE".as_ref() as &std::ffi::OsStr],
            Some("1".into())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

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
}
