//! The in-process view a probe reports. Its JSON form is the `data` of a `snapshot` reply in
//! `probes/PROTOCOL.md`: the Python probe, the Rust probe and the console source all fill it.
//! The types are defined once, in the `leakhound-protocol` crate the Rust probe shares; this
//! module re-exports them under the names the rest of leakhound uses, plus helpers.

pub use leakhound_protocol::{
    Dropped, EventLoop, LagStats, Pool, ProbeChild, ProbeData, ProbeEvent, ProbeEventKind,
    ProbeThread, RuntimeMetrics, Stall, Task, TaskState,
};

/// Whether a `file:line in func` frame belongs to a runtime or library rather than the program
/// (the Python standard library and site-packages, a Rust toolchain or registry crate).
pub fn is_library_frame(frame: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "/lib/python",
        "/site-packages/",
        "<frozen ",
        "/.cargo/registry/",
        "/rustc/",
        "/leakhound_probe/",
    ];
    MARKERS.iter().any(|m| frame.contains(m))
}

/// The innermost frame of a stack or await chain (innermost last) that is the program's own,
/// e.g. the `await event.wait()` line rather than `asyncio/locks.py in Event.wait`.
pub fn own_frame(frames: &[String]) -> Option<&str> {
    frames
        .iter()
        .rev()
        .find(|f| !is_library_frame(f))
        .map(String::as_str)
}
