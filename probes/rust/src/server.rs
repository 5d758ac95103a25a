//! The probe's Unix socket server, on its own OS thread so it answers while the runtime is
//! blocked. Security as in probes/PROTOCOL.md: 0700 folder (see `folder`), 0600 socket, peer
//! uid check. Nothing a collector does holds it for long: a request line must arrive whole
//! within `LINE_DEADLINE`, idle or slow connections make room for a newcomer, and snapshots
//! are rate-limited per connection.

use crate::folder::Bound;
use crate::lag::Shared;
use crate::wire;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Longest request line accepted from a collector.
const MAX_REQUEST: usize = 1 << 20;
/// A request line must be complete this long after its first byte.
const LINE_DEADLINE: Duration = Duration::from_secs(2);
/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; when all are taken, an idle or slow one makes room for a
/// newcomer (see `victim`).
const MAX_CONNECTIONS: usize = 8;
/// A reply not taken for this long may be cut to make room for a newcomer.
const REPLY_STUCK: Duration = Duration::from_secs(1);
/// Snapshots a second per connection (and the burst allowed).
const SNAPSHOT_RATE: f64 = 10.0;
/// Requests of any kind a second per connection; past it, reading the next one waits.
const REQUEST_RATE: f64 = 50.0;

/// Where this process's socket goes, per the protocol's order of choices.
pub fn socket_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("LEAKHOUND_SOCKET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("leakhound");
    }
    PathBuf::from(format!(
        "/tmp/leakhound-{}",
        rustix::process::getuid().as_raw()
    ))
}

/// Binds `<pid>.sock` in `dir` when that folder can be trusted, else in a private folder of
/// the probe's own (see `folder`).
pub(crate) fn bind(dir: &Path) -> std::io::Result<Bound> {
    crate::folder::bind(dir)
}

/// What the accept loop knows of a connection, to choose whom to evict for a newcomer.
struct ConnState {
    /// When it last completed a request (or connected), ms since `epoch`.
    since_ms: AtomicU64,
    requests: AtomicU64,
    replying: AtomicBool,
    epoch: Instant,
}

impl ConnState {
    fn new(epoch: Instant) -> Self {
        ConnState {
            since_ms: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            requests: AtomicU64::new(0),
            replying: AtomicBool::new(false),
            epoch,
        }
    }
    fn request_started(&self) {
        self.since_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.replying.store(true, Ordering::Relaxed);
    }
}

struct Conn {
    socket: UnixStream,
    thread: std::thread::JoinHandle<()>,
    state: Arc<ConnState>,
}

/// When every slot is taken: the connection to drop for a newcomer. One that never completed
/// a request first, then the longest without one; one mid-reply only when its collector has
/// not taken the reply for `REPLY_STUCK`. `None`: all are busy.
fn victim(connections: &[Conn], now_ms: u64) -> Option<usize> {
    let stuck = REPLY_STUCK.as_millis() as u64;
    connections
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let since = c.state.since_ms.load(Ordering::Relaxed);
            !c.state.replying.load(Ordering::Relaxed) || now_ms.saturating_sub(since) >= stuck
        })
        .min_by_key(|(_, c)| {
            (
                c.state.requests.load(Ordering::Relaxed) > 0,
                c.state.since_ms.load(Ordering::Relaxed),
            )
        })
        .map(|(i, _)| i)
}

