//! What the Findings view keeps of its own: whether the selected finding's evidence is open,
//! and how far it is scrolled.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FindingsPane {
    /// The selected finding's evidence is open (enter); esc closes it.
    pub detail: bool,
    /// Lines scrolled down in the open evidence.
    pub scroll: u16,
}

impl FindingsPane {
    /// Opens the evidence at its top.
    pub fn open(&mut self) {
        self.detail = true;
        self.scroll = 0;
    }

    /// Scrolls the open evidence by `delta` lines.
    pub fn scroll_by(&mut self, delta: isize) {
        self.scroll = (self.scroll as isize + delta).clamp(0, u16::MAX as isize) as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_top_and_never_scrolls_above_it() {
        let mut pane = FindingsPane::default();
        pane.scroll_by(5);
        pane.open();
        assert_eq!((pane.detail, pane.scroll), (true, 0));
        pane.scroll_by(3);
        pane.scroll_by(-10);
        assert_eq!(pane.scroll, 0);
        pane.scroll_by(7);
        assert_eq!(pane.scroll, 7);
    }
}
