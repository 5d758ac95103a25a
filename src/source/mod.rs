//! Where snapshots come from: one trait, one module per kind of target.
//!
//! A source only observes; it never judges (that is `rules/`).

mod api;
pub mod collector;
#[cfg(target_os = "linux")]
pub mod console;
pub mod lines;
pub mod probe;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod replay;
mod target;
#[cfg(target_os = "linux")]
pub mod tree;
pub use api::{SampleOptions, Source, SourceError, now_ms};
pub use collector::{Collector, CollectorEvent};
pub use target::Target;

/// Opens the source that reaches a target.
pub fn open(target: &Target) -> Result<Box<dyn Source>, SourceError> {
    match target {
        #[cfg(target_os = "linux")]
        Target::Pid(pid) => Ok(Box::new(probe::WithProbe::new(
            procfs::ProcSource::new(*pid)?,
            *pid,
        ))),
        Target::ProbeSocket(path) => Ok(Box::new(probe::ProbeSocketSource::new(path)?)),
        #[cfg(target_os = "linux")]
        Target::Console(url) => Ok(Box::new(console::ConsoleSource::open(url)?)),
        Target::Recording(path) => Ok(Box::new(replay::ReplaySource::open(path)?)),
        #[allow(unreachable_patterns)] // reached off Linux, where Pid and Console are absent
        other => Err(SourceError::Other(format!(
            "targets like '{other}' are not supported by this build"
        ))),
    }
}

/// Opens a target as a service: a PID stands for itself and its descendants (each one with a
/// probe sampled too, see [`tree`]); any other target is [`open`]'s.
pub fn open_tree(target: &Target) -> Result<Box<dyn Source>, SourceError> {
    match target {
        #[cfg(target_os = "linux")]
        Target::Pid(_) => Ok(Box::new(tree::TreeSource::new(open(target)?, |pid| {
            open(&Target::Pid(pid))
        }))),
        _ => open(target),
    }
}
