//! The `leakhound/1` messages (probes/PROTOCOL.md), typed once: leakhound reads them
//! (re-exported from `leakhound::model`) and the Rust probe writes them. The Python probe's
//! messages are checked against `probes/protocol.schema.json`, generated from these types
//! (tests/protocol_schema.rs in leakhound writes it and fails when it is stale).
//!
//! Every field has a default so an older or smaller probe still parses.

use serde::{Deserialize, Serialize};

/// The protocol this build speaks, sent in both hellos.
pub const PROTOCOL: &str = "leakhound/1";

/// A probe's first line on a connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Hello {
    /// Always `hello` (`error` when the probe refuses the connection).
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol: String,
    pub runtime: String,
    pub runtime_version: String,
    pub probe_version: String,
    pub pid: u32,
    pub capabilities: Vec<String>,
    /// Set when the probe could not use the usual socket folder (not its own, not private,
    /// a symlink) and listens in a private folder of its own instead: where, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A probe's answer to a `snapshot` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct SnapshotReply {
    /// Always `snapshot`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request's id.
    pub id: u64,
    pub data: ProbeData,
}

/// `$LEAKHOUND_SOCKET_DIR/<pid>.final.json`, written by a probe when shutdown begins and again
/// at exit (PROTOCOL.md, "At exit").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct FinalReport {
    /// Always `final`.
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol: String,
    pub pid: u32,
    pub data: ProbeData,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct ProbeData {
    /// `python`, `tokio`, or `tokio-console` for a console-subscriber endpoint.
    pub runtime: String,
    /// Version of the runtime (`3.11.7`, `tokio 1.54`) and of the probe.
    pub runtime_version: String,
    pub probe_version: String,
    /// Probe's own clock at the sample, milliseconds since the Unix epoch.
    pub now_ms: u64,
    pub loops: Vec<EventLoop>,
    pub tasks: Vec<Task>,
    /// The runtime's view of threads, joined to /proc threads by `native_id`.
    pub threads: Vec<ProbeThread>,
    /// Executors, blocking pools, semaphores and connection pools.
    pub pools: Vec<Pool>,
    /// Child processes the runtime started itself (Python `multiprocessing`), as it sees them.
    pub children: Vec<ProbeChild>,
    /// Recent one-off events (never-awaited coroutines, unclosed resources, threads alive
    /// at shutdown), newest last. A bounded ring: `dropped.events` counts what fell out.
    pub events: Vec<ProbeEvent>,
    /// Things this probe cannot see and how to turn them on, e.g. "tasks: build with
    /// RUSTFLAGS=\"--cfg tokio_unstable\"".
    pub missing: Vec<String>,
    pub dropped: Dropped,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Dropped {
    /// Events that fell out of the probe's ring before anyone read them.
    pub events: u64,
    /// Tasks left out of the reply because of the size cap.
    pub tasks: u64,
}

/// An event loop (asyncio loop, tokio runtime) and how late it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct EventLoop {
    pub id: String,
    /// OS thread id running the loop (0 for a multi-threaded runtime).
    pub tid: u32,
    pub running: bool,
    /// Lag over the probe's window (default 10 s).
    pub lag: LagStats,
    /// Recent lag samples, oldest first, milliseconds (for sparklines); bounded.
    pub lag_history_ms: Vec<f64>,
    /// The longest stalls seen recently, newest last, each with the loop thread's stack.
    pub stalls: Vec<Stall>,
    /// Tokio only: runtime metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct LagStats {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
    /// Length of the window the percentiles cover, milliseconds.
    pub window_ms: u64,
}

