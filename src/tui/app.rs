//! The dashboard: one loop over one channel that carries both key presses and feed events.
//! The main thread alone owns `State` and draws; a burst of events is drained and applied
//! before one redraw (coalescing), and an idle dashboard redraws once a second so ages tick.
//! Generic over the ratatui backend, so tests draw the real app into `TestBackend`.

use crate::tui::event::{AppEvent, Control, FeedEvent};
use crate::tui::input;
use crate::tui::state::{Effect, State};
use crate::tui::view;
use crossterm::event::{Event, KeyEvent};
use ratatui::{Terminal, backend::Backend};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

pub struct App<B: Backend> {
    pub terminal: Terminal<B>,
    pub state: State,
    control: Option<Sender<Control>>,
    clock: fn() -> u64,
    dirty: bool,
}

impl<B: Backend> App<B>
where
    B::Error: Send + Sync + 'static,
{
    pub fn new(terminal: Terminal<B>, state: State) -> Self {
        App {
            terminal,
            state,
            control: None,
            clock: crate::source::now_ms,
            dirty: true,
        }
    }

    /// Where drill-in, pause and step requests go.
    pub fn with_control(mut self, control: Sender<Control>) -> Self {
        self.control = Some(control);
        self
    }

    /// The clock ages are measured with (tests pin it).
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    /// Applies one event without drawing; false when the app should quit.
    pub fn handle(&mut self, event: AppEvent) -> bool {
        self.state.now_ms = (self.clock)();
        self.dirty = true;
        match event {
            AppEvent::Input(Event::Key(key)) => return self.key(key),
            AppEvent::Input(Event::Resize(..)) => {}
            AppEvent::Input(_) => self.dirty = false,
            AppEvent::Feed(FeedEvent::Update(update)) => self.state.apply_update(update),
            AppEvent::Feed(FeedEvent::Error(e)) => self.state.set_status(format!("error: {e}")),
            AppEvent::Feed(FeedEvent::Gone(e)) => self.state.set_status(e),
            AppEvent::Feed(FeedEvent::Log(line)) => self.state.push_log(line),
        }
        true
    }

    /// One key press; false when it asks to quit.
    pub fn key(&mut self, key: KeyEvent) -> bool {
        let Some(intent) = input::intent(key, &self.state) else {
            return true;
        };
        match self.state.apply(intent, &view::Registry) {
            Some(Effect::Quit) => false,
            Some(Effect::Control(c)) => {
                if let Some(tx) = &self.control {
                    let _ = tx.send(c);
                }
                true
            }
            None => true,
        }
    }

    pub fn draw(&mut self) -> anyhow::Result<()> {
        self.state.now_ms = (self.clock)();
        let state = &mut self.state;
        self.terminal.draw(|frame| view::render(frame, state))?;
        self.dirty = false;
        Ok(())
    }

    /// Runs until quit or until every sender hung up.
    pub fn run(&mut self, events: Receiver<AppEvent>) -> anyhow::Result<()> {
        self.draw()?;
        let mut last_draw = Instant::now();
        loop {
            let timeout = Duration::from_secs(1).saturating_sub(last_draw.elapsed());
            match events.recv_timeout(timeout) {
                Ok(event) => {
                    if !self.handle(event) {
                        return Ok(());
                    }
                    // Coalesce: apply everything already queued, then draw once.
                    while let Ok(event) = events.try_recv() {
                        if !self.handle(event) {
                            return Ok(());
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.dirty = true,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if self.dirty {
                self.draw()?;
                last_draw = Instant::now();
            }
        }
    }
}

/// Reads terminal events on a thread until `stop` is set or the UI hangs up.
pub fn spawn_input_thread(tx: SyncSender<AppEvent>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("leakhound-input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match crossterm::event::poll(Duration::from_millis(100)) {
                    Ok(true) => match crossterm::event::read() {
                        Ok(event) => {
                            if tx.send(AppEvent::Input(event)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
        })?;
    Ok(())
}
