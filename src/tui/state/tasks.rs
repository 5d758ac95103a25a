//! The Tasks view's ordering: filter, sort column, direction and the parent tree, computed
//! lazily (only when the data, filter or sort changed and the view is drawn) as a list of
//! indices into the snapshot's task list, so 100,000 tasks cost one sort per new sample and
//! nothing per frame.

use crate::model::{Task, TaskState};
use std::cmp::Ordering;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskColumn {
    Id,
    Name,
    State,
    Age,
    SinceProgress,
    Polls,
    Location,
}

impl TaskColumn {
    pub const ALL: [TaskColumn; 7] = [
        TaskColumn::Id,
        TaskColumn::Name,
        TaskColumn::State,
        TaskColumn::Age,
        TaskColumn::SinceProgress,
        TaskColumn::Polls,
        TaskColumn::Location,
    ];

    pub fn title(self) -> &'static str {
        match self {
            TaskColumn::Id => "ID",
            TaskColumn::Name => "NAME",
            TaskColumn::State => "STATE",
            TaskColumn::Age => "AGE",
            TaskColumn::SinceProgress => "IDLE FOR",
            TaskColumn::Polls => "POLLS",
            TaskColumn::Location => "AWAITING / LOCATION",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct TaskTable {
    pub filter: String,
    pub sort: TaskColumn,
    /// Largest first when true (the default: the task idle longest comes first).
    pub descending: bool,
    /// Order as the parent tree instead of the sort column.
    pub tree: bool,
    order: Vec<u32>,
    depth: Vec<u8>,
    dirty: bool,
}

impl Default for TaskTable {
    fn default() -> Self {
        TaskTable {
            filter: String::new(),
            sort: TaskColumn::SinceProgress,
            descending: true,
            tree: false,
            order: Vec::new(),
            depth: Vec::new(),
            dirty: true,
        }
    }
}

/// Where a task is suspended (innermost await point), else where it was spawned.
pub fn location(task: &Task) -> &str {
    task.await_chain
        .last()
        .map(String::as_str)
        .or(task.spawn_location.as_deref())
        .unwrap_or("")
}

pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Running => "running",
        TaskState::Scheduled => "scheduled",
        TaskState::Idle => "idle",
        TaskState::Done => "done",
    }
}

