//! The real binary in a real pseudo-terminal: `leakhound demo` is started, its screen is
//! parsed with vt100 and read as a person would; quitting must give the terminal back.

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{LocalModes, Winsize, tcgetattr, tcsetwinsize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Pty {
    master: File,
    slave: OwnedFd,
    child: Child,
    screen: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(args: &[&str], cols: u16, rows: u16) -> Pty {
        Pty::spawn_env(args, cols, rows, &[])
    }

    fn spawn_env(args: &[&str], cols: u16, rows: u16, env: &[(&str, &str)]) -> Pty {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave: OwnedFd = File::options()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap()
            .into();
        tcsetwinsize(
            &master,
            Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .unwrap();
        let stdio = || Stdio::from(slave.try_clone().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakhound"));
        cmd.args(args)
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            rows.try_into().unwrap(),
            cols.try_into().unwrap(),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let (screen2, raw2) = (Arc::clone(&screen), Arc::clone(&raw));
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen2.lock().unwrap().process(&buf[..n]);
                raw2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            child,
            screen,
            raw,
        }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn press(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
        self.master.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Waits until the screen satisfies `ok`; panics with the screen after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text();
            if ok(&text) {
                return text;
            }
            if started.elapsed() > limit {
                panic!("timed out waiting for {what}; screen:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("leakhound did not exit; screen:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has_all(text: &str, ids: &[&str]) -> bool {
    ids.iter().all(|id| text.contains(id))
}

#[test]
fn demo_findings_read_off_the_screen_then_drill_into_python() {
    let mut pty = Pty::spawn(&["demo"], 140, 40);
    // The tokio worker: /proc rules and the Rust probe's rules, on the Overview.
    let worker_rules = [
        "close-wait",
        "fd-exhaustion",
        "zombie-child",
        "leak-growth",
        "stuck-task",
        "never-awaited",
        "loop-blocked",
    ];
    let text = pty.wait_for("the worker's findings", Duration::from_secs(20), |t| {
        has_all(t, &worker_rules)
    });
    assert!(text.contains("Findings("), "{text}");
    assert!(
        text.contains("demo: thresholds shortened"),
        "the demo says its thresholds are short:\n{text}"
    );
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !python {
        eprintln!("python3 missing: skipping the Python half");
        return;
    }
    // Processes view: find the Python service's row and drill into it.
    pty.press(b"p");
    let text = pty.wait_for("the process tree", Duration::from_secs(5), |t| {
        t.contains("demo_service.py")
    });
    let lines: Vec<&str> = text.lines().collect();
    let target_row = lines
        .iter()
        .position(|l| l.contains("(target)"))
        .expect("root row");
    let python_row = lines
        .iter()
        .position(|l| l.contains("demo_service.py"))
        .expect("python row");
    for _ in 0..python_row - target_row {
        pty.press(b"j");
    }
    pty.press(b"\r");
    pty.press(b"f");
    let python_rules = [
        "loop-blocked",
        "never-awaited",
        "pool-starvation",
        "unclosed-resource",
        "stuck-task",
    ];
    let text = pty.wait_for(
        "the Python service's findings",
        Duration::from_secs(12),
        |t| has_all(t, &python_rules) && t.contains("wait_for_config"),
    );
    assert!(
        text.contains("procfs+probe(python)"),
        "status line names the live source:\n{text}"
    );
    pty.press(b"q");
    assert!(pty.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn quitting_restores_the_terminal() {
    let mut pty = Pty::spawn(&["demo", "--no-python"], 80, 24);
    pty.wait_for("the dashboard", Duration::from_secs(10), |t| {
        t.contains("1:Overview") && t.contains("sample")
    });
    {
        let parser = pty.screen.lock().unwrap();
        assert!(
            parser.screen().alternate_screen(),
            "the dashboard runs on the alternate screen"
        );
        assert!(parser.screen().hide_cursor());
    }
    let modes = tcgetattr(pty.slave.as_fd()).unwrap().local_modes;
    assert!(
        !modes.contains(LocalModes::ICANON),
        "raw mode while the dashboard runs"
    );
    pty.press(b"q");
    assert!(pty.wait_exit(Duration::from_secs(5)).success());
    std::thread::sleep(Duration::from_millis(200));
    let parser = pty.screen.lock().unwrap();
    assert!(!parser.screen().alternate_screen(), "alternate screen left");
    assert!(!parser.screen().hide_cursor(), "cursor shown again");
    let modes = tcgetattr(pty.slave.as_fd()).unwrap().local_modes;
    assert!(
        modes.contains(LocalModes::ICANON) && modes.contains(LocalModes::ECHO),
        "raw mode off: {modes:?}"
    );
    let raw = pty.raw.lock().unwrap();
    let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(64)..]).to_string();
    assert!(
        tail.contains("\u{1b}[?1049l"),
        "leaves the alternate screen last: {tail:?}"
    );
}

/// Cells drawn in a colour other than the terminal's default.
fn coloured_cells(pty: &Pty) -> usize {
    let parser = pty.screen.lock().unwrap();
    let screen = parser.screen();
    let (rows, cols) = screen.size();
    let (rows, cols): (u16, u16) = (rows.into(), cols.into());
    (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .filter(|(r, c)| {
            screen.cell(*r, *c).is_some_and(|cell| {
                cell.fgcolor() != vt100::Color::Default || cell.bgcolor() != vt100::Color::Default
            })
        })
        .count()
}

#[test]
fn no_color_draws_without_colours() {
    let ready = |t: &str| t.contains("1:Overview") && t.contains("sample");
    let pty = Pty::spawn(&["demo", "--no-python"], 100, 30);
    pty.wait_for("the dashboard", Duration::from_secs(10), ready);
    assert!(coloured_cells(&pty) > 0, "colours by default");
    drop(pty);
    let pty = Pty::spawn_env(&["demo", "--no-python"], 100, 30, &[("NO_COLOR", "1")]);
    pty.wait_for("the dashboard", Duration::from_secs(10), ready);
    assert_eq!(
        coloured_cells(&pty),
        0,
        "NO_COLOR: no colour at all:\n{}",
        pty.text()
    );
}

const TICKER: &str = r#"
import asyncio, threading
async def ticker():
    name = asyncio.current_task().get_name()
    for n in range(600):
        print(f"tick tid={threading.get_native_id()} task={name} n={n}", flush=True)
        await asyncio.sleep(0.2)
async def main():
    await asyncio.gather(asyncio.create_task(ticker(), name="ticker"), asyncio.Event().wait())
asyncio.run(main())
"#;

#[test]
fn run_captures_output_and_links_lines_to_tasks() {
    if !Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("python3 missing: skipped");
        return;
    }
    let mut pty = Pty::spawn(&["run", "--", "python3", "-c", TICKER], 120, 30);
    let text = pty.wait_for("the probe's view", Duration::from_secs(15), |t| {
        t.contains("procfs+probe(python)")
    });
    let pid: u32 = text
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid on the status line:\n{text}"));
    pty.press(b"g");
    pty.wait_for("captured lines", Duration::from_secs(10), |t| {
        t.contains("task=ticker n=")
    });
    // The newest line is selected; enter leads to its task.
    pty.press(b"\r");
    let text = pty.wait_for("the Tasks view on ticker", Duration::from_secs(5), |t| {
        t.contains("IDLE FOR") && t.contains("ticker")
    });
    let selected = {
        let parser = pty.screen.lock().unwrap();
        let screen = parser.screen();
        let rows: Vec<String> = screen.rows(0, 120).collect();
        rows.iter()
            .enumerate()
            .find(|(r, _)| {
                screen
                    .cell(*r as u16, 2)
                    .is_some_and(|c| c.bold() || c.inverse())
                    && rows[*r].contains("ticker")
            })
            .map(|(_, l)| l.clone())
    };
    assert!(
        selected.is_some(),
        "the ticker task is the selected row:\n{text}"
    );
    // …and back: its lines only.
    pty.press(b"g");
    pty.wait_for("the task's lines", Duration::from_secs(5), |t| {
        t.contains("of task ticker")
    });
    pty.press(b"q");
    assert!(pty.wait_exit(Duration::from_secs(5)).success());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "quitting stops (and reaps) the program"
    );
}

/// `replay 3/20` on the status line → 3.
fn replay_position(text: &str) -> usize {
    text.split("replay ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no replay position on screen:\n{text}"))
}

#[test]
fn replay_pauses_steps_and_seeks() {
    use leakhound::source::replay::{Header, RecordingWriter};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.lhrec");
    let mut writer = RecordingWriter::create(&path, &Header::new("pid 4242".into(), 1000)).unwrap();
    for seq in 0..30 {
        writer
            .write(&leakhound::tui::fixture::snapshot(seq))
            .unwrap();
    }
    drop(writer);
    // Cut the last line short: the dashboard still opens, with the warning on the status line.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    let mut pty = Pty::spawn(&["replay", path.to_str().unwrap()], 140, 30);
    let text = pty.wait_for("the replay", Duration::from_secs(10), |t| {
        t.contains("replay ") && t.contains("/29")
    });
    assert!(
        text.contains("cut short"),
        "the truncation is said:\n{text}"
    );
    pty.press(b" ");
    let paused = pty.wait_for("pause", Duration::from_secs(5), |t| t.contains("PAUSED"));
    let at = replay_position(&paused);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        replay_position(&pty.text()),
        at,
        "paused: the position holds"
    );
    pty.press(b".");
    pty.wait_for("one step", Duration::from_secs(5), |t| {
        replay_position(t) == at + 1
    });
    pty.press(b"]");
    let want = (at + 11).min(29);
    pty.wait_for("ten steps", Duration::from_secs(5), |t| {
        replay_position(t) == want
    });
    pty.press(b"[");
    pty.press(b",");
    pty.wait_for("back eleven", Duration::from_secs(5), |t| {
        replay_position(t) == want - 11
    });
    pty.press(b"q");
    assert!(pty.wait_exit(Duration::from_secs(5)).success());
}
