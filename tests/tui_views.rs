//! The dashboard drawn into ratatui's TestBackend from fixed data: every view, then the real
//! App driven by keys, a snapshot after each step. Review changes with `cargo insta review`.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use leakhound::tui::App;
use leakhound::tui::event::{AppEvent, Control, FeedEvent, LogLine, Stream};
use leakhound::tui::fixture;
use leakhound::tui::state::{State, ViewKind};
use ratatui::{Terminal, backend::TestBackend, style::Color};
use std::sync::mpsc;

fn app(width: u16, height: u16) -> App<TestBackend> {
    let terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut app = App::new(terminal, State::new(true)).with_clock(fixture::now);
    // Seven samples: enough for the trend and CPU% columns.
    for seq in 0..7 {
        app.handle(AppEvent::Feed(FeedEvent::Update(fixture::update(seq))));
    }
    app
}

fn press(app: &mut App<TestBackend>, code: KeyCode) -> bool {
    app.handle(AppEvent::Input(Event::Key(KeyEvent::new(
        code,
        KeyModifiers::NONE,
    ))))
}

fn typed(app: &mut App<TestBackend>, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

fn screen(app: &mut App<TestBackend>) -> String {
    app.draw().unwrap();
    app.terminal.backend().to_string()
}

#[test]
fn every_view_from_fixed_data() {
    for view in ViewKind::ALL {
        let mut app = app(100, 30);
        press(&mut app, KeyCode::Char(view.letter()));
        assert_eq!(app.state.view, view);
        let name = format!("view_{}", view.title().to_lowercase().replace(" & ", "_"));
        insta::assert_snapshot!(name, screen(&mut app));
    }
}

#[test]
fn every_view_and_help_fit_80x24() {
    for view in ViewKind::ALL {
        let mut app = app(80, 24);
        press(&mut app, KeyCode::Char(view.letter()));
        let name = format!("small_{}", view.title().to_lowercase().replace(" & ", "_"));
        insta::assert_snapshot!(name, screen(&mut app));
    }
    let mut app = app(80, 24);
    press(&mut app, KeyCode::Char('?'));
    let text = screen(&mut app);
    assert!(
        text.contains("q / ctrl-c"),
        "the whole key table fits:\n{text}"
    );
    insta::assert_snapshot!("small_help", text);
}

#[test]
fn overview_fits_80x24() {
    let mut app = app(80, 24);
    let text = screen(&mut app);
    insta::assert_snapshot!("overview_80x24", text);
    // The worst finding is listed and the fd gauge shows the limit.
    assert!(text.contains("fd-exhaustion"), "{text}");
    assert!(text.contains("/ 256"), "{text}");
}

#[test]
fn resize_redraws_to_the_new_size() {
    let mut app = app(80, 24);
    screen(&mut app);
    app.terminal.backend_mut().resize(120, 40);
    app.terminal.autoresize().unwrap();
    app.handle(AppEvent::Input(Event::Resize(120, 40)));
    insta::assert_snapshot!("overview_120x40", screen(&mut app));
}

#[test]
fn colour_marks_zombies_and_no_color_does_not() {
    for color in [true, false] {
        let terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
        let mut app = App::new(terminal, State::new(color)).with_clock(fixture::now);
        app.handle(AppEvent::Feed(FeedEvent::Update(fixture::update(0))));
        press(&mut app, KeyCode::Char('p'));
        app.draw().unwrap();
        let buf = app.terminal.backend().buffer().clone();
        let (x, y) = find(&buf, "ZOMBIE").expect("zombie row shown");
        let fg = buf[(x, y)].fg;
        if color {
            assert_eq!(fg, Color::Red);
        } else {
            assert_eq!(fg, Color::Reset, "NO_COLOR: no colours at all");
        }
    }
}

fn find(buf: &ratatui::buffer::Buffer, needle: &str) -> Option<(u16, u16)> {
    for y in 0..buf.area.height {
        let row: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        if let Some(col) = row.find(needle) {
            return Some((row[..col].chars().count() as u16, y));
        }
    }
    None
}

#[test]
fn tasks_sort_invert_filter_tree_detail() {
    let mut app = app(100, 24);
    press(&mut app, KeyCode::Char('2'));
    insta::assert_snapshot!("tasks_1_default_sort_idle_longest_first", screen(&mut app));
    press(&mut app, KeyCode::Char('h')); // -> AGE
    press(&mut app, KeyCode::Char('h')); // -> STATE
    press(&mut app, KeyCode::Char('h')); // -> NAME
    press(&mut app, KeyCode::Char('i')); // ascending
    insta::assert_snapshot!("tasks_2_sorted_by_name_ascending", screen(&mut app));
    press(&mut app, KeyCode::Char('/'));
    typed(&mut app, "fetch");
    insta::assert_snapshot!("tasks_3_filter_typing", screen(&mut app));
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('j'));
    insta::assert_snapshot!("tasks_4_filter_kept_second_row", screen(&mut app));
    press(&mut app, KeyCode::Esc); // clears the filter
    press(&mut app, KeyCode::Char('T'));
    insta::assert_snapshot!("tasks_5_tree", screen(&mut app));
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("tasks_6_detail", screen(&mut app));
}