/// `Task-9` before `Task-10`, `9` before `10`.
fn id_order(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl TaskTable {
    pub fn invalidate(&mut self) {
        self.dirty = true;
    }

    pub fn set_filter(&mut self, filter: String) {
        self.filter = filter;
        self.dirty = true;
    }

    pub fn next_column(&mut self, step: isize) {
        let n = TaskColumn::ALL.len() as isize;
        let i = (self.sort.index() as isize + step).rem_euclid(n);
        self.sort = TaskColumn::ALL[i as usize];
        self.tree = false;
        self.dirty = true;
    }

    pub fn invert(&mut self) {
        self.descending = !self.descending;
        self.dirty = true;
    }

    pub fn toggle_tree(&mut self) {
        self.tree = !self.tree;
        self.dirty = true;
    }

    /// Indices into `tasks`, filtered and ordered; recomputed only when stale.
    pub fn order(&mut self, tasks: &[Task]) -> &[u32] {
        if self.dirty {
            self.recompute(tasks);
            self.dirty = false;
        }
        &self.order
    }

    /// The order as last computed (call [`order`](Self::order) first to refresh it).
    pub fn cached_order(&self) -> &[u32] {
        &self.order
    }

    /// Tree depth of the row at `row` (0 outside tree mode).
    pub fn depth(&self, row: usize) -> u8 {
        self.depth.get(row).copied().unwrap_or(0)
    }

    fn matches(&self, task: &Task) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        [
            task.id.as_str(),
            task.name.as_str(),
            task.kind.as_str(),
            location(task),
            state_name(task.state),
        ]
        .iter()
        .any(|field| field.to_lowercase().contains(&needle))
    }

    fn recompute(&mut self, tasks: &[Task]) {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        self.depth.clear();
        order.extend(
            tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| self.matches(t))
                .map(|(i, _)| i as u32),
        );
        let (sort, descending) = (self.sort, self.descending);
        let cmp = move |a: &u32, b: &u32| -> Ordering {
            let (x, y) = (&tasks[*a as usize], &tasks[*b as usize]);
            let ord = match sort {
                TaskColumn::Id => id_order(&x.id, &y.id),
                TaskColumn::Name => x.name.cmp(&y.name),
                TaskColumn::State => state_name(x.state).cmp(state_name(y.state)),
                TaskColumn::Age => x.age_ms.cmp(&y.age_ms),
                TaskColumn::SinceProgress => x.since_progress_ms.cmp(&y.since_progress_ms),
                TaskColumn::Polls => x.polls.cmp(&y.polls),
                TaskColumn::Location => location(x).cmp(location(y)),
            };
            let ord = if descending { ord.reverse() } else { ord };
            ord.then_with(|| id_order(&x.id, &y.id))
        };
        if self.tree {
            self.order = order;
            self.tree_order(tasks, cmp);
        } else {
            order.sort_unstable_by(cmp);
            self.order = order;
        }
    }

    /// Depth-first by parent; siblings in sort order; a task whose parent is not in the
    /// (filtered) list is a root.
    fn tree_order(&mut self, tasks: &[Task], cmp: impl Fn(&u32, &u32) -> Ordering) {
        let present: HashMap<&str, u32> = self
            .order
            .iter()
            .map(|i| (tasks[*i as usize].id.as_str(), *i))
            .collect();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut roots = Vec::new();
        for &i in &self.order {
            match tasks[i as usize]
                .parent
                .as_deref()
                .and_then(|p| present.get(p))
            {
                Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
                _ => roots.push(i),
            }
        }
        roots.sort_unstable_by(&cmp);
        let mut out = Vec::with_capacity(self.order.len());
        let mut depth = Vec::with_capacity(self.order.len());
        let mut stack: Vec<(u32, u8)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
        while let Some((i, d)) = stack.pop() {
            out.push(i);
            depth.push(d);
            if let Some(mut kids) = children.remove(&i) {
                kids.sort_unstable_by(&cmp);
                stack.extend(kids.into_iter().rev().map(|k| (k, d.saturating_add(1))));
            }
        }
        // A parent cycle leaves tasks unvisited: list them as roots rather than lose them.
        for (_, kids) in children {
            for k in kids {
                out.push(k);
                depth.push(0);
            }
        }
        self.order = out;
        self.depth = depth;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, since: u64, parent: Option<&str>) -> Task {
        Task {
            id: id.into(),
            name: format!("n{id}"),
            since_progress_ms: since,
            parent: parent.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn sorts_filters_and_inverts() {
        let tasks = vec![task("1", 5, None), task("2", 50, None), task("10", 7, None)];
        let mut t = TaskTable::default();
        assert_eq!(t.order(&tasks), &[1, 2, 0]);
        t.invert();
        assert_eq!(t.order(&tasks), &[0, 2, 1]);
        t.next_column(-4); // SinceProgress -> Id
        assert_eq!(t.sort, TaskColumn::Id);
        assert_eq!(t.order(&tasks), &[0, 1, 2]); // ascending, 10 after 2
        t.set_filter("n1".into());
        assert_eq!(t.order(&tasks), &[0, 2]);
    }

    #[test]
    fn tree_puts_children_under_parents() {
        let tasks = vec![
            task("1", 1, None),
            task("2", 9, Some("1")),
            task("3", 3, None),
            task("4", 4, Some("2")),
        ];
        let mut t = TaskTable::default();
        t.toggle_tree();
        assert_eq!(t.order(&tasks), &[2, 0, 1, 3]);
        assert_eq!((0..4).map(|r| t.depth(r)).collect::<Vec<_>>(), [0, 0, 1, 2]);
    }
}
