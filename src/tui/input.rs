//! Keys → intents. The mapping is a pure function of the key and the input mode, so tests
//! feed keys and check what the app does with them.

use crate::tui::state::{InputMode, Intent, State, ViewKind};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

pub fn intent(key: KeyEvent, state: &State) -> Option<Intent> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(Intent::Quit);
    }
    if let InputMode::Filter(_) = state.input {
        return match key.code {
            KeyCode::Enter => Some(Intent::FilterDone),
            KeyCode::Esc => Some(Intent::FilterCancel),
            KeyCode::Backspace => Some(Intent::FilterEdit(None)),
            KeyCode::Char(c) if !ctrl => Some(Intent::FilterEdit(Some(c))),
            _ => None,
        };
    }
    let from_task_or_thread = matches!(state.view, ViewKind::Tasks | ViewKind::Threads);
    Some(match key.code {
        KeyCode::Char('q') => Intent::Quit,
        KeyCode::Char('?') => Intent::Help,
        KeyCode::Char(' ') => Intent::Pause,
        KeyCode::Char('/') => Intent::StartFilter,
        KeyCode::Char('d') if ctrl => Intent::Move(10),
        KeyCode::Char('u') if ctrl => Intent::Move(-10),
        KeyCode::Char('j') | KeyCode::Down => Intent::Move(1),
        KeyCode::Char('k') | KeyCode::Up => Intent::Move(-1),
        KeyCode::PageDown => Intent::Move(10),
        KeyCode::PageUp => Intent::Move(-10),
        KeyCode::Home => Intent::Top,
        KeyCode::End => Intent::Bottom,
        KeyCode::Char('h') | KeyCode::Left => Intent::Column(-1),
        KeyCode::Char('l') | KeyCode::Right => Intent::Column(1),
        KeyCode::Char('i') => Intent::Invert,
        KeyCode::Char('T') => Intent::ToggleTree,
        KeyCode::Tab => Intent::NextView(1),
        KeyCode::BackTab => Intent::NextView(-1),
        KeyCode::Enter => Intent::Enter,
        KeyCode::Esc => Intent::Back,
        KeyCode::Char('.') => Intent::Step(1),
        KeyCode::Char(',') => Intent::Step(-1),
        KeyCode::Char(']') => Intent::Step(10),
        KeyCode::Char('[') => Intent::Step(-10),
        KeyCode::Char('g') if from_task_or_thread => Intent::LogsOfSelection,
        KeyCode::Char(c @ '1'..='9') => Intent::Show(crate::tui::view::numbered(c.to_digit(10)?)?),
        KeyCode::Char(c) => {
            let view = ViewKind::ALL.into_iter().find(|v| v.letter() == c)?;
            Intent::Show(view)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn maps_keys() {
        let mut s = State::default();
        assert_eq!(
            intent(key(KeyCode::Char('3')), &s),
            Some(Intent::Show(ViewKind::Threads))
        );
        assert_eq!(
            intent(key(KeyCode::Char('f')), &s),
            Some(Intent::Show(ViewKind::Findings))
        );
        assert_eq!(
            intent(key(KeyCode::Char('g')), &s),
            Some(Intent::Show(ViewKind::Logs))
        );
        s.view = ViewKind::Tasks;
        assert_eq!(
            intent(key(KeyCode::Char('g')), &s),
            Some(Intent::LogsOfSelection)
        );
        s.input = InputMode::Filter(String::new());
        assert_eq!(
            intent(key(KeyCode::Char('q')), &s),
            Some(Intent::FilterEdit(Some('q')))
        );
        assert_eq!(
            intent(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &s),
            Some(Intent::Quit)
        );
    }
}
