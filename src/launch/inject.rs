//! Loading the Python probe into a live interpreter started without it (`--inject`).
//!
//! Python 3.14+ has `sys.remote_exec(pid, script)`; older ones (3.9-3.13) get the script run by
//! gdb, as memray's and pyrasite's attach do: attach, `PyGILState_Ensure()`,
//! `PyRun_SimpleString(...)`, `PyGILState_Release()`, detach. The script puts the embedded
//! probe's folder on `sys.path` and calls `leakhound_probe.install()`; loops already running
//! on other threads are adopted from inside themselves (`call_soon_threadsafe`).
//!
//! The target must never be left stopped: gdb runs under a timeout, is killed past it, and
//! every path ends by checking the target's state and sending `SIGCONT` if it is stopped.

use crate::model::ProcState;
use crate::source::SourceError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest an injection may take, gdb attach to probe socket, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The injection timeout: `LEAKHOUND_INJECT_TIMEOUT` (e.g. `5s`) or [`DEFAULT_TIMEOUT`].
pub fn timeout() -> anyhow::Result<Duration> {
    match std::env::var("LEAKHOUND_INJECT_TIMEOUT") {
        Ok(v) if !v.is_empty() => crate::config::parse_duration(&v)
            .map_err(|e| anyhow::anyhow!("LEAKHOUND_INJECT_TIMEOUT={v}: {e}")),
        _ => Ok(DEFAULT_TIMEOUT),
    }
}

/// What an injection did.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The probe's socket, now listening.
    pub socket: PathBuf,
    /// `gdb`, `sys.remote_exec`, or `already loaded`.
    pub method: &'static str,
    pub took: Duration,
}

/// `(major, minor)` of the CPython in `pid`, from its executable's or libpython's name
/// (`python3.12`, `libpython3.12.so.1.0`).
pub fn python_version(pid: u32) -> Option<(u32, u32)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let from_lib = maps
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter(|name| name.starts_with("libpython"))
        .find_map(parse_version);
    from_lib.or_else(|| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        parse_version(&exe.file_name()?.to_string_lossy())
    })
}

