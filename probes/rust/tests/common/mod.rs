//! A small client of the probe's leakhound/1 socket, shared by the probe's tests.
#![allow(dead_code)] // each test binary uses part of it

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Client {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
    next: u64,
}

impl Client {
    pub fn connect(path: &Path) -> (Client, Value) {
        let stream = UnixStream::connect(path).expect("connect to probe");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut c = Client {
            reader: BufReader::new(stream),
            writer,
            next: 1,
        };
        let hello = c.read();
        c.send(&json!({"type":"hello","protocol":"leakhound/1","client":"test"}));
        (c, hello)
    }
    pub fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).unwrap();
    }
    pub fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }
    pub fn request(&mut self, kind: &str) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"type": kind, "id": id}));
        let reply = self.read();
        assert_eq!(reply["id"], json!(id), "{reply}");
        reply
    }
}

pub fn task<'a>(data: &'a Value, id: &str) -> &'a Value {
    data["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("task {id} not in {}", data["tasks"]))
}

/// One `snapshot` over a new connection to the probe at `path`: its `data`.
pub fn snapshot(path: &Path) -> Value {
    let (mut c, _) = Client::connect(path);
    c.request("snapshot")["data"].clone()
}

/// Where the probe of this process listens when started with the default socket folder.
pub fn default_socket() -> std::path::PathBuf {
    leakhound_probe::socket_dir(None).join(format!("{}.sock", std::process::id()))
}

/// The `missing[]` lines of a snapshot that mention `about`.
pub fn missing_about(data: &Value, about: &str) -> Vec<String> {
    data["missing"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str().filter(|m| m.contains(about)).map(String::from))
        .collect()
}
