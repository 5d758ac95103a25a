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
    /// The selected task's details shown under the table (enter).
    pub detail: bool,
    order: Vec<u32>,
    depth: Vec<u8>,
    dirty: bool,
    /// How many leading rows of `order` are in their final place; the rest is only
    /// partitioned (everything after the prefix sorts after it). Sorting lazily: a screen
    /// needs its first rows, not 100,000 in order.
    sorted: usize,
    /// For numeric columns: (key, index) pairs sorted in place of `order`. Comparing keys
    /// held side by side is cache-friendly; chasing 100,000 task pointers is not.
    keyed: Vec<(u64, u32)>,
}

impl Default for TaskTable {
    fn default() -> Self {
        TaskTable {
            filter: String::new(),
            sort: TaskColumn::SinceProgress,
            descending: true,
            tree: false,
            detail: false,
            order: Vec::new(),
            depth: Vec::new(),
            dirty: true,
            sorted: 0,
            keyed: Vec::new(),
        }
    }
}

/// Frames inside the runtime's own library (asyncio, std, dependencies): the program's own
/// frame further out says more about where a task waits.
fn is_library_frame(frame: &str) -> bool {
    [
        "/lib/python3",
        "/asyncio/",
        "/rustc/",
        "/.cargo/registry/",
        "/site-packages/",
    ]
    .iter()
    .any(|p| frame.contains(p))
        || frame.starts_with("asyncio/")
}

/// Where a task is suspended: the innermost await point in the program's own code (else the
/// innermost one), else where it was spawned.
pub fn location(task: &Task) -> &str {
    task.await_chain
        .iter()
        .rev()
        .find(|f| !is_library_frame(f))
        .or(task.await_chain.last())
        .map(String::as_str)
        .or(task.spawn_location.as_deref())
        .unwrap_or("")
}