/// `(3, 12)` from `python3.12`, `libpython3.12.so.1.0`, `python3.13t`.
fn parse_version(name: &str) -> Option<(u32, u32)> {
    let at = name.find("python")?;
    let rest = &name[at + "python".len()..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The Python source run inside the target. `probe_root` holds the `leakhound_probe` package;
/// `result` is a file the script reports to (`ok SOCKET` or `error ...`).
fn script(probe_root: &Path, result: &Path) -> String {
    let quote = |p: &Path| format!("{:?}", p.to_string_lossy());
    format!(
        r#"def _leakhound_inject():
    import sys
    root = {root}
    try:
        if root not in sys.path:
            sys.path.insert(0, root)
        import leakhound_probe
        from leakhound_probe import _runtime
        handle = leakhound_probe.install()
        # Loops that were running before the probe: adopt each from inside its own thread
        # (the probe's own adoption only sees the loop of the thread that installs it).
        aio = sys.modules.get("asyncio")
        if aio is not None:
            import gc
            for obj in gc.get_objects():
                if isinstance(obj, aio.AbstractEventLoop) and obj.is_running():
                    obj.call_soon_threadsafe(_runtime._adopt_running_loop, _runtime._probe)
        text = "ok %s" % (handle.socket_path,)
    except BaseException as err:
        text = "error %s: %s" % (type(err).__name__, err)
    try:
        with open({result}, "w") as out:
            out.write(text)
    except OSError:
        pass


_leakhound_inject()
"#,
        root = quote(probe_root),
        result = quote(result),
    )
}

/// Loads the probe into `pid` and waits for its socket. Every failure is one line.
pub fn inject(pid: u32, timeout: Duration) -> Result<Injected, SourceError> {
    let started = Instant::now();
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(SourceError::NoSuchProcess(pid));
    }
    if let Some(socket) = crate::source::probe::find_socket(pid).socket {
        return Ok(Injected {
            socket,
            method: "already loaded",
            took: started.elapsed(),
        });
    }
    let version = python_version(pid);
    let hook = super::python_hook_dir()
        .map_err(|e| SourceError::Other(format!("cannot write the Python probe's files: {e}")))?;
    // python_hook_dir() is <root>/leakhound_probe/_hook.
    let probe_root = hook
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| SourceError::Other("the probe's folder has no parent".into()))?;
    let work = work_dir()?;
    let result = work.path().join("result");
    let script_path = work.path().join("inject.py");
    // The target may run as another user: it must read the script and write its result.
    write_public(&script_path, &script(probe_root, &result), 0o644)?;
    write_public(&result, "", 0o666)?;
    let method = match version {
        Some((3, minor)) if minor >= 14 => {
            remote_exec(pid, &script_path, timeout)?;
            "sys.remote_exec"
        }
        _ => {
            with_gdb(pid, &script_path, timeout)?;
            "gdb"
        }
    };
    // sys.remote_exec runs the script at the target's next safe point; gdb ran it already.
    loop {
        let said = std::fs::read_to_string(&result).unwrap_or_default();
        if let Some(err) = said.strip_prefix("error ") {
            return Err(SourceError::Other(format!(
                "the probe did not load in pid {pid}: {err}"
            )));
        }
        if let Some(socket) = crate::source::probe::find_socket(pid).socket {
            return Ok(Injected {
                socket,
                method,
                took: started.elapsed(),
            });
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(SourceError::NoSuchProcess(pid));
        }
        if started.elapsed() > timeout {
            return Err(SourceError::Other(format!(
                "the probe was injected into pid {pid} by {method} but its socket did not \
                 appear within {timeout:?}{}",
                if said.is_empty() {
                    " (the script did not run: is the main thread stuck in C code?)".to_string()
                } else {
                    format!(" (it said: {said})")
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn work_dir() -> Result<tempfile::TempDir, SourceError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("leakhound-inject-")
        .tempdir()
        .map_err(|e| SourceError::Other(format!("cannot create a temporary folder: {e}")))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SourceError::Other(format!("cannot open up {}: {e}", dir.path().display())))?;
    Ok(dir)
}

fn write_public(path: &Path, body: &str, mode: u32) -> Result<(), SourceError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| SourceError::Other(format!("cannot write {}: {e}", path.display())))
}

/// Runs `cmd` with a deadline; past it the command is killed. Returns its status and output
/// (stdout then stderr), or `None` on timeout.
fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> std::io::Result<Option<(std::process::ExitStatus, String)>> {
    use std::os::unix::process::CommandExt;
    // Its own process group, so a timeout kills whatever it started too (and the pipes close).
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    // Read both pipes on threads so a chatty gdb never blocks on a full pipe.
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        readers.push(std::thread::spawn(move || {
            let mut text = String::new();
            let mut pipe = pipe;
            let _ = pipe.read_to_string(&mut text);
            text
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: killpg(2) on the group the child leads (created above); ESRCH at worst.
            unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output: String = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    Ok(status.map(|s| (s, output)))
}

/// Sends SIGCONT when the target was left stopped (by a killed gdb); returns whether it had to.
fn resume_if_stopped(pid: u32) -> bool {
    let state = crate::source::procfs::parse::read_stat(pid, None).map(|s| s.state);
    if matches!(state, Some(ProcState::Stopped | ProcState::TracingStop)) {
        // SAFETY: kill(2) with a valid signal; the worst case is ESRCH for a gone pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        return true;
    }
    false
}

/// 3.9-3.13: gdb attaches, takes the GIL, runs the script, releases the GIL and detaches.
fn with_gdb(pid: u32, script_path: &Path, timeout: Duration) -> Result<(), SourceError> {
    // Single quotes inside gdb's double-quoted C string; the temporary path has neither kind.
    let path = script_path.to_string_lossy();
    if path.contains(['\'', '"', '\\']) {
        return Err(SourceError::Other(format!(
            "the temporary folder {path} has quotes in its name: set TMPDIR to a plain folder"
        )));
    }
    let run = format!(
        "call (int)PyRun_SimpleString(\"exec(open('{path}').read(), {{'__name__': '__leakhound_inject__'}})\")"
    );
    let pid_text = pid.to_string();
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-q", "--batch"])
        .args(["-iex", "set debuginfod enabled off"])
        .args(["-iex", "set auto-load off"])
        .args(["-p", &pid_text])
        .args(["-ex", "set confirm off", "-ex", "set pagination off"])
        .args(["-ex", "call (int)PyGILState_Ensure()"])
        .args(["-ex", &run])
        .args(["-ex", "call (void)PyGILState_Release($1)"])
        .args(["-ex", "detach", "-ex", "quit"]);
    let outcome = run_with_timeout(&mut cmd, timeout);
    // Every path: a gdb killed mid-way may leave the target stopped.
    let resumed = resume_if_stopped(pid);
    let (status, output) = match outcome {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::Other(
                "gdb is not installed: install it (`apt-get install gdb`) to inject the probe \
                 into Python 3.9-3.13, or start the program with the probe (`leakhound run -- CMD`)"
                    .to_string(),
            ));
        }
        Err(e) => return Err(SourceError::Other(format!("cannot start gdb: {e}"))),
        Ok(None) => {
            return Err(SourceError::Other(format!(
                "injecting into pid {pid} timed out after {timeout:?}: gdb was stopped and the \
                 target {}",
                if resumed {
                    "resumed (SIGCONT)"
                } else {
                    "was not left stopped"
                }
            )));
        }
        Ok(Some(done)) => done,
    };
    gdb_outcome(pid, status.success(), &output)
}

/// Reads gdb's transcript: each failure named in one line.
fn gdb_outcome(pid: u32, exited_ok: bool, output: &str) -> Result<(), SourceError> {
    if output.contains("ptrace: Operation not permitted") || output.contains("Permission denied") {
        return Err(SourceError::Other(crate::source::ptrace_denied(pid)));
    }
    if output.contains("ptrace: No such process") {
        return Err(SourceError::NoSuchProcess(pid));
    }
    if output.contains("No symbol \"PyGILState_Ensure\"")
        || output.contains("No symbol \"PyRun_SimpleString\"")
        || output.contains("No symbol table is loaded")
    {
        return Err(SourceError::Other(format!(
            "no Python interpreter found in pid {pid}: gdb sees no PyGILState_Ensure symbol \
             (not CPython, or a stripped static build)"
        )));
    }
    // `call` prints `$N = VALUE`; PyRun_SimpleString's is the second, -1 on an exception.
    let values: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix('$'))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v.trim()))
        .collect();
    match values.get(1) {
        Some(&"0") => Ok(()),
        Some(other) => Err(SourceError::Other(format!(
            "the injected script failed in pid {pid} (PyRun_SimpleString returned {other}); \
             its traceback is on the target's standard error"
        ))),
        None => {
            let last = output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            Err(SourceError::Other(format!(
                "gdb could not run the probe in pid {pid}{}: {last}",
                if exited_ok { "" } else { " (gdb failed)" }
            )))
        }
    }
}

/// 3.14+: the target's own interpreter asks it to run the script (PEP 768).
fn remote_exec(pid: u32, script_path: &Path, timeout: Duration) -> Result<(), SourceError> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| SourceError::Other(format!("cannot read /proc/{pid}/exe: {e}")))?;
    let code = format!(
        "import sys; sys.remote_exec({pid}, {:?})",
        script_path.to_string_lossy()
    );
    let mut cmd = Command::new(exe);
    cmd.args(["-c", &code]);
    match run_with_timeout(&mut cmd, timeout) {
        Ok(Some((status, _))) if status.success() => Ok(()),
        Ok(Some((_, output))) => {
            if output.contains("PermissionError") || output.contains("Operation not permitted") {
                return Err(SourceError::Other(crate::source::ptrace_denied(pid)));
            }
            let last = output.lines().rev().find(|l| !l.trim().is_empty());
            Err(SourceError::Other(format!(
                "sys.remote_exec into pid {pid} failed: {}",
                last.unwrap_or("no output")
            )))
        }
        Ok(None) => Err(SourceError::Other(format!(
            "sys.remote_exec into pid {pid} timed out after {timeout:?}"
        ))),
        Err(e) => Err(SourceError::Other(format!(
            "cannot run the target's interpreter for sys.remote_exec: {e}"
        ))),
    }
}

