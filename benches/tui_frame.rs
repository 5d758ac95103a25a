//! Dashboard frame time and memory at scale: the real App drawn into TestBackend at 200×60
//! with 100,000 live tasks and 2,000 sockets, side by side with the straightforward way (a
//! table row built for every task on every frame), in one run.
//!
//! Run: `cargo bench --bench tui_frame` (release). Targets: a frame under 16 ms, memory
//! under 200 MB.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use leakhound::tui::event::{AppEvent, FeedEvent, Update};
use leakhound::tui::fixture;
use leakhound::tui::state::State;
use leakhound::tui::{App, state::tasks::location};
use ratatui::layout::Constraint;
use ratatui::widgets::{Block, Row, Table};
use ratatui::{Terminal, backend::TestBackend};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes, so "memory" is what the dashboard holds, not allocator slack.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TASKS: usize = 100_000;
const SOCKETS: usize = 2_000;
const FRAMES: usize = 200;

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1048576.0
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1048576.0
}

struct Stats {
    mean: Duration,
    p99: Duration,
}

/// CPU time of this thread: what a frame costs, whatever else the machine is doing.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`, returning (wall time, this thread's CPU time).
fn timed(f: impl FnOnce()) -> (Duration, Duration) {
    let (w, c) = (Instant::now(), thread_cpu());
    f();
    (w.elapsed(), thread_cpu() - c)
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    Stats { mean, p99 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn key(app: &mut App<TestBackend>, c: char) {
    app.handle(AppEvent::Input(Event::Key(KeyEvent::new(
        KeyCode::Char(c),
        KeyModifiers::NONE,
    ))));
}

fn update(seq: u64) -> Box<Update> {
    let mut snapshot = fixture::large_snapshot(TASKS, SOCKETS);
    snapshot.taken_at_ms += seq * 1000;
    Box::new(Update {
        snapshot,
        findings: fixture::findings(),
        source: "bench".into(),
        replay: None,
        skipped: 0,
        resolved: vec![],
    })
}

fn main() {
    let base_live = LIVE.load(Ordering::Relaxed);
    let base_rss = rss_mb();
    let mut app = App::new(
        Terminal::new(TestBackend::new(200, 60)).unwrap(),
        State::new(true),
    )
    .with_clock(fixture::now);
    let first = update(0);
    let snapshot_bytes = LIVE.load(Ordering::Relaxed) - base_live;
    app.handle(AppEvent::Feed(FeedEvent::Update(first)));

    println!(
        "tui_frame: {TASKS} tasks, {SOCKETS} sockets, 200x60, {FRAMES} frames per case (release)"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "case (ms)", "cpu mean", "cpu p99", "wall mean", "wall p99"
    );
    let report = |name: &str, pairs: Vec<(Duration, Duration)>| -> Stats {
        let wall = stats(pairs.iter().map(|p| p.0).collect());
        let cpu = stats(pairs.iter().map(|p| p.1).collect());
        println!(
            "{name:<44} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            ms(cpu.mean),
            ms(cpu.p99),
            ms(wall.mean),
            ms(wall.p99)
        );
        cpu
    };
    for (view, name) in [
        ('o', "overview"),
        ('t', "tasks (sorted, cached order)"),
        ('s', "files & sockets"),
        ('r', "threads"),
    ] {
        key(&mut app, view);
        app.draw().unwrap();
        let samples: Vec<_> = (0..FRAMES).map(|_| timed(|| app.draw().unwrap())).collect();
        report(&format!("leakhound {name}: frame"), samples);
    }
    // A new sample each frame: apply + re-sort 100,000 tasks + draw (the worst case; live
    // data arrives once a second).
    key(&mut app, 't');
    let samples: Vec<_> = (1..=20)
        .map(|seq| {
            let u = update(seq); // built outside the timing, one at a time
            timed(|| {
                app.handle(AppEvent::Feed(FeedEvent::Update(u)));
                app.draw().unwrap();
            })
        })
        .collect();
    report("leakhound tasks: new sample + sort + frame", samples);
    std::thread::sleep(Duration::from_millis(300)); // let the deferred frees finish
    let held = LIVE.load(Ordering::Relaxed) - base_live;
    let peak_app = PEAK.load(Ordering::Relaxed) - base_live;

    let rss_app = rss_mb();
    // The naive way, same data, same terminal: a Row for every task, every frame.
    let snapshot = fixture::large_snapshot(TASKS, SOCKETS);
    let tasks = snapshot.tasks();
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    let samples = (0..20)
        .map(|_| {
            timed(|| {
                terminal
                    .draw(|f| {
                        let rows = tasks.iter().map(|t| {
                            Row::new(vec![
                                t.id.clone(),
                                t.name.clone(),
                                format!("{:?}", t.state),
                                t.age_ms.to_string(),
                                t.since_progress_ms.to_string(),
                                t.polls.unwrap_or(0).to_string(),
                                location(t).to_string(),
                            ])
                        });
                        let widths = [Constraint::Length(9); 6]
                            .into_iter()
                            .chain([Constraint::Fill(1)]);
                        f.render_widget(
                            Table::new(rows, widths).block(Block::bordered()),
                            f.area(),
                        );
                    })
                    .unwrap();
            })
        })
        .collect::<Vec<_>>();
    let naive = report("naive: a Row per task per frame", samples);
    drop(snapshot);

    key(&mut app, 't');
    let ours = report(
        "leakhound tasks: frame (same data)",
        (0..FRAMES).map(|_| timed(|| app.draw().unwrap())).collect(),
    );
    println!(
        "ratio naive/leakhound (tasks frame, CPU): {:.0}x",
        naive.mean.as_secs_f64() / ours.mean.as_secs_f64().max(1e-9)
    );
    println!(
        "memory: one 100k-task snapshot {:.1} MB; dashboard holds {:.1} MB live, heap peak {:.1} MB (incl. the next sample being built); RSS {:.1} MB (was {:.1} MB at start)",
        mb(snapshot_bytes),
        mb(held),
        mb(peak_app),
        rss_app,
        base_rss
    );
}
