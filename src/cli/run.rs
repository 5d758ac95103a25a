//! `leakhound run -- CMD`: start a program with the probes loaded (Python through the
//! environment, a Rust probe through `LEAKHOUND_SOCKET_DIR`), capture its output into the
//! Logs view, and show it in the dashboard. Quitting stops the program.
//!
//! Headless (`--headless`, or without a terminal: CI, a pipe, a service manager) there is no
//! dashboard: the program runs with the probes loaded and is watched as `watch PID` watches a
//! process, findings printed as they fire (text or `--json`) and a summary at the end.

use super::{EXIT_CLEAN, RunArgs, WatchArgs, dashboard};
use crate::source::Target;
use crate::tui::event::{AppEvent, FeedEvent, LogLine, Stream};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest log line kept; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;

/// Forwards each line of `pipe` to the UI; after the UI is gone keeps draining so the
/// program never blocks on a full pipe.
pub fn forward_lines(pipe: impl Read + Send + 'static, stream: Stream, tx: SyncSender<AppEvent>) {
    let spawned = std::thread::Builder::new()
        .name("leakhound-logs".into())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            let mut ui_alive = true;
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if !ui_alive {
                    continue;
                }
                let text = String::from_utf8_lossy(&buf[..buf.len().min(MAX_LINE)]);
                let line = LogLine::parse(stream, text.trim_end_matches(['\n', '\r']));
                ui_alive = tx.send(AppEvent::Feed(FeedEvent::Log(line))).is_ok();
            }
        });
    if let Err(e) = spawned {
        eprintln!("leakhound: warning: cannot capture output: {e}");
    }
}

/// Starts `argv` with the probes injected and its output piped; `socket_dir` is where
/// probes listen.
pub fn spawn_probed(argv: &[String], socket_dir: &std::path::Path) -> anyhow::Result<Child> {
    spawn_with(argv, socket_dir, Stdio::piped(), Stdio::piped())
}

/// Starts `argv` with the probes injected, its standard output and error as given.
fn spawn_with(
    argv: &[String],
    socket_dir: &std::path::Path,
    stdout: Stdio,
    stderr: Stdio,
) -> anyhow::Result<Child> {
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command given: write leakhound run -- CMD ARGS"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Ask Python loggers that use the probe's filter for ids, and unbuffer output so
        // lines arrive as they are written.
        .env("PYTHONUNBUFFERED", "1");
    crate::launch::inject(&mut cmd, socket_dir)
        .map_err(|e| anyhow::anyhow!("cannot prepare the Python probe: {e}"))?;
    cmd.spawn().map_err(|e| {
        anyhow::anyhow!(
            "cannot start `{program}`: {e}; check that the command exists and is executable"
        )
    })
}

/// SIGTERM, then SIGKILL after `grace`; reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reaps the program as soon as it exits (polling every `every`), then calls `then` with how
/// it ended; the thread ends with it.
fn on_exit(
    child: Arc<Mutex<Child>>,
    every: Duration,
    then: impl FnOnce(std::process::ExitStatus) + Send + 'static,
) {
    std::thread::spawn(move || {
        loop {
            let status = match child.lock() {
                Ok(mut c) => c.try_wait(),
                Err(_) => return,
            };
            match status {
                Ok(Some(status)) => return then(status),
                Ok(None) => std::thread::sleep(every),
                Err(_) => return,
            }
        }
    });
}

/// Reaps the program when it exits and says so on the status line; the dashboard stays up
/// with the last sample so the person can look at what was left.
fn watch_exit(child: Arc<Mutex<Child>>, name: String, tx: SyncSender<AppEvent>) {
    on_exit(child, Duration::from_millis(200), move |status| {
        let _ = tx.send(AppEvent::Feed(FeedEvent::Gone(format!(
            "`{name}` exited ({status}); q quits"
        ))));
    });
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let config = args.common.config()?;
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if args.headless || !terminal {
        return headless(args);
    }
    if args.json || args.duration.is_some() {
        anyhow::bail!(
            "--json and --for are for headless runs: add --headless (the dashboard runs until you quit)"
        );
    }
    let socket_dir = tempfile::Builder::new()
        .prefix("leakhound-run-")
        .tempdir()?;
    let mut child = spawn_probed(&args.command, socket_dir.path())?;
    let (tx, rx) = dashboard::channel();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, Stream::Stdout, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, Stream::Stderr, tx.clone());
    }
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    watch_exit(Arc::clone(&child), args.command.join(" "), tx.clone());
    let control = dashboard::live_feed(
        Target::Pid(pid),
        None,
        args.common.interval,
        config,
        tx.clone(),
    )?;
    let mut state = dashboard::new_state();
    state.logs.capturing = true;
    let result = dashboard::run_ui(state, tx, rx, control);
    if let Ok(mut child) = child.lock() {
        stop_child(&mut child, Duration::from_secs(2));
    }
    result?;
    Ok(EXIT_CLEAN)
}

