//! `leakhound run -- CMD`: start a program with the probes loaded (Python through the
//! environment, a Rust probe through `LEAKHOUND_SOCKET_DIR`), capture its output into the
//! Logs view, and show it in the dashboard. Quitting stops the program.

use super::{EXIT_CLEAN, RunArgs, dashboard};
use crate::source::Target;
use crate::tui::event::{AppEvent, FeedEvent, LogLine, Stream};
use std::io::{BufRead, BufReader, Read};
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
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command given: write leakhound run -- CMD ARGS"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

/// Reaps the program when it exits and says so on the status line; the dashboard stays up
/// with the last sample so the person can look at what was left.
fn watch_exit(child: Arc<Mutex<Child>>, name: String, tx: SyncSender<AppEvent>) {
    std::thread::spawn(move || {
        loop {
            let status = match child.lock() {
                Ok(mut c) => c.try_wait(),
                Err(_) => return,
            };
            match status {
                Ok(Some(status)) => {
                    let _ = tx.send(AppEvent::Feed(FeedEvent::Gone(format!(
                        "`{name}` exited ({status}); q quits"
                    ))));
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(_) => return,
            }
        }
    });
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = args.common.config()?;
    dashboard::require_terminal("run")?;
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
