//! Starting or changing a target so it can be observed.

/// Loading the Python probe into a running interpreter (`--inject`).
#[cfg(target_os = "linux")]
pub mod inject;

/// `--inject` on a command line: loads the Python probe into the target PID first.
pub fn inject_if_asked(asked: bool, target: &crate::source::Target) -> anyhow::Result<()> {
    if !asked {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    return inject::inject_target(target);
    #[cfg(not(target_os = "linux"))]
    anyhow::bail!("--inject is supported on Linux only (target '{target}')");
}