/// One time the loop was blocked over the probe's threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Stall {
    /// When the stall was detected, ms since the epoch.
    pub at_ms: u64,
    pub duration_ms: f64,
    /// The loop thread's stack at that moment, innermost frame last, `file:line in func`.
    pub stack: Vec<String>,
    /// The task running when the loop stalled, if known.
    pub task: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct RuntimeMetrics {
    pub workers: u64,
    pub alive_tasks: u64,
    pub global_queue_depth: u64,
    /// Fraction of time the workers were busy since the previous sample, 0..1.
    pub busy_ratio: f64,
    pub blocking_threads: Option<u64>,
    pub idle_blocking_threads: Option<u64>,
    pub blocking_queue_depth: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Being polled right now.
    Running,
    /// Woken, waiting for a worker.
    Scheduled,
    /// Waiting on something (an await point).
    #[default]
    Idle,
    Done,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Task {
    /// Stable id: the tokio task id, or the asyncio task name (`Task-12`); what `task=`
    /// carries in log lines.
    pub id: String,
    pub name: String,
    pub state: TaskState,
    /// Python: the coroutine's qualified name. Rust: the future's kind (`task`, `blocking`).
    pub kind: String,
    /// Where it is suspended now, innermost last (`file:line in func` down the await chain).
    pub await_chain: Vec<String>,
    /// Where it was created or spawned (`file:line`), when known.
    pub spawn_location: Option<String>,
    pub age_ms: u64,
    /// Time since it was last polled / last changed its await point.
    pub since_progress_ms: u64,
    pub polls: Option<u64>,
    pub busy_ms: Option<u64>,
    /// Rust: the task has no live waker, is not running and was not woken: it can never run.
    pub lost_waker: bool,
    /// Which event loop / runtime it belongs to (`EventLoop::id`).
    pub loop_id: Option<String>,
    pub parent: Option<String>,
    /// Tasks (or threads) this one awaits, when the runtime tells it.
    pub waiting_on: Option<String>,
    /// Set when the task waits long by design, so no progress is not a bug: `timer` (a
    /// wake-up is scheduled: `asyncio.sleep`, `tokio::time::sleep`), `server` (a server's
    /// `serve_forever`), `framework` (a server framework's own serving task: uvicorn's
    /// lifespan, aiohttp's keep-alive handler). `stuck-task` leaves parked tasks alone (a lost
    /// waker still counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
}

impl Task {
    /// What to call it: its given name (`tokio::task::Builder::name`, `create_task(name=…)`)
    /// when it has one that is not just its id, else its kind.
    pub fn label(&self) -> &str {
        if self.name.is_empty() || self.name == self.id {
            &self.kind
        } else {
            &self.name
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct ProbeThread {
    /// OS thread id (Python `threading.get_native_id()`, Rust `gettid()`).
    pub native_id: u32,
    /// The runtime's own id (Python `Thread.ident`).
    pub ident: u64,
    pub name: String,
    pub daemon: bool,
    /// Innermost frame last; filled when asked or when the thread is implicated.
    pub stack: Vec<String>,
    /// Set when the thread is a worker of an executor or pool (the `Pool::id`, or the pool's
    /// kind when the probe did not see it made): the pool owns it, so it is never a leak of
    /// its own (`thread-leak` leaves it alone; an executor never shut down is reported as such).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Pool {
    pub id: String,
    /// `thread_pool`, `process_pool`, `default_executor`, `blocking_pool`, `semaphore`,
    /// `connection_pool`.
    pub kind: String,
    pub name: String,
    /// Workers allowed, and alive now (for a semaphore: permits in total and taken).
    pub max_workers: u64,
    pub live_workers: u64,
    pub busy_workers: u64,
    /// Items waiting for a worker (for a semaphore: waiters).
    pub queued: u64,
    /// How long the queue has had work while every worker was busy, ms (0 when not saturated).
    pub saturated_ms: u64,
    pub queue_wait_p99_ms: Option<f64>,
    pub submitted: u64,
    pub completed: u64,
    /// Still accepting work; false after `shutdown()`.
    pub open: bool,
    /// Where it was created, when known.
    pub created_at: Option<String>,
}

/// A child process the runtime itself manages (a `multiprocessing.Process`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct ProbeChild {
    pub pid: u32,
    /// The runtime's name for it (`Process-1`, `SpawnPoolWorker-2`).
    pub name: String,
    pub daemon: bool,
    /// Not yet exited as far as the runtime knows (read without reaping it).
    pub alive: bool,
    pub exitcode: Option<i32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProbeEventKind {
    /// A coroutine was collected without being awaited.
    NeverAwaited,
    /// A ResourceWarning: an unclosed socket, file, transport or client session.
    UnclosedResource,
    /// A non-daemon thread or executor still alive when shutdown began.
    AliveAtShutdown,
    /// A task destroyed while still pending.
    TaskDestroyedPending,
    #[default]
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct ProbeEvent {
    /// Increases by one per event in a probe's life; lets readers skip what they have seen.
    pub seq: u64,
    pub kind: ProbeEventKind,
    pub at_ms: u64,
    /// What it is about: coroutine qualname, `socket`, `file`, thread name, …
    pub subject: String,
    pub message: String,
    /// Creation or allocation site, innermost last, when the probe could learn it.
    pub site: Vec<String>,
    /// How many times this exact (kind, subject, site) happened; probes coalesce repeats.
    pub count: u64,
}

/// The JSON Schema of what a probe sends (`hello`, a `snapshot` reply, the final report), in
/// closed form: an object field not typed here is an error, so a probe that drifts from these
/// types fails validation instead of being silently ignored by leakhound. Each message is also
/// under `$defs` (`Hello`, `SnapshotReply`, `FinalReport`) to validate one kind alone.
#[cfg(feature = "schema")]
pub fn json_schema() -> schemars::Schema {
    use schemars::generate::SchemaSettings;
    use schemars::transform::RecursiveTransform;
    fn close_objects(schema: &mut schemars::Schema) {
        if schema.get("properties").is_some() && schema.get("additionalProperties").is_none() {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
    let mut generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with_transform(RecursiveTransform(close_objects))
        .into_generator();
    let messages = [
        generator.subschema_for::<Hello>().to_value(),
        generator.subschema_for::<SnapshotReply>().to_value(),
        generator.subschema_for::<FinalReport>().to_value(),
    ];
    let defs = generator.take_definitions(true);
    schemars::json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": PROTOCOL,
        "description": "What a leakhound probe sends (probes/PROTOCOL.md). Generated from the leakhound-protocol crate by tests/protocol_schema.rs; do not edit.",
        "oneOf": messages,
        "$defs": defs,
    })
}
