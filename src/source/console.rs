//! The `console` source: a tokio-console (`console-api` gRPC) client.
//!
//! A background thread runs a small current-thread tokio runtime that holds the
//! `WatchUpdates` stream and folds its incremental updates into [`ConsoleState`]: tasks keyed
//! by span id, field names interned per metadata id, stats replaced as they arrive. `sample`
//! only reads that state. The task id reported is the `task.id` field (tokio's
//! `task::Id`, what `task=` carries in log lines), not the span id. Completed tasks are kept
//! in a small bounded set; dropped resources and async ops are forgotten at once.
//!
//! When the endpoint is on this machine the process that owns the listening port is found
//! (its LISTEN socket's inode, then `/proc/*/fd`) and the snapshot is joined with its /proc
//! view. The stream is re-opened with capped exponential backoff when the service restarts.

use super::api::{SampleOptions, Source, SourceError, now_ms};
use super::procfs::ProcSource;
use crate::model::{EventLoop, LagStats, Pool, ProbeData, Snapshot, Stall, Task, TaskState};
use console_api::instrument::InstrumentRequest;
use console_api::instrument::instrument_client::InstrumentClient;
use console_api::tasks::task::Kind as TaskKind;
use console_api::{Field, field};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Completed tasks remembered for display; the rest are forgotten.
const DONE_TASKS_KEPT: usize = 64;
/// The first sample waits this long for the endpoint before calling it unreachable.
const FIRST_CONNECT: Duration = Duration::from_secs(3);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest update accepted (the initial one carries everything retained).
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Debug, Clone, Default)]
struct TaskRec {
    task_id: Option<String>,
    name: String,
    blocking: bool,
    /// The runtime's `block_on` future: the program's main, waiting is its job.
    block_on: bool,
    location: Option<String>,
    stats: Option<console_api::tasks::Stats>,
}

#[derive(Debug, Clone, Default)]
struct ResourceRec {
    concrete_type: String,
    /// tokio's own inner resources (a Semaphore's batch semaphore): not shown.
    internal: bool,

