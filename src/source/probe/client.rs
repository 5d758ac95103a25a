//! One connection to a probe over the `leakhound/1` wire protocol (PROTOCOL.md): the hello
//! exchange, `snapshot` requests, and a line reader that refuses what is over the cap.

use crate::model::ProbeData;
use crate::source::api::SourceError;
use crate::source::lines::read_line_capped;
pub use leakhound_protocol::{Hello, PROTOCOL};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A probe's line may be at most this long (PROTOCOL.md): a longer one is refused, not buffered.
pub const REPLY_LINE_CAP: usize = 64 << 20;
/// Every request (the hello exchange, each `snapshot`) is answered in whole within this long,
/// however the probe paces its bytes: a silent or dripping probe costs one sample, not more.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// What a reply may cost once parsed, estimated from its shape before parsing
/// ([`parsed_bytes_bound`]): a 64 MiB line of empty `{}` tasks would take gigabytes.
pub const REPLY_PARSED_CAP: usize = 256 << 20;
/// Tasks and events kept from one reply; the rest are counted as dropped, with a note.
pub const MAX_TASKS: usize = 50_000;
pub const MAX_EVENTS: usize = 10_000;
/// The longest duration a probe may report, in milliseconds (about 31 years): a longer,
/// negative or non-finite one is clamped, with a note.
pub const MAX_DURATION_MS: f64 = 1e12;

/// Who is at the other end of a probe socket, as the kernel says (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

/// One connection to a probe: hello exchanged, requests answered one at a time.
pub struct ProbeClient {
    reader: BufReader<DeadlineStream>,
    writer: UnixStream,
    pub hello: Hello,
    /// The hello's `note` (PROTOCOL.md): why the probe is not where a collector looks first.
    pub note: Option<String>,
    /// The process that listens on the socket.
    pub peer: Option<Peer>,
    next_id: u64,
    pub path: PathBuf,
    timeout: Duration,
    line_cap: usize,
}

/// The read half of a probe connection: every read gives up at a deadline set per request, so
/// a probe sending one byte at a time cannot stretch a request past it.
struct DeadlineStream {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl ProbeClient {
    /// Connects, reads the probe's hello and sends ours. Errors are one line naming the fix.
    pub fn connect(path: &Path) -> Result<Self, SourceError> {
        Self::connect_with_timeout(path, IO_TIMEOUT)
    }

