//! The probe's Unix socket server, on its own OS thread so it answers while the runtime is
//! blocked. Security as in probes/PROTOCOL.md: 0700 folder, 0600 socket, peer uid check.

use crate::lag::Shared;
use crate::wire;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Longest request line accepted from a collector.
const MAX_REQUEST: u64 = 1 << 20;
/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are refused (closed) rather than queued.
const MAX_CONNECTIONS: usize = 8;

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

pub(crate) fn bind(dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(format!("{}.sock", std::process::id()));
    // A socket left by an earlier process with our pid (pid reuse) is stale.
    let _ = std::fs::remove_file(&path);
    // Bind under a restrictive umask-equivalent: chmod right after, before anyone can use it
    // (the folder is 0700, so no one else can reach it in between).
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok((listener, path))
}

pub(crate) fn serve(listener: UnixListener, shared: Arc<Shared>) {
    // Each live connection: a handle on its socket (to shut it down) and its thread.
    let mut connections: Vec<(UnixStream, std::thread::JoinHandle<()>)> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        connections.retain(|(_, thread)| !thread.is_finished());
        match listener.accept() {
            Ok((stream, _)) => {
                if connections.len() >= MAX_CONNECTIONS {
                    continue; // dropped: closes it
                }
                let Ok(handle) = stream.try_clone() else {
                    continue;
                };
                // Weak: a connection idling in read must not keep `Shared` (and through its
                // tokio Handle, the host runtime's epoll and eventfd) alive after the probe
                // and the runtime are dropped; `check` would see them as never closed.
                let shared = Arc::downgrade(&shared);
                let spawned = std::thread::Builder::new()
                    .name("leakhound-conn".into())
                    .spawn(move || {
                        let _ = connection(stream, &shared);
                    });
                if let Ok(thread) = spawned {
                    connections.push((handle, thread));
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
    for (socket, thread) in connections {
        let _ = socket.shutdown(std::net::Shutdown::Both);
        drop(socket);
        let _ = thread.join();
    }
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

/// Reads one line of at most `cap` bytes; `Ok(None)` at end of stream, `Err` past the cap.
pub(crate) fn read_line_capped(
    reader: &mut impl BufRead,
    cap: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(cap + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && n as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("request line over {cap} bytes"),
        ));
    }
    Ok(Some(line))
}

fn send(stream: &mut UnixStream, value: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn hello() -> Value {
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
    };
    serde_json::to_value(hello).unwrap_or(Value::Null)
}

fn connection(stream: UnixStream, shared: &Weak<Shared>) -> std::io::Result<()> {
    if !peer_allowed(&stream) {
        return Ok(());
    }
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    send(&mut writer, &hello())?;
    loop {
        let line = match read_line_capped(&mut reader, MAX_REQUEST) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = send(
                    &mut writer,
                    &json!({"type": "error", "id": null, "error": e.to_string()}),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The probe was dropped: say nothing more, close.
        let Some(shared) = shared.upgrade() else {
            return Ok(());
        };
        let reply = match serde_json::from_slice::<Value>(&line) {
            Ok(req) => answer(&req, &shared),
            Err(e) => Some(
                json!({"type": "error", "id": null, "error": format!("malformed request: {e}")}),
            ),
        };
        drop(shared);
        let Some(reply) = reply else { continue };
        let close = reply["close"].as_bool().unwrap_or(false);
        send(&mut writer, &reply)?;
        if close {
            return Ok(());
        }
    }
}

/// The reply to one request, or `None` for the collector's hello.
fn answer(req: &Value, shared: &Shared) -> Option<Value> {
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

    #[test]
    fn line_cap_refuses_without_buffering_past_it() {
        let long = [b'x'; 100];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line_capped(&mut r, 10).is_err());
        let mut r = BufReader::new(&b"{\"a\":1}\nrest"[..]);
        assert_eq!(
            read_line_capped(&mut r, 10).unwrap().unwrap(),
            b"{\"a\":1}\n"
        );
    }
}