pub(crate) fn serve(listener: UnixListener, shared: Arc<Shared>, note: Option<String>) {
    let epoch = Instant::now();
    let mut connections: Vec<Conn> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        connections.retain(|c| !c.thread.is_finished());
        match listener.accept() {
            Ok((stream, _)) => {
                if !peer_allowed(&stream) {
                    continue; // dropped: closes it
                }
                if !make_room(&mut connections, epoch, &shared) {
                    let _ = refuse(stream);
                    continue;
                }
                let Ok(socket) = stream.try_clone() else {
                    continue;
                };
                let state = Arc::new(ConnState::new(epoch));
                // Weak: a connection idling in read must not keep `Shared` (and through its
                // tokio Handle, the host runtime's epoll and eventfd) alive after the probe
                // and the runtime are dropped; `check` would see them as never closed.
                let shared = Arc::downgrade(&shared);
                let (s, note) = (state.clone(), note.clone());
                let spawned = std::thread::Builder::new()
                    .name("leakhound-conn".into())
                    .spawn(move || {
                        let _ = connection(stream, &shared, &s, note.as_deref());
                    });
                if let Ok(thread) = spawned {
                    connections.push(Conn {
                        socket,
                        thread,
                        state,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    // Stopping: wake every connection blocked in read and wait for it, so the probe's sockets
    // are closed by the time `Probe` is dropped, not whenever an idle timeout ends.
    for c in connections {
        let _ = c.socket.shutdown(std::net::Shutdown::Both);
        drop(c.socket);
        let _ = c.thread.join();
    }
}

/// Frees a slot when all are taken, evicting a connection (shutdown wakes its thread, which
/// then ends); waits up to `REPLY_STUCK` for one to become evictable. False: still full.
fn make_room(connections: &mut Vec<Conn>, epoch: Instant, shared: &Shared) -> bool {
    let give_up = Instant::now() + REPLY_STUCK + Duration::from_millis(200);
    loop {
        connections.retain(|c| !c.thread.is_finished());
        if connections.len() < MAX_CONNECTIONS {
            return true;
        }
        if let Some(i) = victim(connections, epoch.elapsed().as_millis() as u64) {
            let evicted = connections.swap_remove(i);
            let _ = evicted.socket.shutdown(std::net::Shutdown::Both);
            return true; // its thread is not joined: it ends on its own, at once
        }
        if Instant::now() >= give_up || shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tells a collector turned away why, without waiting on it.
fn refuse(mut stream: UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(100)))?;
    send(
        &mut stream,
        &json!({"type": "error", "id": null, "error": "too many collectors connected"}),
    )
}

fn peer_allowed(stream: &UnixStream) -> bool {
    match rustix::net::sockopt::socket_peercred(stream) {
        Ok(cred) => {
            let uid = cred.uid.as_raw();
            uid == 0 || uid == rustix::process::getuid().as_raw()
        }
        Err(_) => false,
    }
}

/// What reading a request line gave.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    Line(Vec<u8>),
    Eof,
    /// Over the cap: refused without buffering past it.
    TooLong,
    /// Not complete within `LINE_DEADLINE` of its first byte.
    Slow,
}

/// Reads `\n`-terminated lines of at most `cap` bytes, and never waits longer than `deadline`
/// for the rest of a line once its first byte came (a collector dripping bytes is cut off).
pub(crate) struct LineReader<R> {
    inner: R,
    cap: usize,
    deadline: Duration,
    buffer: Vec<u8>,
    started: Option<Instant>,
}

/// A byte source whose read timeout can be set (a socket; a slice in tests).
pub(crate) trait TimedRead: Read {
    fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl TimedRead for UnixStream {
    fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
    }
}

impl<R: TimedRead> LineReader<R> {
    pub(crate) fn new(inner: R, cap: usize, deadline: Duration) -> Self {
        LineReader {
            inner,
            cap,
            deadline,
            buffer: Vec::new(),
            started: None,
        }
    }

    pub(crate) fn next_line(&mut self) -> std::io::Result<Next> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let rest = self.buffer.split_off(end + 1);
                let line = std::mem::replace(&mut self.buffer, rest);
                self.started = (!self.buffer.is_empty()).then(Instant::now);
                return Ok(if line.len() - 1 > self.cap {
                    Next::TooLong
                } else {
                    Next::Line(line)
                });
            }
            if self.buffer.len() > self.cap {
                return Ok(Next::TooLong);
            }
            let timeout = match self.started {
                Some(started) => match self.deadline.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Ok(Next::Slow),
                },
                None => IDLE_TIMEOUT,
            };
            self.inner.set_timeout(timeout)?;
            let n = match self.inner.read(&mut chunk) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(if self.buffer.is_empty() {
                        Next::Eof
                    } else {
                        Next::Slow
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(Next::Eof);
            }
            if self.buffer.is_empty() {
                self.started = Some(Instant::now());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// At most `rate` a second, in bursts of as many.
struct RateLimit {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimit {
    fn new(rate: f64) -> Self {
        RateLimit {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }
    /// Zero and one taken, or how long until one is there (nothing taken).
    fn wait_for_one(&mut self) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        }
        self.tokens -= 1.0;
        Duration::ZERO
    }
    fn take(&mut self) -> bool {
        self.wait_for_one().is_zero()
    }
}

fn send(stream: &mut UnixStream, value: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn hello(note: Option<&str>) -> Value {
    let mut capabilities = vec!["loops", "pools"];
    if cfg!(tokio_unstable) {
        capabilities.push("tasks");
    }
    let hello = leakhound_protocol::Hello {
        kind: "hello".into(),
        protocol: leakhound_protocol::PROTOCOL.into(),
        runtime: "tokio".into(),
        runtime_version: "tokio".into(),
        probe_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        capabilities: capabilities.into_iter().map(String::from).collect(),
        note: note.map(str::to_string),
    };
    serde_json::to_value(hello).unwrap_or(Value::Null)
}

fn connection(
    stream: UnixStream,
    shared: &Weak<Shared>,
    state: &ConnState,
    note: Option<&str>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = LineReader::new(stream, MAX_REQUEST, LINE_DEADLINE);
    send(&mut writer, &hello(note))?;
    let mut limit = RateLimit::new(SNAPSHOT_RATE);
    let mut pace = RateLimit::new(REQUEST_RATE);
    loop {
        let why = match reader.next_line()? {
            Next::Line(line) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                // A collector sending faster than REQUEST_RATE waits: a flood of requests
                // answered at once would take a core from the host.
                loop {
                    let wait = pace.wait_for_one();
                    if wait.is_zero() {
                        break;
                    }
                    std::thread::sleep(wait);
                }
                state.request_started();
                // The probe was dropped: say nothing more, close.
                let Some(shared) = shared.upgrade() else {
                    return Ok(());
                };
                let reply = match serde_json::from_slice::<Value>(&line) {
                    Ok(req) => answer(&req, &shared, &mut limit),
                    Err(e) => Some(json!({"type": "error", "id": null,
                        "error": format!("malformed request: {e}")})),
                };
                drop(shared);
                let Some(reply) = reply else {
                    state.replying.store(false, Ordering::Relaxed);
                    continue;
                };
                let close = reply["close"].as_bool().unwrap_or(false);
                send(&mut writer, &reply)?;
                state.replying.store(false, Ordering::Relaxed);
                if close {
                    return Ok(());
                }
                continue;
            }
            Next::Eof => return Ok(()),
            Next::TooLong => format!("request line over {MAX_REQUEST} bytes; closing"),
            Next::Slow => format!(
                "request line not complete within {} s; closing",
                LINE_DEADLINE.as_secs_f64()
            ),
        };
        let _ = send(
            &mut writer,
            &json!({"type": "error", "id": null, "error": why}),
        );
        return Ok(());
    }
}

/// The reply to one request, or `None` for the collector's hello.
fn answer(req: &Value, shared: &Shared, limit: &mut RateLimit) -> Option<Value> {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let kind = req.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "hello" => {
            let proto = req.get("protocol").and_then(Value::as_str).unwrap_or("");
            if proto.split('/').next() == Some("leakhound") && proto.ends_with("/1") {
                None
            } else {
                Some(json!({"type": "error", "id": id, "close": true,
                    "error": format!("unsupported protocol '{proto}': this probe speaks leakhound/1")}))
            }
        }
        "ping" => Some(json!({"type": "pong", "id": id})),
        "snapshot" if !limit.take() => Some(json!({"type": "error", "id": id,
            "error": format!("rate limited: at most {SNAPSHOT_RATE} snapshots per second per connection")})),
        "snapshot" => {
            // A panic while assembling must not take the connection thread's host with it.
            let data = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serde_json::to_value(wire::snapshot(shared))
            }));
            match data {
                Ok(Ok(data)) => Some(json!({"type": "snapshot", "id": id, "data": data})),
                _ => Some(
                    json!({"type": "error", "id": id, "error": "snapshot failed inside the probe"}),
                ),
            }
        }
        other => Some(json!({"type": "error", "id": id,
            "error": format!("unknown request type '{other}'")})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slice<'a>(&'a [u8]);
    impl Read for Slice<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl TimedRead for Slice<'_> {
        fn set_timeout(&mut self, _: Duration) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn line_cap_refuses_without_buffering_past_it() {
        let long = [b'x'; 100_000];
        let mut r = LineReader::new(Slice(&long), 10, LINE_DEADLINE);
        assert_eq!(r.next_line().unwrap(), Next::TooLong);
        assert!(r.buffer.len() < 10 + 16 * 1024, "{}", r.buffer.len());
        let mut r = LineReader::new(Slice(b"{\"a\":1}\nrest"), 10, LINE_DEADLINE);
        assert_eq!(r.next_line().unwrap(), Next::Line(b"{\"a\":1}\n".to_vec()));
        assert_eq!(r.next_line().unwrap(), Next::Eof);
    }

    #[test]
    fn a_line_past_its_deadline_is_slow() {
        // A deadline already spent once the first byte is in: no waiting on a clock here.
        let mut r = LineReader::new(Slice(b"{\"type\""), 1024, Duration::ZERO);
        assert_eq!(r.next_line().unwrap(), Next::Slow);
    }

    #[test]
    fn snapshots_are_limited_to_a_burst_then_a_rate() {
        let mut limit = RateLimit::new(SNAPSHOT_RATE);
        limit.refilled += Duration::from_secs(3600); // no time passes for this test
        let taken = (0..20).filter(|_| limit.take()).count();
        assert_eq!(taken, SNAPSHOT_RATE as usize);
    }
}