#[test]
fn drill_into_a_child_and_back() {
    let (tx, rx) = mpsc::channel();
    let mut app = app(100, 20).with_control(tx);
    press(&mut app, KeyCode::Char('p'));
    press(&mut app, KeyCode::Char('j'));
    insta::assert_snapshot!("processes_1_child_selected", screen(&mut app));
    press(&mut app, KeyCode::Enter);
    assert_eq!(rx.try_recv(), Ok(Control::Retarget(4301)));
    // The feed answers with the child's snapshot.
    let mut child = fixture::update(7);
    child.snapshot.pid = 4301;
    child.snapshot.process.as_mut().unwrap().pid = 4301;
    child.snapshot.process.as_mut().unwrap().cmd = "python3 -m worker --id 1".into();
    child.snapshot.children.retain(|c| c.ppid == 4301);
    child.source = "pid 4301 (procfs+probe python)".into();
    app.handle(AppEvent::Feed(FeedEvent::Update(child)));
    insta::assert_snapshot!("processes_2_drilled_into_4301", screen(&mut app));
    press(&mut app, KeyCode::Esc);
    assert_eq!(rx.try_recv(), Ok(Control::Retarget(4242)));
    app.handle(AppEvent::Feed(FeedEvent::Update(fixture::update(8))));
    // a zombie cannot be drilled into (rows: root, 4301, its child 4310, zombie 4302)
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Enter);
    assert!(rx.try_recv().is_err());
    assert!(screen(&mut app).contains("a zombie has nothing to show"));
}

#[test]
fn help_and_pause() {
    let (tx, rx) = mpsc::channel();
    let mut app = app(100, 24).with_control(tx);
    press(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help_overlay", screen(&mut app));
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(rx.try_recv(), Ok(Control::Pause(true)));
    let before = screen(&mut app);
    assert!(before.contains("PAUSED"));
    // New data while paused does not change the screen…
    let mut later = fixture::update(9);
    later.snapshot.threads.truncate(1);
    app.handle(AppEvent::Feed(FeedEvent::Update(later)));
    assert_eq!(screen(&mut app), before);
    // …until resumed.
    press(&mut app, KeyCode::Char(' '));
    let after = screen(&mut app);
    assert!(!after.contains("PAUSED"));
    assert!(after.contains("threads 1"), "{after}");
}

#[test]
fn log_lines_lead_to_tasks_and_back() {
    let mut app = app(100, 20);
    app.state.logs.capturing = true;
    for (stream, text) in [
        (Stream::Stdout, "INFO tid=4242 task=Task-1 starting"),
        (
            Stream::Stderr,
            "WARN tid=4242 task=Task-3 waiting for config",
        ),
        (Stream::Stdout, "INFO tid=4250 polling"),
        (Stream::Stdout, "INFO tid=4242 task=Task-4 fetched 3 rows"),
    ] {
        app.handle(AppEvent::Feed(FeedEvent::Log(LogLine::parse(stream, text))));
    }
    press(&mut app, KeyCode::Char('g'));
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Char('j'));
    insta::assert_snapshot!("logs_1_all_lines", screen(&mut app));
    press(&mut app, KeyCode::Enter); // line names Task-3
    assert_eq!(app.state.view, ViewKind::Tasks);
    insta::assert_snapshot!("logs_2_jumped_to_task_3", screen(&mut app));
    press(&mut app, KeyCode::Char('g')); // Task-3's lines
    insta::assert_snapshot!("logs_3_lines_of_task_3", screen(&mut app));
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Enter); // tid=4250, no task
    assert_eq!(app.state.view, ViewKind::Threads);
    assert_eq!(app.state.selected(ViewKind::Threads), 3);
}

#[test]
fn findings_detail_scrolls() {
    let mut app = app(100, 24);
    press(&mut app, KeyCode::Char('f'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("findings_1_detail", screen(&mut app));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    insta::assert_snapshot!("findings_2_scrolled", screen(&mut app));
    assert!(press(&mut app, KeyCode::Esc));
    assert!(!press(&mut app, KeyCode::Char('q')), "q quits");
}

#[test]
fn quits_on_ctrl_c() {
    let mut app = app(80, 24);
    let quit = app.handle(AppEvent::Input(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    ))));
    assert!(!quit);
}

#[test]
fn feed_errors_show_in_the_status_line() {
    let mut app = app(100, 10);
    app.handle(AppEvent::Feed(FeedEvent::Gone(
        "target exited: pid 4242".into(),
    )));
    let text = screen(&mut app);
    assert!(text.contains("target exited: pid 4242"), "{text}");
}

#[test]
fn quiet_findings_stay_listed() {
    let mut app = app(100, 24);
    let mut update = fixture::update(7);
    // zombie-child resolved: the child was reaped
    update.resolved = update
        .findings
        .iter()
        .filter(|f| f.rule == "zombie-child")
        .cloned()
        .collect();
    update.findings.retain(|f| f.rule != "zombie-child");
    app.handle(AppEvent::Feed(FeedEvent::Update(update)));
    press(&mut app, KeyCode::Char('f'));
    press(&mut app, KeyCode::End);
    let text = screen(&mut app);
    assert!(text.contains("7 firing, 1 quiet now"), "{text}");
    assert!(text.contains("fired earlier, quiet now"), "{text}");
    insta::assert_snapshot!("findings_3_quiet_one", text);
}
