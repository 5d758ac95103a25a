//! Where snapshots come from: one trait, one module per kind of target.
//!
//! A source only observes; it never judges (that is `rules/`).

mod api;
pub mod collector;
#[cfg(target_os = "linux")]
pub mod console;
pub mod lines;
#[cfg(all(target_os = "linux", feature = "pystacks"))]
pub mod outside;
pub mod probe;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod replay;
mod target;
#[cfg(target_os = "linux")]
pub mod tree;
pub use api::{SampleOptions, Source, SourceError, now_ms, ptrace_denied};
pub use collector::{Collector, CollectorEvent};
pub use target::Target;

/// Opens the source that reaches a target, to be sampled again and again (a PID without a
/// probe gets the outside view's loop sampler).
pub fn open(target: &Target) -> Result<Box<dyn Source>, SourceError> {
    open_pid_or(target, true, false, None)
}

/// Opens a target for a single sample: Python stacks from outside only when asked, stopping
/// the target for that read unless `nonblocking`.
pub fn open_once(target: &Target, nonblocking: bool) -> Result<Box<dyn Source>, SourceError> {
    open_pid_or(target, false, nonblocking, None)
}

#[cfg(target_os = "linux")]
type Host<'a> = Option<&'a std::sync::Arc<procfs::host::HostView>>;
#[cfg(not(target_os = "linux"))]
type Host<'a> = Option<&'a ()>;

#[cfg_attr(
    not(all(target_os = "linux", feature = "pystacks")),
    allow(unused_variables)
)]
fn open_pid_or(
    target: &Target,
    loop_sampler: bool,
    nonblocking: bool,
    host: Host<'_>,
) -> Result<Box<dyn Source>, SourceError> {
    match target {
        #[cfg(target_os = "linux")]
        Target::Pid(pid) => {
            let proc = match host {
                Some(host) => procfs::ProcSource::with_host(*pid, std::sync::Arc::clone(host))?,
                None => procfs::ProcSource::new(*pid)?,
            };
            let with_probe = probe::WithProbe::new(proc, *pid);
            #[cfg(feature = "pystacks")]
            {
                let options = if loop_sampler {
                    outside::Options::watching()
                } else {
                    outside::Options::once(!nonblocking)
                };
                Ok(Box::new(outside::WithOutside::new(
                    with_probe, *pid, options,
                )))
            }
            #[cfg(not(feature = "pystacks"))]
            Ok(Box::new(with_probe))
        }
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
/// probe sampled too, see [`tree`]; the members share one read of the host's tables per
/// sample); any other target is [`open`]'s.
pub fn open_tree(target: &Target) -> Result<Box<dyn Source>, SourceError> {
    match target {
        #[cfg(target_os = "linux")]
        Target::Pid(pid) => {
            let tree = tree::TreeSource::open(*pid, |pid, host| {
                open_pid_or(&Target::Pid(pid), true, false, Some(host))
            })?;
            // Python workers started without the probe: their loops sampled from outside.
            #[cfg(feature = "pystacks")]
            let tree = tree.sampling_without_probe(outside::watched_worker);
            Ok(Box::new(tree))
        }
        _ => open(target),
    }
}

/// [`open_tree`] for a single sample: every process of the tree opened as [`open_once`].
pub fn open_tree_once(target: &Target, nonblocking: bool) -> Result<Box<dyn Source>, SourceError> {
    match target {
        #[cfg(target_os = "linux")]
        Target::Pid(pid) => {
            let opener: tree::Opener = if nonblocking {
                |pid, host| open_pid_or(&Target::Pid(pid), false, true, Some(host))
            } else {
                |pid, host| open_pid_or(&Target::Pid(pid), false, false, Some(host))
            };
            let tree = tree::TreeSource::open(*pid, opener)?;
            // Python workers started without the probe: their stacks when asked (`--stacks`).
            #[cfg(feature = "pystacks")]
            let tree = tree.sampling_without_probe(outside::worker_with_stacks);
            Ok(Box::new(tree))
        }
        _ => open_once(target, nonblocking),
    }
}
