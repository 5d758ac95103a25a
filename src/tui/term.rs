//! The real terminal: raw mode and the alternate screen, entered by a guard that leaves
//! them when dropped, and a panic hook that leaves them before the panic message prints, so
//! a crash never strands the user's shell in raw mode.

use crossterm::{
    cursor, execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};
use std::io::{self, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many times the terminal was put back (observable by tests of the panic hook).
static RESTORES: AtomicUsize = AtomicUsize::new(0);

pub type RealTerminal = Terminal<CrosstermBackend<Stdout>>;

/// Leaves raw mode and the alternate screen on drop.
pub struct TerminalGuard {
    _private: (),
}

/// Puts the terminal back as it was; safe to call more than once.
pub fn restore() {
    RESTORES.fetch_add(1, Ordering::SeqCst);
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

impl TerminalGuard {
    pub fn enter() -> io::Result<(TerminalGuard, RealTerminal)> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard { _private: () };
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        Ok((guard, terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Colours unless NO_COLOR is set to something non-empty (no-color.org).
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_restores_the_terminal_before_unwinding() {
        install_panic_hook();
        let before = RESTORES.load(Ordering::SeqCst);
        let result = std::panic::catch_unwind(|| panic!("boom inside the dashboard"));
        assert!(result.is_err());
        assert!(
            RESTORES.load(Ordering::SeqCst) > before,
            "the hook called restore()"
        );
    }
}
