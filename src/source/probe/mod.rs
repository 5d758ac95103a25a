//! The probe source: reaches a probe (Python `leakhound_probe`, Rust `leakhound-probe`) over
//! the `leakhound/1` wire protocol of `probes/PROTOCOL.md`, and merges what it says into the
//! /proc view of a PID.
//!
//! - [`client`]: one connection to a probe (hello, `snapshot` requests, the line cap);
//! - [`discovery`]: the socket a probe of a PID listens on;
//! - [`socket`]: a probe reached by its socket path, the in-process view alone;
//! - [`merge`]: the OS view of a PID joined with its probe's view (also used by the console
//!   source);
//! - [`final_report`]: the file a probe leaves at exit.
//!
//! Starting a program with the Python probe loaded is not observing it: see `crate::launch`.

pub mod client;
pub mod discovery;
pub mod final_report;
pub mod merge;
pub mod socket;

pub use client::{Hello, IO_TIMEOUT, PROTOCOL, ProbeClient, REPLY_LINE_CAP};
pub use discovery::{find_socket, socket_dirs};
pub use final_report::{FINAL_FILE_CAP, FinalReport, read_final, read_finals};
pub use merge::{WithProbe, join, merge, no_probe_note};
pub use socket::ProbeSocketSource;