/// `--inject` on a command line: loads the probe when the target is a PID, says what it did
/// on standard error, and refuses other targets. A PID stands for its process tree, as
/// everywhere: the probe goes into the root and every Python descendant (each gunicorn or
/// `uvicorn --workers` worker), one after the other; a worker that could not be injected is
/// named with why, in one line.
pub fn inject_target(target: &crate::source::Target) -> anyhow::Result<()> {
    let crate::source::Target::Pid(pid) = target else {
        anyhow::bail!("--inject needs a PID target (a running Python process), not '{target}'");
    };
    let pids = tree_pythons(*pid);
    let timeout = timeout()?;
    let mut failed = Vec::new();
    for &p in &pids {
        match inject(p, timeout) {
            Ok(done) => eprintln!(
                "leakhound: probe loaded into pid {p} by {} in {:.1} s; socket {}",
                done.method,
                done.took.as_secs_f64(),
                done.socket.display()
            ),
            // A worker that ended meanwhile (recycled) is not a failure of the service's.
            Err(SourceError::NoSuchProcess(_)) if p != *pid => {}
            Err(e) => failed.push((p, e)),
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        [(_, e)] if pids.len() == 1 => Err(anyhow::anyhow!("{e}")),
        _ => {
            let why: Vec<String> = failed
                .iter()
                .map(|(p, e)| format!("pid {p}: {e}"))
                .collect();
            anyhow::bail!(
                "the probe was not loaded into {} of the {} Python processes of pid {pid} ({}); \
                 the others have it. Retry, or start the service with `leakhound run`",
                failed.len(),
                pids.len(),
                why.join("; ")
            )
        }
    }
}

/// The Python processes of `root`'s tree, root first (when it is Python), then its
/// descendants parents first; just `root` when none is Python (its injection says why).
fn tree_pythons(root: u32) -> Vec<u32> {
    let descendants = crate::source::tree::live_descendants(root, crate::source::now_ms())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.state != crate::model::ProcState::Zombie)
        .map(|c| c.pid);
    let pythons: Vec<u32> = std::iter::once(root)
        .chain(descendants)
        .filter(|&p| python_version(p).is_some())
        .collect();
    if pythons.is_empty() {
        vec![root]
    } else {
        pythons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::procfs::parse::{hostile, read_stat};

    #[test]
    fn a_stopped_target_with_a_hostile_comm_is_sent_on() {
        let child = hostile::spawn("/bin/sleep", &["60"]);
        let pid = child.pid();
        let state = || read_stat(pid, None).map(|s| s.state);
        assert!(!resume_if_stopped(pid), "not stopped yet");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        hostile::wait_until("stopped", || state() == Some(ProcState::Stopped));
        assert!(resume_if_stopped(pid));
        hostile::wait_until("running again", || state() != Some(ProcState::Stopped));
    }

    #[test]
    fn gdb_transcripts_become_one_line_errors() {
        let denied = gdb_outcome(
            42,
            false,
            "ptrace: Operation not permitted.\nNo symbol table is loaded.",
        )
        .unwrap_err()
        .to_string();
        assert!(denied.contains("not permitted to trace"), "{denied}");
        assert!(!denied.contains('\n'));
        let no_python = gdb_outcome(
            42,
            true,
            "0x00007f in epoll_wait ()\nNo symbol \"PyGILState_Ensure\" in current context.",
        )
        .unwrap_err()
        .to_string();
        assert!(no_python.contains("no Python interpreter"), "{no_python}");
        let failed = gdb_outcome(42, true, "$1 = 1\n$2 = -1\n")
            .unwrap_err()
            .to_string();
        assert!(failed.contains("returned -1"), "{failed}");
        assert!(gdb_outcome(42, true, "[Inferior 1 detached]\n$1 = 1\n$2 = 0\n").is_ok());
    }

    #[test]
    fn the_script_names_its_paths_as_python_strings() {
        let text = script(Path::new("/a b/probe"), Path::new("/tmp/x/result"));
        assert!(text.contains("root = \"/a b/probe\""));
        assert!(text.contains("open(\"/tmp/x/result\", \"w\")"));
    }

    #[test]
    fn versions_come_from_interpreter_and_library_names() {
        assert_eq!(parse_version("python3.12"), Some((3, 12)));
        assert_eq!(parse_version("libpython3.9.so.1.0"), Some((3, 9)));
        assert_eq!(parse_version("python3.13t"), Some((3, 13)));
        assert_eq!(parse_version("python3"), None);
        assert_eq!(parse_version("leakhound"), None);
        // This test binary is not Python: nothing to find.
        assert_eq!(python_version(std::process::id()), None);
    }
}
