//! `leakhound demo`: starts a built-in misbehaving workload (`__demo-worker`, a tokio
//! program with the Rust probe, plus a Python service with the Python probe when python3 is
//! present) and shows it in the dashboard with thresholds shortened so every rule fires
//! within 30 seconds. `--headless D` prints findings as `watch` does; `--screenshots DIR`
//! draws every view of the real run into SVG files.

mod worker;

use super::{DemoArgs, DemoWorkerArgs, EXIT_CLEAN, EXIT_FINDINGS, dashboard, run as run_cmd};
use crate::config::Config;
use crate::judge::Judges;
use crate::model::Snapshot;
use crate::source::{SampleOptions, Target};
use crate::tui::event::{AppEvent, Control, Stream};
use crate::tui::state::ViewKind;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The shortened thresholds, as `-T` would set them.
pub const DEMO_THRESHOLDS: &[&str] = &[
    "stuck-task.after=5s",
    "never-awaited.unpolled-after=5s",
    "leak-growth.min-window=8s",
    "leak-growth.min-increase=10",
    "close-wait.for=2s",
    "zombie-child.after=3s",
];

pub fn demo_config() -> Config {
    Config::with(DEMO_THRESHOLDS).expect("demo thresholds are valid keys")
}

pub fn banner() -> String {
    format!(
        "demo: thresholds shortened so every rule fires within 30 s ({}); the Python service is in Processes (enter drills in)",
        DEMO_THRESHOLDS.join(", ")
    )
}

pub fn worker(args: DemoWorkerArgs) -> anyhow::Result<u8> {
    worker::run(args.python)
}

fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the worker with both probes pointed at `socket_dir`.
fn start_worker(python: bool, socket_dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut argv = vec![exe.display().to_string(), "__demo-worker".to_string()];
    if python {
        argv.push("--python".into());
    }
    run_cmd::spawn_probed(&argv, socket_dir)
}

/// The Python service among the worker's children, once it is up.
fn python_child(s: &Snapshot) -> Option<u32> {
    s.children
        .iter()
        .find(|c| c.cmd.contains("demo_service.py"))
        .map(|c| c.pid)
}

pub fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let python = !args.no_python && python_available();
    if args.headless.is_none() && args.screenshots.is_none() {
        dashboard::require_terminal("demo")?;
    }
    let socket_dir = tempfile::Builder::new()
        .prefix("leakhound-demo-")
        .tempdir()?;
    let mut child = start_worker(python, socket_dir.path())?;
    let result = if let Some(d) = args.headless {
        headless(&mut child, d, python)
    } else if let Some(dir) = &args.screenshots {
        screenshots(&mut child, dir, args.after).map(|_| EXIT_CLEAN)
    } else {
        interactive(&mut child, python)
    };
    run_cmd::stop_child(&mut child, Duration::from_secs(2));
    result
}