    /// [`ProbeClient::connect`] with another per-operation timeout.
    pub fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<Self, SourceError> {
        let shown = path.display();
        // One deadline for connecting and the hello exchange.
        let deadline = Instant::now() + timeout;
        let stream = connect_within(path, deadline).map_err(|e| connect_error(path, &e))?;
        let io = |e: std::io::Error| SourceError::Unreachable(format!("probe socket {shown}: {e}"));
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let peer = rustix::net::sockopt::socket_peercred(&stream)
            .ok()
            .map(|c| Peer {
                pid: c.pid.as_raw_nonzero().get() as u32,
                uid: c.uid.as_raw(),
            });
        let writer = stream.try_clone().map_err(io)?;
        let mut client = ProbeClient {
            reader: BufReader::with_capacity(64 * 1024, DeadlineStream { stream, deadline }),
            writer,
            hello: Hello::default(),
            note: None,
            peer,
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
        #[derive(Deserialize)]
        struct Note {
            note: Option<String>,
        }
        client.note = serde_json::from_str::<Note>(&line)
            .ok()
            .and_then(|n| n.note)
            .filter(|n| !n.trim().is_empty())
            .map(|n| short(&n.replace('\n', " ")));
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
        self.reader.get_mut().deadline = Instant::now() + self.timeout;
        self.send(&serde_json::json!({"type": "snapshot", "id": id, "stacks": stacks}))?;
        let line = self.read_line()?;
        let bound = parsed_bytes_bound(line.as_bytes());
        if bound > REPLY_PARSED_CAP {
            return Err(SourceError::Protocol(format!(
                "probe at {} sent a snapshot that would take about {} MiB to hold (over the {} MiB cap); refused",
                self.path.display(),
                bound >> 20,
                REPLY_PARSED_CAP >> 20
            )));
        }
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
                Ok(clamp(data))
            }
            ("error", _) => Err(SourceError::Protocol(format!(
                "probe at {}{ERROR_REPLY}{}",
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
        let left = self.reader.get_ref().deadline;
        let left = left.saturating_duration_since(Instant::now());
        let _ = self
            .writer
            .set_write_timeout(Some(left.max(Duration::from_millis(1))));
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
                "probe at {} did not answer in whole within {:?}",
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
    let read = read_line_capped(reader, &mut line, cap, false).map_err(LineError::Io)?;
    if read.over_cap {
        return Err(LineError::TooLong);
    }
    if !read.newline {
        return Err(LineError::Closed);
    }
    String::from_utf8(line).map_err(|_| LineError::NotUtf8)
}

/// An upper bound on what a JSON line costs once parsed into [`ProbeData`], from one pass over
/// its bytes: every object counted as the largest struct (twice, for a vector's spare room),
/// every string as an allocation plus its slot, every other value as a slot.
pub fn parsed_bytes_bound(line: &[u8]) -> usize {
    use crate::model::{EventLoop, Pool, ProbeEvent, Task};
    let largest = [
        std::mem::size_of::<Task>(),
        std::mem::size_of::<ProbeEvent>(),
        std::mem::size_of::<EventLoop>(),
        std::mem::size_of::<Pool>(),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let (mut objects, mut strings, mut commas) = (0usize, 0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in line {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                strings += 1;
            }
            b'{' => objects += 1,
            b',' => commas += 1,
            _ => {}
        }
    }
    line.len() + objects * largest * 2 + strings * (32 + 2 * 24) + commas * 16
}

/// Keeps at most [`MAX_TASKS`] tasks and [`MAX_EVENTS`] events of a reply (a probe sends the
/// ones that matter first), counting the rest as dropped and saying so.
fn clamp(mut data: ProbeData) -> ProbeData {
    /// Truncates `items` to `max`; how many went.
    fn keep<T>(items: &mut Vec<T>, max: usize) -> u64 {
        let extra = items.len().saturating_sub(max);
        if extra > 0 {
            items.truncate(max);
            items.shrink_to_fit();
        }
        extra as u64
    }
    let tasks = keep(&mut data.tasks, MAX_TASKS);
    let events = keep(&mut data.events, MAX_EVENTS);
    data.dropped.tasks += tasks;
    data.dropped.events += events;
    let clamped = clamp_durations(&mut data);
    if clamped > 0 {
        data.missing.push(format!(
            "leakhound clamped {clamped} absurd duration(s) in this reply (negative, not finite or over {MAX_DURATION_MS} ms)"
        ));
    }
    for (extra, max, what) in [(tasks, MAX_TASKS, "tasks"), (events, MAX_EVENTS, "events")] {
        if extra > 0 {
            data.missing.push(format!(
                "leakhound kept the first {max} {what} of this reply and dropped {extra}"
            ));
        }
    }
    data
}

/// Connects without waiting past `deadline`: a plain connect to a Unix socket whose listener
/// never accepts blocks, once its backlog is full, until room is made (forever).
fn connect_within(path: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(rustix::io::Errno::AGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "its listener accepts no connection (backlog full)",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    rustix::io::ioctl_fionbio(&fd, false)?;
    Ok(UnixStream::from(fd))
}

/// Puts every duration a probe reports into `0..=MAX_DURATION_MS` (a busy ratio into 0..=1);
/// how many were out.
fn clamp_durations(data: &mut ProbeData) -> usize {
    let mut out = 0;
    let mut f = |v: &mut f64, max: f64| {
        if !(0.0..=max).contains(v) {
            *v = if v.is_finite() && *v > 0.0 { max } else { 0.0 };
            out += 1;
        }
    };
    for l in &mut data.loops {
        for v in [&mut l.lag.p50_ms, &mut l.lag.p99_ms, &mut l.lag.max_ms] {
            f(v, MAX_DURATION_MS);
        }
        l.lag_history_ms
            .iter_mut()
            .for_each(|v| f(v, MAX_DURATION_MS));
        l.stalls
            .iter_mut()
            .for_each(|s| f(&mut s.duration_ms, MAX_DURATION_MS));
        if let Some(r) = &mut l.runtime {
            f(&mut r.busy_ratio, 1.0);
        }
    }
    let max = MAX_DURATION_MS as u64;
    let mut u = |v: &mut u64| {
        if *v > max {
            *v = max;
            out += 1;
        }
    };
    for t in &mut data.tasks {
        u(&mut t.age_ms);
        u(&mut t.since_progress_ms);
        if let Some(b) = &mut t.busy_ms {
            u(b);
        }
    }
    for p in &mut data.pools {
        u(&mut p.saturated_ms);
    }
    out
}

/// What a failed connect means, in one line naming the fix.
fn connect_error(path: &Path, e: &std::io::Error) -> SourceError {
    let shown = path.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::Unreachable(format!(
            "no probe socket at {shown}: check the path, or give the program's PID instead"
        )),
        std::io::ErrorKind::PermissionDenied => SourceError::Unreachable(format!(
            "permission denied connecting to probe socket {shown}: run leakhound as the user that owns the program, or as root"
        )),
        std::io::ErrorKind::TimedOut => SourceError::Unreachable(format!(
            "probe socket {shown} took no connection in time: {e}; it is not a working probe"
        )),
        std::io::ErrorKind::ConnectionRefused => SourceError::Unreachable(format!(
            "probe socket {shown} refuses connections: nothing listens on it (its program exited or was killed and left the file behind)"
        )),
        _ => SourceError::Unreachable(format!(
            "cannot connect to probe socket {shown}: {e}; is the program still running with its probe loaded?"
        )),
    }
}

/// What an `error` reply reads as, after the probe's path.
const ERROR_REPLY: &str = " answered with an error: ";

fn is_error_reply(e: &SourceError) -> bool {
    matches!(e, SourceError::Protocol(m) if m.contains(ERROR_REPLY))
}

/// Whether an error is a refused connection ([`connect_error`]): nothing listens there.
pub fn is_refused(e: &SourceError) -> bool {
    matches!(e, SourceError::Unreachable(m) if m.contains(" refuses connections:"))
}

fn short(line: &str) -> String {
    let mut s: String = line.chars().take(120).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// Samples through `client`, connecting first if needed; any failure drops the connection so
/// the next sample reconnects.
pub(super) fn sample_probe(
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
        // An `error` reply (e.g. "rate limited") leaves the connection usable.
        Err(e) if is_error_reply(&e) => Err(e),
        Err(e) => {
            *client = None;
            Err(e)
        }
    }
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
    fn a_reply_that_would_be_huge_once_parsed_is_refused_before_parsing() {
        let tiny_tasks = format!(
            "{{\"type\":\"snapshot\",\"id\":1,\"data\":{{\"tasks\":[{}{{}}]}}}}\n",
            "{},".repeat(2_000_000)
        );
        let err = snapshot_from(HELLO, Some(tiny_tasks))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MiB cap); refused"), "{err}");
        // An honest reply of the same length in bytes passes: the bound is about shape.
        let one_big = format!(
            "{{\"type\":\"snapshot\",\"id\":1,\"data\":{{\"missing\":[\"{}\"]}}}}\n",
            "x".repeat(6_000_000)
        );
        assert!(parsed_bytes_bound(one_big.as_bytes()) < 3 * one_big.len());
        let data = snapshot_from(HELLO, Some(one_big)).unwrap();
        assert_eq!(data.missing[0].len(), 6_000_000);
    }

    #[test]
    fn too_many_tasks_or_events_are_clamped_and_counted() {
        let data = ProbeData {
            tasks: vec![Default::default(); MAX_TASKS + 7],
            events: vec![Default::default(); MAX_EVENTS + 3],
            ..Default::default()
        };
        let data = clamp(data);
        assert_eq!(data.tasks.len(), MAX_TASKS);
        assert_eq!(data.events.len(), MAX_EVENTS);
        assert_eq!((data.dropped.tasks, data.dropped.events), (7, 3));
        assert_eq!(data.missing.len(), 2, "{:?}", data.missing);
    }

    #[test]
    fn absurd_durations_are_clamped_with_a_note() {
        let mut data = ProbeData {
            tasks: vec![crate::model::Task {
                age_ms: u64::MAX,
                since_progress_ms: 5,
                ..Default::default()
            }],
            loops: vec![crate::model::EventLoop {
                lag: crate::model::LagStats {
                    max_ms: 1e308,
                    p99_ms: -3.0,
                    p50_ms: 2.0,
                    ..Default::default()
                },
                lag_history_ms: vec![1.0, f64::INFINITY],
                ..Default::default()
            }],
            ..Default::default()
        };
        data = clamp(data);
        assert_eq!(data.tasks[0].age_ms, MAX_DURATION_MS as u64);
        assert_eq!(data.tasks[0].since_progress_ms, 5);
        let l = &data.loops[0];
        assert_eq!(
            (l.lag.max_ms, l.lag.p99_ms, l.lag.p50_ms),
            (MAX_DURATION_MS, 0.0, 2.0)
        );
        assert_eq!(l.lag_history_ms, vec![1.0, 0.0]);
        assert!(
            data.missing[0].contains("clamped 4 absurd"),
            "{:?}",
            data.missing
        );
    }

    #[test]
    fn an_error_reply_keeps_the_connection_for_the_next_tick() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Accepts once: a client that reconnected would find nobody.
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(HELLO.as_bytes()).unwrap();
            let mut lines = BufReader::new(conn.try_clone().unwrap()).lines();
            lines.next(); // our hello
            lines.next();
            let limited = "{\"type\":\"error\",\"id\":1,\"error\":\"rate limited: 10/s\"}\n";
            conn.write_all(limited.as_bytes()).unwrap();
            lines.next();
            let good = "{\"type\":\"snapshot\",\"id\":2,\"data\":{\"runtime\":\"python\"}}\n";
            conn.write_all(good.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let mut client = None;
        let err = sample_probe(&mut client, &path, false).unwrap_err();
        assert!(err.to_string().contains("rate limited"), "{err}");
        assert!(client.is_some());
        let (_, data) = sample_probe(&mut client, &path, false).unwrap();
        assert_eq!(data.runtime, "python");
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
}