/// `/a/b/c/app.py:12 in f` → `c/app.py:12 in f`: the end of a path is what identifies it.
pub fn short_frame(frame: &str) -> String {
    let path_end = frame.find(':').unwrap_or(frame.len());
    let path = &frame[..path_end];
    let parts: Vec<&str> = path.rsplitn(3, '/').collect();
    if parts.len() < 3 {
        return frame.to_string();
    }
    format!("{}/{}{}", parts[1], parts[0], &frame[path_end..])
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

    /// Indices into `tasks`, filtered and fully ordered.
    pub fn order(&mut self, tasks: &[Task]) -> &[u32] {
        self.order_upto(tasks, usize::MAX)
    }

    /// Indices into `tasks`, filtered; the first `need` rows are in their final order (the
    /// rest is in the list but not yet sorted). Recomputed only when stale.
    pub fn order_upto(&mut self, tasks: &[Task], need: usize) -> &[u32] {
        if self.dirty {
            self.refilter(tasks);
            self.dirty = false;
        }
        let need = need.min(self.order.len());
        if need > self.sorted {
            self.sort_prefix(tasks, need);
        }
        &self.order
    }

    /// How many tasks pass the filter.
    pub fn len(&mut self, tasks: &[Task]) -> usize {
        self.order_upto(tasks, 0).len()
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

    fn refilter(&mut self, tasks: &[Task]) {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        self.depth.clear();
        self.sorted = 0;
        order.extend(
            tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| self.matches(t))
                .map(|(i, _)| i as u32),
        );
        self.order = order;
        self.keyed.clear();
        if self.tree {
            let cmp = comparator(self.sort, self.descending, tasks);
            self.tree_order(tasks, cmp);
            self.sorted = self.order.len();
        } else if let Some(key) = numeric_key(self.sort) {
            let flip = self.descending;
            self.keyed.extend(self.order.iter().map(|&i| {
                let k = key(&tasks[i as usize]);
                (if flip { u64::MAX - k } else { k }, i)
            }));
        }
    }

    /// Puts rows `sorted..need` in their final place: select the `need`-th row (linear),
    /// then sort only the rows before it.
    fn sort_prefix(&mut self, tasks: &[Task], need: usize) {
        if !self.keyed.is_empty() {
            let by_key = |a: &(u64, u32), b: &(u64, u32)| {
                a.0.cmp(&b.0)
                    .then_with(|| id_order(&tasks[a.1 as usize].id, &tasks[b.1 as usize].id))
            };
            let start = self.sorted;
            let rest = &mut self.keyed[start..];
            let k = need - start;
            if k < rest.len() {
                rest.select_nth_unstable_by(k - 1, by_key);
            }
            rest[..k].sort_unstable_by(by_key);
            for (slot, (_, i)) in self.order[start..].iter_mut().zip(&self.keyed[start..]) {
                *slot = *i;
            }
            self.sorted = need;
            return;
        }
        let cmp = comparator(self.sort, self.descending, tasks);
        let start = self.sorted;
        let rest = &mut self.order[start..];
        let k = need - start;
        if k < rest.len() {
            rest.select_nth_unstable_by(k - 1, &cmp);
        }
        rest[..k].sort_unstable_by(&cmp);
        self.sorted = need;
    }

    /// Depth-first by parent; siblings in sort order; a task whose parent is not in the
    /// (filtered) list is a root.
    fn tree_order(&mut self, tasks: &[Task], cmp: impl Fn(&u32, &u32) -> Ordering) {
        let cmp = &cmp;
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
        roots.sort_unstable_by(cmp);
        let mut out = Vec::with_capacity(self.order.len());
        let mut depth = Vec::with_capacity(self.order.len());
        let mut stack: Vec<(u32, u8)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
        while let Some((i, d)) = stack.pop() {
            out.push(i);
            depth.push(d);
            if let Some(mut kids) = children.remove(&i) {
                kids.sort_unstable_by(cmp);
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

/// The column as a number, for the columns that are numbers.
fn numeric_key(column: TaskColumn) -> Option<fn(&Task) -> u64> {
    match column {
        TaskColumn::Age => Some(|t| t.age_ms),
        TaskColumn::SinceProgress => Some(|t| t.since_progress_ms),
        // None (unknown) before every count, as Option orders it.
        TaskColumn::Polls => Some(|t| t.polls.map_or(0, |p| p.saturating_add(1))),
        _ => None,
    }
}

/// The order of two task indices under a sort column and direction; ties by id.
fn comparator(
    sort: TaskColumn,
    descending: bool,
    tasks: &[Task],
) -> impl Fn(&u32, &u32) -> Ordering + use<'_> {
    move |a: &u32, b: &u32| -> Ordering {
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
    fn lazy_prefix_matches_a_full_sort() {
        let tasks: Vec<Task> = (0..500u64)
            .map(|i| task(&i.to_string(), (i * 7919) % 97, None))
            .collect();
        // The oracle: a plain full sort with the comparator.
        let oracle = |t: &TaskTable| {
            let mut v: Vec<u32> = (0..tasks.len() as u32).collect();
            v.sort_by(comparator(t.sort, t.descending, &tasks));
            v
        };
        let mut full = TaskTable::default();
        let expected = oracle(&full);
        assert_eq!(full.order(&tasks), &expected[..]);
        let mut lazy = TaskTable::default();
        assert_eq!(lazy.len(&tasks), 500);
        assert_eq!(&lazy.order_upto(&tasks, 10)[..10], &expected[..10]);
        assert_eq!(&lazy.order_upto(&tasks, 40)[..40], &expected[..40]);
        assert_eq!(lazy.order(&tasks), &expected[..]);
        // the same through the plain comparator (a string column) and inverted
        for step in [1, -3] {
            full.next_column(step);
            lazy.next_column(step);
            full.invert();
            lazy.invert();
            let expected = oracle(&full);
            assert_eq!(&lazy.order_upto(&tasks, 25)[..25], &expected[..25]);
            assert_eq!(lazy.order(&tasks), &expected[..]);
        }
    }

    #[test]
    fn location_prefers_the_programs_own_frame() {
        let mut t = task("1", 0, None);
        t.await_chain = vec![
            "/srv/app/main.py:33 in wait_for_config".into(),
            "/usr/lib/python3.11/asyncio/locks.py:213 in wait".into(),
        ];
        assert_eq!(location(&t), "/srv/app/main.py:33 in wait_for_config");
        assert_eq!(
            short_frame(location(&t)),
            "app/main.py:33 in wait_for_config"
        );
        assert_eq!(short_frame("app.py:3 in f"), "app.py:3 in f");
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
