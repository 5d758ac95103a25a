//! A selection in a list plus the first row shown: what lets a view draw only the visible
//! rows of a 100,000-row list.

use std::ops::Range;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub selected: usize,
    pub offset: usize,
}

impl Cursor {
    /// Moves by `delta` rows, clamped to `0..len`.
    pub fn move_by(&mut self, delta: isize, len: usize) {
        if len == 0 {
            self.selected = 0;
            return;
        }
        let target = self.selected as isize + delta;
        self.selected = target.clamp(0, len as isize - 1) as usize;
    }

    pub fn top(&mut self) {
        self.selected = 0;
    }

    pub fn bottom(&mut self, len: usize) {
        self.selected = len.saturating_sub(1);
    }

    pub fn clamp(&mut self, len: usize) {
        if self.selected >= len {
            self.selected = len.saturating_sub(1);
        }
    }

    /// The rows to draw in a window `height` rows tall, scrolling just enough to keep the
    /// selection in view.
    pub fn window(&mut self, height: usize, len: usize) -> Range<usize> {
        self.clamp(len);
        if height == 0 || len == 0 {
            return 0..0;
        }
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        // Keep the window full after the list shrank.
        self.offset = self.offset.min(len.saturating_sub(height));
        self.offset..(self.offset + height).min(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_selection() {
        let mut c = Cursor::default();
        assert_eq!(c.window(5, 100), 0..5);
        c.move_by(7, 100);
        assert_eq!(c.window(5, 100), 3..8);
        c.move_by(-6, 100);
        assert_eq!(c.window(5, 100), 1..6);
        c.bottom(100);
        assert_eq!(c.window(5, 100), 95..100);
        // the list shrank under the selection
        assert_eq!(c.window(5, 3), 0..3);
        assert_eq!(c.selected, 2);
        c.move_by(-10, 3);
        assert_eq!(c.selected, 0);
    }
}