/// The program, probes loaded, watched as `watch PID` watches a process. Its standard output
/// goes to leakhound's standard error (with its own), so standard output is findings only.
fn headless(args: RunArgs) -> anyhow::Result<u8> {
    let socket_dir = tempfile::Builder::new()
        .prefix("leakhound-run-")
        .tempdir()?;
    let to_stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let child = spawn_with(
        &args.command,
        socket_dir.path(),
        Stdio::from(to_stderr),
        Stdio::inherit(),
    )?;
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    // Reaped as soon as it ends, so /proc lets go of it and the watch sees it gone.
    let ended: Arc<Mutex<Option<std::process::ExitStatus>>> = Arc::default();
    let reaped = Arc::clone(&ended);
    on_exit(
        Arc::clone(&child),
        Duration::from_millis(50),
        move |status| {
            if let Ok(mut e) = reaped.lock() {
                *e = Some(status);
            }
        },
    );
    let argv0 = args.command.first().map_or("", String::as_str);
    await_python_probe(pid, argv0, socket_dir.path(), &ended);
    let watched = super::watch::run(WatchArgs {
        target: Target::Pid(pid),
        duration: args.duration,
        json: args.json,
        inject: false,
        listen: None,
        common: args.common,
    });
    // Ended on its own before the watch stopped (the watch may see it gone before the reaper
    // thread reaps it; try_wait returns the status either way): its status counts. Otherwise
    // leakhound stops it.
    let mut own = None;
    if let Ok(mut child) = child.lock() {
        own = child.try_wait().ok().flatten();
        // The watch can see the program gone (its main thread a zombie) a moment before the
        // rest of its threads are torn down and its status can be reaped: when it is no longer
        // running, wait for that status (bounded), or its own failure would be missed.
        let deadline = Instant::now() + Duration::from_secs(2);
        while own.is_none() && !crate::check::tree::is_running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            own = child.try_wait().ok().flatten();
        }
        stop_child(&mut child, Duration::from_secs(2));
    }
    let watched = match watched {
        // Over before the first sample could be taken: nothing to judge, not an error.
        Err(e) if own.is_some() => {
            eprintln!(
                "leakhound: note: `{}` ended before it could be sampled ({e})",
                args.command.join(" ")
            );
            EXIT_CLEAN
        }
        other => other?,
    };
    Ok(match own.map(failed_status) {
        Some(Some(code)) => code,
        _ => watched,
    })
}

/// How long a Python program gets to start its probe before the first sample.
const PROBE_START: Duration = Duration::from_secs(3);

/// Gives a Python program the moment its probe takes to listen, so the first sample (and its
/// note) has it; later samples find a probe that starts later anyway. Other programs (whose
/// probe, if any, is their own business) are not waited for.
fn await_python_probe(
    pid: u32,
    argv0: &str,
    socket_dir: &std::path::Path,
    ended: &Mutex<Option<std::process::ExitStatus>>,
) {
    let pythonic = |path: &std::path::Path| {
        path.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python"))
    };
    // `python3` may be a launcher (pyenv's shim is a shell script) that execs Python later;
    // a script with a Python shebang (uvicorn, gunicorn) is Python from the start.
    let named = pythonic(std::path::Path::new(argv0));
    let python =
        || named || std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| pythonic(&exe));
    let listening = || socket_dir.join(format!("{pid}.sock")).exists();
    let started = Instant::now();
    while python()
        && started.elapsed() < PROBE_START
        && !listening()
        && ended.lock().is_ok_and(|e| e.is_none())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program's failure as a shell reports it (its code, or 128 + the signal); None for success.
fn failed_status(status: std::process::ExitStatus) -> Option<u8> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(code), _) => Some(code as u8),
        (None, Some(signal)) => Some(128u8.saturating_add(signal as u8)),
        (None, None) => Some(1),
    }
}
