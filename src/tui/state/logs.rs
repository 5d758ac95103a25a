//! The program's captured output (under `leakhound run`), bounded, with the `tid=` and
//! `task=` ids each line carries so a line leads to its thread or task and back.

use crate::tui::event::LogLine;
use std::collections::VecDeque;

/// Which lines the Logs view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFilter {
    Task(String),
    Tid(u32),
}

impl LogFilter {
    pub fn matches(&self, line: &LogLine) -> bool {
        match self {
            LogFilter::Task(id) => line.task.as_deref() == Some(id.as_str()),
            LogFilter::Tid(tid) => line.tid == Some(*tid),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogBuffer {
    lines: VecDeque<LogLine>,
    capacity: usize,
    /// Lines that fell out of the ring.
    pub evicted: u64,
    /// Whether output is being captured at all (only under `run`).
    pub capturing: bool,
    /// What the Logs view shows of it (all lines when `None`).
    pub filter: Option<LogFilter>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            lines: VecDeque::new(),
            capacity: capacity.max(1),
            evicted: 0,
            capturing: false,
            filter: None,
        }
    }

    pub fn push(&mut self, line: LogLine) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
            self.evicted += 1;
        }
        self.lines.push_back(line);
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&LogLine> {
        self.lines.get(i)
    }

    /// Indices of the lines a filter keeps, oldest first.
    pub fn matching(&self, filter: Option<&LogFilter>) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|i| filter.is_none_or(|f| f.matches(&self.lines[*i])))
            .collect()
    }
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer::new(10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::event::Stream;

    #[test]
    fn parses_ids() {
        let l = LogLine::parse(Stream::Stderr, "12:00 INFO tid=4711 task=Task-3 fetching");
        assert_eq!(l.tid, Some(4711));
        assert_eq!(l.task.as_deref(), Some("Task-3"));
        let l = LogLine::parse(Stream::Stdout, "no ids here, tid=abc");
        assert_eq!((l.tid, l.task), (None, None));
    }

    #[test]
    fn bounded_and_filtered() {
        let mut b = LogBuffer::new(3);
        for i in 0..5 {
            b.push(LogLine::parse(Stream::Stdout, &format!("tid={} x", i % 2)));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.evicted, 2);
        assert_eq!(b.matching(Some(&LogFilter::Tid(0))), vec![0, 2]);
    }
}