fn forward_output(child: &mut Child, tx: &std::sync::mpsc::SyncSender<AppEvent>) {
    if let Some(out) = child.stdout.take() {
        run_cmd::forward_lines(out, Stream::Stdout, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        run_cmd::forward_lines(err, Stream::Stderr, tx.clone());
    }
}

/// The UI's channel with the worker's output and a live feed on it (demo thresholds).
fn observe(
    child: &mut Child,
) -> anyhow::Result<(
    std::sync::mpsc::SyncSender<AppEvent>,
    std::sync::mpsc::Receiver<AppEvent>,
    std::sync::mpsc::Sender<Control>,
)> {
    let (tx, rx) = dashboard::channel();
    forward_output(child, &tx);
    let target = Target::Pid(child.id());
    let control = dashboard::live_feed(
        target,
        None,
        Duration::from_secs(1),
        demo_config(),
        tx.clone(),
    )?;
    Ok((tx, rx, control))
}

fn interactive(child: &mut Child, python: bool) -> anyhow::Result<u8> {
    let (tx, rx, control) = observe(child)?;
    let mut state = dashboard::new_state();
    state.logs.capturing = true;
    state.banner = Some(if python {
        banner()
    } else {
        format!(
            "demo (no python3: Rust part only): thresholds shortened: {}",
            DEMO_THRESHOLDS.join(", ")
        )
    });
    dashboard::run_ui(state, tx, rx, control)?;
    Ok(EXIT_CLEAN)
}

/// Samples the worker and the Python service side by side, printing each finding once.
fn headless(child: &mut Child, duration: Duration, python: bool) -> anyhow::Result<u8> {
    // Output is not shown headless; drain it so the workload never blocks on a pipe.
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    forward_output(child, &tx);
    std::thread::spawn(move || while rx.recv().is_ok() {});
    super::out::println(&format!(
        "demo: pid {} (tokio + Rust probe){}; thresholds shortened: {}",
        child.id(),
        if python {
            " and its Python service (Python probe)"
        } else {
            ", no python3: Rust part only"
        },
        DEMO_THRESHOLDS.join(", ")
    ));
    let started = Instant::now();
    // One judge per process: the same subject in two processes is two findings.
    let mut judges = Judges::new(demo_config());
    let mut targets: Vec<(u32, Box<dyn crate::source::Source>)> = Vec::new();
    let worker = crate::source::open(&Target::Pid(child.id()))?;
    targets.push((child.id(), worker));
    let mut fired = std::collections::BTreeSet::new();
    while started.elapsed() < duration {
        let tick = Instant::now();
        if super::interrupt::interrupted() {
            break;
        }
        let mut discovered = None;
        for (pid, source) in targets.iter_mut() {
            match source.sample(SampleOptions::default()) {
                Ok(s) => {
                    if discovered.is_none() {
                        discovered = python_child(&s);
                    }
                    for f in judges.observe(*pid, s).new {
                        super::out::println(&format!(
                            "[{:>5.1}s] pid {pid:<7} {}",
                            started.elapsed().as_secs_f64(),
                            crate::report::text::finding_line(&f)
                        ));
                        fired.insert(f.rule);
                    }
                }
                Err(e) => eprintln!("leakhound: warning: pid {pid}: {e}"),
            }
        }
        if let Some(py) = discovered.filter(|py| targets.iter().all(|(p, ..)| p != py))
            && let Ok(src) = crate::source::open(&Target::Pid(py))
        {
            super::out::println(&format!("demo: the Python service is pid {py}"));
            targets.push((py, src));
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let known: Vec<&str> = crate::rules::all().iter().map(|r| r.id()).collect();
    let missing: Vec<&str> = known
        .iter()
        .copied()
        .filter(|id| !fired.contains(*id))
        .collect();
    super::out::println(&format!(
        "demo: {} rule(s) fired: {}{}",
        fired.len(),
        fired.iter().cloned().collect::<Vec<_>>().join(", "),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; not fired: {}", missing.join(", "))
        }
    ));
    Ok(if fired.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_FINDINGS
    })
}

/// Runs the demo into an off-screen dashboard and writes each view as SVG.
fn screenshots(child: &mut Child, dir: &Path, after: Duration) -> anyhow::Result<()> {
    use crate::tui::App;
    use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{Terminal, backend::TestBackend};
    std::fs::create_dir_all(dir)?;
    let (tx, rx, control) = observe(child)?;
    let mut state = crate::tui::State::new(true);
    state.logs.capturing = true;
    state.banner = Some(banner());
    let mut app = App::new(Terminal::new(TestBackend::new(132, 38))?, state).with_control(control);
    let pump = |app: &mut App<TestBackend>, d: Duration| {
        let until = Instant::now() + d;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok(ev) = rx.recv_timeout(left) {
                app.handle(ev);
            }
        }
    };
    let key = |app: &mut App<TestBackend>, c: KeyCode| {
        app.handle(AppEvent::Input(Event::Key(KeyEvent::new(
            c,
            KeyModifiers::NONE,
        ))));
    };
    let shoot = |app: &mut App<TestBackend>, name: &str| -> anyhow::Result<()> {
        app.draw()?;
        let svg = crate::tui::svg::buffer_to_svg(app.terminal.backend().buffer());
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, svg)?;
        super::out::println(&format!("wrote {}", path.display()));
        Ok(())
    };
    eprintln!("running the demo for {after:?} before taking screenshots…");
    pump(&mut app, after);
    for view in ViewKind::ALL {
        key(&mut app, KeyCode::Char(view.letter()));
        if view == ViewKind::Findings {
            key(&mut app, KeyCode::Enter);
        }
        shoot(&mut app, &format!("{}-{}", view.index() + 1, slug(view)))?;
        key(&mut app, KeyCode::Esc);
    }
    // Drill into the Python service and show it from the inside.
    key(&mut app, KeyCode::Char('p'));
    let rows = app
        .state
        .snapshot
        .as_ref()
        .map(|s| {
            crate::tui::state::process_rows(s)
                .iter()
                .map(|c| c.cmd.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(row) = rows.iter().position(|cmd| cmd.contains("demo_service.py")) {
        for _ in 0..=row {
            key(&mut app, KeyCode::Char('j'));
        }
        key(&mut app, KeyCode::Enter);
        pump(&mut app, Duration::from_secs(4));
        for (view, name) in [
            (ViewKind::Tasks, "python-tasks"),
            (ViewKind::Threads, "python-threads"),
            (ViewKind::Overview, "python-overview"),
            (ViewKind::Findings, "python-findings"),
        ] {
            key(&mut app, KeyCode::Char(view.letter()));
            shoot(&mut app, name)?;
        }
    } else {
        eprintln!(
            "leakhound: warning: no Python service in the demo (python3 missing?): skipped the python-* screenshots"
        );
    }
    drop(tx);
    Ok(())
}

fn slug(view: ViewKind) -> String {
    view.title()
        .to_lowercase()
        .replace(" & ", "-")
        .replace(' ', "-")
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_thresholds_parse() {
        let c = super::demo_config();
        assert_eq!(c.stuck_task_after, std::time::Duration::from_secs(5));
    }
}