    location: Option<String>,
    /// Latest value of each attribute, by name.
    attributes: HashMap<String, u64>,
    max_permits: u64,
    starved_since: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct OpRec {
    resource: u64,
}

/// What the stream has said so far; rebuilt from scratch on every new connection.
#[derive(Debug, Default)]
struct ConsoleState {
    connected: bool,
    got_update: bool,
    connections: u64,
    last_error: Option<String>,
    retry_in: Duration,
    /// Server clock at the last update, and when we received it (our monotonic clock).
    server_now: Option<(SystemTime, Instant)>,
    field_names: HashMap<u64, Vec<String>>,
    tasks: HashMap<u64, TaskRec>,
    resources: HashMap<u64, ResourceRec>,
    async_ops: HashMap<u64, OpRec>,
    dropped_tasks: u64,
    dropped_resources: u64,
    dropped_async_ops: u64,
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    (*t).and_then(|t| SystemTime::try_from(t).ok())
}

fn dur(d: &Option<prost_types::Duration>) -> Duration {
    (*d).and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

fn location_text(l: &Option<console_api::Location>) -> Option<String> {
    let l = l.as_ref()?;
    let file = l.file.as_ref()?;
    Some(match (l.line, l.column) {
        (Some(line), Some(col)) => format!("{file}:{line}:{col}"),
        (Some(line), None) => format!("{file}:{line}"),
        _ => file.clone(),
    })
}

impl ConsoleState {
    fn field_name(&self, f: &Field, meta: Option<u64>) -> Option<String> {
        match f.name.as_ref()? {
            field::Name::StrName(s) => Some(s.clone()),
            field::Name::NameIdx(i) => {
                let meta = f.metadata_id.as_ref().map(|m| m.id).or(meta)?;
                self.field_names.get(&meta)?.get(*i as usize).cloned()
            }
        }
    }

    fn apply(&mut self, update: console_api::instrument::Update) {
        if let Some(now) = ts(&update.now) {
            self.server_now = Some((now, Instant::now()));
        }
        self.got_update = true;
        if let Some(meta) = update.new_metadata {
            for m in meta.metadata {
                if let (Some(id), Some(md)) = (m.id, m.metadata) {
                    self.field_names.insert(id.id, md.field_names);
                }
            }
        }
        if let Some(tu) = update.task_update {
            self.dropped_tasks += tu.dropped_events;
            for t in tu.new_tasks {
                let Some(span) = t.id.as_ref().map(|i| i.id) else {
                    continue;
                };
                let meta = t.metadata.as_ref().map(|m| m.id);
                let mut rec = TaskRec {
                    blocking: t.kind == TaskKind::Blocking as i32,
                    location: location_text(&t.location),
                    ..Default::default()
                };
                for f in &t.fields {
                    let Some(name) = self.field_name(f, meta) else {
                        continue;
                    };
                    let value = f.value.as_ref().map(|v| match v {
                        field::Value::DebugVal(s) | field::Value::StrVal(s) => s.clone(),
                        field::Value::U64Val(n) => n.to_string(),
                        field::Value::I64Val(n) => n.to_string(),
                        field::Value::BoolVal(b) => b.to_string(),
                    });
                    match (name.as_str(), value) {
                        ("task.id", Some(v)) => rec.task_id = Some(v),
                        ("task.name", Some(v)) => rec.name = v,
                        ("kind", Some(v)) if v == "blocking" || v == "block_on" => {
                            rec.blocking = true;
                            rec.block_on = v == "block_on";
                        }
                        _ => {}
                    }
                }
                let old = self.tasks.insert(span, rec);
                // Span ids are reused after a task is gone: the new task starts fresh.
                let _ = old;
            }
            for (span, stats) in tu.stats_update {
                if let Some(t) = self.tasks.get_mut(&span) {
                    t.stats = Some(stats);
                }
            }
            self.retain_done_tasks();
        }
        if let Some(ru) = update.resource_update {
            self.dropped_resources += ru.dropped_events;
            for r in ru.new_resources {
                let Some(id) = r.id.as_ref().map(|i| i.id) else {
                    continue;
                };
                self.resources.insert(
                    id,
                    ResourceRec {
                        concrete_type: r.concrete_type.clone(),
                        internal: r.is_internal,

                        location: location_text(&r.location),
                        ..Default::default()
                    },
                );
            }
            for (id, stats) in ru.stats_update {
                if stats.dropped_at.is_some() {
                    self.resources.remove(&id);
                    continue;
                }
                let names: Vec<(Option<String>, Option<u64>)> = stats
                    .attributes
                    .iter()
                    .filter_map(|a| a.field.as_ref())
                    .map(|f| {
                        let v = match f.value {
                            Some(field::Value::U64Val(n)) => Some(n),
                            Some(field::Value::I64Val(n)) => u64::try_from(n).ok(),
                            _ => None,
                        };
                        (self.field_name(f, None), v)
                    })
                    .collect();
                if let Some(r) = self.resources.get_mut(&id) {
                    for (name, value) in names {
                        if let (Some(name), Some(value)) = (name, value) {
                            if name == "permits" {
                                r.max_permits = r.max_permits.max(value);
                            }
                            r.attributes.insert(name, value);
                        }
                    }
                }
            }
        }
        if let Some(au) = update.async_op_update {
            self.dropped_async_ops += au.dropped_events;
            for op in au.new_async_ops {
                if let (Some(id), Some(res)) = (op.id, op.resource_id) {
                    self.async_ops.insert(id.id, OpRec { resource: res.id });
                }
            }
            for (id, stats) in au.stats_update {
                if stats.dropped_at.is_some() {
                    self.async_ops.remove(&id);
                }
            }
        }
    }

    /// Keeps every live task and only the newest completed ones.
    fn retain_done_tasks(&mut self) {
        let mut done: Vec<(SystemTime, u64)> = self
            .tasks
            .iter()
            .filter_map(|(span, t)| {
                let at = ts(&t.stats.as_ref()?.dropped_at)?;
                Some((at, *span))
            })
            .collect();
        if done.len() <= DONE_TASKS_KEPT {
            return;
        }
        done.sort();
        for (_, span) in &done[..done.len() - DONE_TASKS_KEPT] {
            self.tasks.remove(span);
        }
    }

    /// The server's clock now, extrapolated from the last update.
    fn server_clock(&self) -> SystemTime {
        match self.server_now {
            Some((at, received)) => at + received.elapsed(),
            None => SystemTime::now(),
        }
    }

    fn probe_data(&mut self, now_instant: Instant) -> ProbeData {
        let now = self.server_clock();
        let since = |t: Option<SystemTime>| -> u64 {
            t.and_then(|t| now.duration_since(t).ok())
                .map_or(0, |d| d.as_millis() as u64)
        };
        let mut tasks = Vec::with_capacity(self.tasks.len());
        let mut stalls = Vec::new();
        for (span, t) in &self.tasks {
            let Some(st) = &t.stats else { continue };
            let poll = st.poll_stats.unwrap_or_default();
            let created = ts(&st.created_at);
            let started = ts(&poll.last_poll_started);
            let ended = ts(&poll.last_poll_ended);
            let woken = ts(&st.last_wake);
            let done = st.dropped_at.is_some();
            let running = matches!((started, ended), (Some(s), Some(e)) if s > e)
                || (started.is_some() && ended.is_none());
            let awakened = matches!((woken, started), (Some(w), Some(s)) if w > s);
            let state = if done {
                TaskState::Done
            } else if running {
                TaskState::Running
            } else if awakened {
                TaskState::Scheduled
            } else {
                TaskState::Idle
            };
            // tokio-console's LostWaker lint: a live, non-blocking task with no waker left,
            // neither running nor woken: nothing can ever wake it. Never-polled tasks are
            // left to never-awaited.
            let lost_waker = !t.blocking
                && !done
                && poll.polls > 0
                && st.waker_clones.saturating_sub(st.waker_drops) == 0
                && !running
                && !awakened;
            let id = t.task_id.clone().unwrap_or_else(|| format!("span:{span}"));
            if running && !t.blocking {
                // A poll still running is a stall detected now (its length so far).
                stalls.push(Stall {
                    at_ms: now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    duration_ms: since(started) as f64,
                    stack: Vec::new(),
                    task: Some(id.clone()),
                });
            }
            tasks.push(Task {
                id,
                name: t.name.clone(),
                state,
                kind: if t.blocking { "blocking" } else { "task" }.into(),
                spawn_location: t.location.clone(),
                age_ms: since(created),
                since_progress_ms: if running || done {
                    0
                } else {
                    since(ended.or(created))
                },
                polls: Some(poll.polls),
                busy_ms: Some(dur(&poll.busy_time).as_millis() as u64),
                lost_waker,
                loop_id: Some("tokio".into()),
                // console-subscriber does not say which task waits on which timer (it sends
                // no poll ops), so only the runtime's block_on future is known to wait by design.
                parked: t.block_on.then(|| "block_on".to_string()),
                ..Default::default()
            });
        }
        tasks.sort_by(|a, b| a.id.cmp(&b.id));

        // Waiters per resource: live acquire-style async ops on it.
        let mut waiters: HashMap<u64, u64> = HashMap::new();
        for op in self.async_ops.values() {
            *waiters.entry(op.resource).or_default() += 1;
        }
        let mut pools = Vec::new();
        let mut ids: Vec<&u64> = self.resources.keys().collect();
        ids.sort();
        let ids: Vec<u64> = ids.into_iter().copied().collect();
        for id in ids {
            let r = self.resources.get_mut(&id).expect("listed above");
            if r.internal || !r.concrete_type.contains("Semaphore") {
                continue;
            }
            let free = r.attributes.get("permits").copied().unwrap_or(0);
            let queued = waiters.get(&id).copied().unwrap_or(0);
            let starved = queued > 0 && free == 0;
            match (starved, r.starved_since) {
                (true, None) => r.starved_since = Some(now_instant),
                (false, Some(_)) => r.starved_since = None,
                _ => {}
            }
            pools.push(Pool {
                id: format!("semaphore:{id}"),
                kind: "semaphore".into(),
                name: format!(
                    "{} {}",
                    r.concrete_type,
                    r.location.clone().unwrap_or_default()
                )
                .trim()
                .to_string(),
                max_workers: r.max_permits,
                live_workers: r.max_permits,
                busy_workers: r.max_permits.saturating_sub(free),
                queued,
                saturated_ms: r
                    .starved_since
                    .map_or(0, |t| now_instant.duration_since(t).as_millis() as u64),
                open: true,
                created_at: r.location.clone(),
                ..Default::default()
            });
        }
        ProbeData {
            runtime: "tokio-console".into(),
            runtime_version: "console-api 0.9".into(),
            probe_version: String::new(),
            now_ms: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            loops: vec![EventLoop {
                id: "tokio".into(),
                running: true,
                // No lag samples: the window only dates the stalls (polls running now).
                lag: LagStats {
                    window_ms: 10_000,
                    ..Default::default()
                },
                stalls,
                ..Default::default()
            }],
            tasks,
            pools,
            missing: vec![
                "lag: console-subscriber does not measure event-loop lag; add leakhound-probe to the service for it".into(),
                "runtime metrics and blocking pool: not in console-api; add leakhound-probe to the service".into(),
            ],
            ..Default::default()
        }
    }

    fn notes(&self, url: &str) -> Vec<String> {
        let mut notes = Vec::new();
        if self.connected {
            notes.push(format!(
                "console: connected to {url} (connection {}; {} tasks known)",
                self.connections,
                self.tasks.len()
            ));
        } else {
            notes.push(format!(
                "console: disconnected from {url}: {}; retrying in {} ms (data shown is from the last connection)",
                self.last_error.as_deref().unwrap_or("no connection yet"),
                self.retry_in.as_millis()
            ));
        }
        if self.dropped_tasks + self.dropped_resources + self.dropped_async_ops > 0 {
            notes.push(format!(
                "console: the service dropped events (buffer full): {} tasks, {} resources, {} async ops; some tasks may look stuck or be missing (raise TOKIO_CONSOLE_BUFFER_CAPACITY)",
                self.dropped_tasks, self.dropped_resources, self.dropped_async_ops
            ));
        }
        notes
    }
}

/// A tokio-console endpoint as a source.
pub struct ConsoleSource {
    url: String,
    state: Arc<Mutex<ConsoleState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    port: Option<u16>,
    local: Option<ProcSource>,
}

impl ConsoleSource {
    /// Starts the client and waits (up to a few seconds) for the first update.
    pub fn open(url: &str) -> Result<Self, SourceError> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).map_err(|e| {
            SourceError::Other(format!(
                "'{url}' is not a usable endpoint ({e}): write e.g. http://127.0.0.1:6669"
            ))
        })?;
        let port = local_port(url);
        let state = Arc::new(Mutex::new(ConsoleState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("leakhound-console".into())
            .spawn(move || client_thread(endpoint, s, st))
            .map_err(|e| SourceError::Other(format!("cannot start the console client: {e}")))?;
        let mut source = ConsoleSource {
            url: url.to_string(),
            state,
            stop,
            thread: Some(thread),
            port,
            local: None,
        };
        let deadline = Instant::now() + FIRST_CONNECT;
        loop {
            let (ok, err) = {
                let s = source.lock();
                (s.got_update, s.last_error.clone())
            };
            if ok {
                return Ok(source);
            }
            if Instant::now() >= deadline {
                source.shutdown();
                return Err(SourceError::Unreachable(format!(
                    "cannot reach the tokio-console endpoint {url} ({}): is the service running with console-subscriber, and is TOKIO_CONSOLE_BIND this address?",
                    err.unwrap_or_else(|| "no answer".into())
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ConsoleSource {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Source for ConsoleSource {
    fn describe(&self) -> String {
        match &self.local {
            Some(p) => format!("{} (pid {}, procfs+console)", self.url, p.pid()),
            None => format!("{} (console)", self.url),
        }
    }

    fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
        let (data, mut notes) = {
            let mut s = self.lock();
            (s.probe_data(Instant::now()), s.notes(&self.url))
        };
        // Join with the /proc view of the process owning the port, when it is local.
        if self.local.is_none()
            && let Some(pid) = self.port.and_then(pid_listening_on)
        {
            self.local = ProcSource::new(pid).ok();
        }
        if let Some(local) = self.local.as_mut() {
            match local.sample(options) {
                Ok(mut snap) => {
                    super::probe::merge::join(&mut snap, data, "console");
                    snap.notes.append(&mut notes);
                    return Ok(snap);
                }
                Err(e) => {
                    // The service restarted (new pid) or exited: find the owner again later.
                    notes.push(format!("console: local process view lost: {e}"));
                    self.local = None;
                }
            }
        }
        Ok(Snapshot {
            taken_at_ms: now_ms(),
            pid: 0,
            source: "console".into(),
            probe: Some(data),
            notes,
            ..Default::default()
        })
    }
}

fn client_thread(
    endpoint: tonic::transport::Endpoint,
    state: Arc<Mutex<ConsoleState>>,
    stop: Arc<AtomicBool>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.last_error = Some("cannot start the client runtime".into());
        return;
    };
    rt.block_on(async move {
        let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
        let mut backoff = BACKOFF_START;
        while !stop.load(Ordering::Relaxed) {
            let endpoint = endpoint.clone().connect_timeout(Duration::from_secs(2));
            match endpoint.connect().await {
                Ok(channel) => {
                    let mut client =
                        InstrumentClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
                    match client.watch_updates(InstrumentRequest {}).await {
                        Ok(stream) => {
                            {
                                // A new subscription starts with the full state again.
                                let mut s = lock();
                                let connections = s.connections + 1;
                                *s = ConsoleState {
                                    connected: true,
                                    connections,
                                    ..Default::default()
                                };
                            }
                            backoff = BACKOFF_START;
                            let mut stream = stream.into_inner();
                            let error = loop {
                                if stop.load(Ordering::Relaxed) {
                                    return;
                                }
                                match tokio::time::timeout(
                                    Duration::from_millis(200),
                                    stream.message(),
                                )
                                .await
                                {
                                    Err(_) => continue, // quiet: check stop, keep waiting
                                    Ok(Ok(Some(update))) => lock().apply(update),
                                    Ok(Ok(None)) => break "the service closed the stream".into(),
                                    Ok(Err(status)) => break status.message().to_string(),
                                }
                            };
                            let mut s = lock();
                            s.connected = false;
                            s.last_error = Some(error);
                        }
                        Err(status) => {
                            let mut s = lock();
                            s.connected = false;
                            s.last_error =
                                Some(format!("WatchUpdates refused: {}", status.message()));
                        }
                    }
                }
                Err(e) => {
                    let mut s = lock();
                    s.connected = false;
                    s.last_error = Some(error_chain(&e));
                }
            }
            // Capped exponential backoff (tokio-console uses max() here and waits 5 s+).
            lock().retry_in = backoff;
            let until = Instant::now() + backoff;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = c.source();
    }
    text
}

/// The port of a loopback endpoint (`http://127.0.0.1:6669`, `http://localhost:6669`,
/// `http://[::1]:6669`); `None` for other hosts.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost" || host == "::1" || host.starts_with("127.");
    local.then(|| port.parse().ok()).flatten()
}

/// The pid that holds a TCP socket listening on `port`, through the socket tables and the
/// descriptors of every process we may read.
fn pid_listening_on(port: u16) -> Option<u32> {
    use super::procfs::parse::parse_inet_table;
    use crate::model::Proto;
    let suffix = format!(":{port}");
    let mut inodes = Vec::new();
    for (path, proto) in [
        ("/proc/net/tcp", Proto::Tcp),
        ("/proc/net/tcp6", Proto::Tcp6),
    ] {
        if let Ok(bytes) = std::fs::read(path) {
            parse_inet_table(
                &bytes,
                proto,
                |_| true,
                |e| {
                    if e.state == crate::model::SocketState::Listen
                        && e.local.ends_with(&suffix)
                        && e.inode != 0
                    {
                        inodes.push(e.inode);
                    }
                },
            );
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue; // not ours to read, or gone
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| target.as_os_str() == w.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use console_api::instrument::Update;
    use console_api::tasks::{Stats, TaskUpdate};
    use console_api::{Field, MetaId, PollStats, RegisterMetadata, register_metadata};

    fn at(secs: u64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: secs as i64,
            nanos: 0,
        })
    }

    fn spawn_task(span: u64, task_id: u64) -> console_api::tasks::Task {
        console_api::tasks::Task {
            id: Some(console_api::Id { id: span }),
            metadata: Some(MetaId { id: 7 }),
            kind: 0,
            fields: vec![
                Field {
                    metadata_id: Some(MetaId { id: 7 }),
                    name: Some(field::Name::NameIdx(1)),
                    value: Some(field::Value::U64Val(task_id)),
                },
                Field {
                    metadata_id: None,
                    name: Some(field::Name::StrName("task.name".into())),
                    value: Some(field::Value::StrVal("worker".into())),
                },
            ],
            parents: vec![],
            location: Some(console_api::Location {
                file: Some("src/main.rs".into()),
                module_path: None,
                line: Some(12),
                column: Some(5),
            }),
        }
    }

    fn stats(polls: u64, clones: u64, drops: u64, wake: Option<u64>) -> Stats {
        Stats {
            created_at: at(100),
            wakes: wake.map_or(0, |_| 1),
            waker_clones: clones,
            waker_drops: drops,
            last_wake: wake.and_then(at),
            poll_stats: Some(PollStats {
                polls,
                first_poll: (polls > 0).then(|| at(101)).flatten(),
                last_poll_started: (polls > 0).then(|| at(101)).flatten(),
                last_poll_ended: (polls > 0).then(|| at(102)).flatten(),
                busy_time: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 5_000_000,
                }),
            }),
            ..Default::default()
        }
    }

    fn update(tasks: Vec<console_api::tasks::Task>, stats: Vec<(u64, Stats)>) -> Update {
        Update {
            now: at(130),
            task_update: Some(TaskUpdate {
                new_tasks: tasks,
                stats_update: stats.into_iter().collect(),
                dropped_events: 0,
            }),
            new_metadata: Some(RegisterMetadata {
                metadata: vec![register_metadata::NewMetadata {
                    id: Some(MetaId { id: 7 }),
                    metadata: Some(console_api::Metadata {
                        field_names: vec!["kind".into(), "task.id".into()],
                        ..Default::default()
                    }),
                }],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn maps_task_id_field_not_span_and_lost_waker_criteria() {
        let mut s = ConsoleState::default();
        s.apply(update(
            vec![spawn_task(1, 41), spawn_task(2, 42), spawn_task(3, 43)],
            vec![
                (1, stats(3, 0, 0, None)), // no waker, not woken: lost
                (2, stats(3, 1, 0, None)), // a waker is held: fine
                (3, stats(0, 0, 0, None)), // never polled: not lost waker
            ],
        ));
        let data = s.probe_data(Instant::now());
        let by_id = |id: &str| data.tasks.iter().find(|t| t.id == id).unwrap();
        let lost = by_id("41");
        assert!(lost.lost_waker);
        assert_eq!(lost.name, "worker");
        assert_eq!(lost.polls, Some(3));
        assert_eq!(lost.busy_ms, Some(5));
        assert_eq!(lost.spawn_location.as_deref(), Some("src/main.rs:12:5"));
        assert!(
            lost.since_progress_ms >= 28_000,
            "{}",
            lost.since_progress_ms
        );
        assert!(!by_id("42").lost_waker);
        let never = by_id("43");
        assert!(!never.lost_waker);
        assert_eq!(never.polls, Some(0));
        assert!(never.age_ms >= 30_000);
        assert_eq!(data.runtime, "tokio-console");
    }

    #[test]
    fn completed_tasks_are_bounded() {
        let mut s = ConsoleState::default();
        let n = DONE_TASKS_KEPT as u64 + 50;
        let tasks = (1..=n).map(|i| spawn_task(i, i)).collect();
        let done = (1..=n)
            .map(|i| {
                let mut st = stats(1, 0, 0, None);
                st.dropped_at = at(110 + i);
                (i, st)
            })
            .collect();
        s.apply(update(tasks, done));
        assert_eq!(s.tasks.len(), DONE_TASKS_KEPT);
        assert!(s.tasks.contains_key(&n), "the newest stay");
    }

    #[test]
    fn loopback_ports_only() {
        assert_eq!(local_port("http://127.0.0.1:6669"), Some(6669));
        assert_eq!(local_port("http://localhost:7000/"), Some(7000));
        assert_eq!(local_port("http://[::1]:6669"), Some(6669));
        assert_eq!(local_port("http://10.1.2.3:6669"), None);
    }
}

#[cfg(test)]
mod block_on_tests {
    use super::*;
    use console_api::tasks::{Stats, TaskUpdate};
    use console_api::{Field, PollStats};

    #[test]
    fn the_block_on_future_is_parked() {
        let mut s = ConsoleState::default();
        let task = console_api::tasks::Task {
            id: Some(console_api::Id { id: 5 }),
            kind: TaskKind::Blocking as i32,
            fields: vec![Field {
                metadata_id: None,
                name: Some(field::Name::StrName("kind".into())),
                value: Some(field::Value::DebugVal("block_on".into())),
            }],
            ..Default::default()
        };
        let stats = Stats {
            created_at: Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            poll_stats: Some(PollStats {
                polls: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        s.apply(console_api::instrument::Update {
            task_update: Some(TaskUpdate {
                new_tasks: vec![task],
                stats_update: [(5, stats)].into_iter().collect(),
                dropped_events: 0,
            }),
            ..Default::default()
        });
        let data = s.probe_data(Instant::now());
        assert_eq!(data.tasks[0].parked.as_deref(), Some("block_on"));
        assert_eq!(data.tasks[0].kind, "blocking");
    }
}
