//! The data side of the dashboard: a thread that samples the target (or reads a recording),
//! judges each snapshot (`crate::judge`) and hands each `Update` to the UI over the one
//! channel the UI reads. The UI answers with `Control` messages (drill into a child, pause,
//! step). bottom's shape: the collector never touches UI state; the main thread never blocks
//! on I/O.

use crate::config::Config;
use crate::judge::{Judge, Judges};
use crate::model::Snapshot;
use crate::source::replay::Recording;
use crate::source::{Collector, CollectorEvent, SampleOptions, Source, SourceError, Target};
use crate::tui::event::{AppEvent, Control, FeedEvent, ReplayPos, Update};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::time::Duration;

/// How many quiet findings the dashboard lists under the live ones.
const RESOLVED_SHOWN: usize = 50;

/// How a live feed reaches its target; `source::open` in the real app.
pub type Opener = Box<dyn Fn(&Target) -> Result<Box<dyn Source>, SourceError> + Send>;

/// Samples a live target through the shared [`Collector`] thread, judges each snapshot and
/// forwards it to the UI; reopens on a retarget (drill-in).
pub struct LiveFeed {
    pub target: Target,
    /// Already opened (and checked) by the command; opened with `open` when `None`.
    pub source: Option<Box<dyn Source>>,
    pub open: Opener,
    pub interval: Duration,
    pub options: SampleOptions,
    pub config: Config,
}

fn send(tx: &SyncSender<AppEvent>, event: FeedEvent, skipped: &mut u64) -> bool {
    match tx.try_send(AppEvent::Feed(event)) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            *skipped += 1;
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// How often the feed looks for a control message while waiting on the collector.
const POLL: Duration = Duration::from_millis(50);

/// `pid 4242 · procfs+probe(python)`: what is live, for the status line.
pub fn describe(snapshot: &Snapshot, fallback: &str) -> String {
    if snapshot.pid == 0 {
        fallback.to_string()
    } else {
        format!("pid {} · {}", snapshot.pid, snapshot.source)
    }
}

/// What the views show of a service: the root's snapshot with each worker's tasks, loops,
/// pools and threads added, named by the worker's pid (task `4242/Task-7`, thread
/// `[4242] MainThread`), so the Tasks view lists them together and its filter (`/4242/`)
/// shows one worker. A snapshot without workers is shown as it is.
pub fn service_view(mut snapshot: Snapshot) -> Snapshot {
    let workers = std::mem::take(&mut snapshot.workers);
    for worker in workers {
        let pid = worker.pid;
        let named = |id: &str| format!("{pid}/{id}");
        snapshot
            .threads
            .extend(worker.threads.into_iter().map(|mut t| {
                t.name = format!("[{pid}] {}", t.name);
                t
            }));
        let Some(data) = worker.probe else { continue };
        let root = snapshot
            .probe
            .get_or_insert_with(|| crate::model::ProbeData {
                runtime: data.runtime.clone(),
                runtime_version: data.runtime_version.clone(),
                probe_version: data.probe_version.clone(),
                now_ms: data.now_ms,
                ..Default::default()
            });
        root.tasks.extend(data.tasks.into_iter().map(|mut t| {
            t.id = named(&t.id);
            t.loop_id = t.loop_id.as_deref().map(named);
            t.parent = t.parent.as_deref().map(named);
            t.waiting_on = t.waiting_on.as_deref().map(named);
            t
        }));
        root.loops.extend(data.loops.into_iter().map(|mut l| {
            l.id = named(&l.id);
            l
        }));
        root.pools.extend(data.pools.into_iter().map(|mut p| {
            p.id = named(&p.id);
            p.name = named(&p.name);
            p
        }));
    }
    snapshot
}

impl LiveFeed {
    /// Runs until the UI hangs up.
    pub fn run(self, tx: SyncSender<AppEvent>, control: Receiver<Control>) {
        let LiveFeed {
            mut target,
            mut source,
            open,
            interval,
            options,
            config,
        } = self;
        // A service's workers each have their own history (`judge::tree`).
        let mut judges = Judges::new(config);
        let mut skipped = 0u64;
        loop {
            let src = match source.take().map_or_else(|| open(&target), Ok) {
                Ok(src) => src,
                Err(e) => {
                    if !send(&tx, FeedEvent::Error(e.to_string()), &mut skipped) {
                        return;
                    }
                    match control.recv_timeout(interval) {
                        Ok(Control::Retarget(pid)) => target = Target::Pid(pid),
                        Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    continue;
                }
            };
            let fallback = src.describe();
            let (collector, events) = Collector::spawn(src, options, interval, 2);
            let mut gone = false;
            loop {
                if !gone {
                    let event = match events.recv_timeout(POLL) {
                        Ok(CollectorEvent::Snapshot(snapshot)) => {
                            let findings = judges.observe_tree((*snapshot).clone()).current;
                            Some(FeedEvent::Update(Box::new(Update {
                                source: describe(&snapshot, &fallback),
                                snapshot: service_view(*snapshot),
                                findings,
                                replay: None,
                                skipped,
                                resolved: judges.resolved(RESOLVED_SHOWN),
                            })))
                        }
                        Ok(CollectorEvent::Error(e)) => Some(FeedEvent::Error(e)),
                        Ok(CollectorEvent::Gone(e)) => {
                            gone = true;
                            Some(FeedEvent::Gone(e))
                        }
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            gone = true;
                            None
                        }
                    };
                    if let Some(event) = event
                        && !send(&tx, event, &mut skipped)
                    {
                        return;
                    }
                }
                let message = if gone {
                    control.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    control.try_recv().map_err(|e| match e {
                        std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        std::sync::mpsc::TryRecvError::Disconnected => {
                            RecvTimeoutError::Disconnected
                        }
                    })
                };
                match message {
                    Ok(Control::Retarget(pid)) => {
                        target = Target::Pid(pid);
                        judges.reset();
                        break;
                    }
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            drop(collector);
        }
    }
}

/// Plays a recording: in time (scaled by `speed`), or stepped and sought by the UI.
pub struct ReplayFeed {
    pub recording: Recording,
    pub config: Config,
    pub speed: f64,
    /// Start paused on the first snapshot.
    pub paused: bool,
}

/// How many snapshots before a seek target are re-read so trend rules see a history.
const SEEK_CONTEXT: usize = 60;

impl ReplayFeed {
    pub fn run(self, tx: SyncSender<AppEvent>, control: Receiver<Control>) {
        let ReplayFeed {
            mut recording,
            config,
            speed,
            paused,
        } = self;
        let mut judge = Judge::new(config);
        let total = recording.len();
        let mut playing = !paused;
        let mut skipped = 0u64;
        if total == 0 {
            send(
                &tx,
                FeedEvent::Gone(format!(
                    "{} holds no readable snapshot",
                    recording.path().display()
                )),
                &mut skipped,
            );
            while control.recv().is_ok() {}
            return;
        }
        let mut index = 0usize;
        // The index the judge's history ends at, to tell a plain step from a jump.
        let mut judged: Option<usize> = None;
        loop {
            if judged.is_none_or(|j| index != j + 1) {
                judge.reset();
                for i in index.saturating_sub(SEEK_CONTEXT)..index {
                    if let Ok(s) = recording.read(i) {
                        judge.push(s);
                    }
                }
            }
            let current = recording.read(index);
            judged = Some(index);
            let event = match &current {
                Ok(snapshot) => FeedEvent::Update(Box::new(Update {
                    findings: judge.observe(snapshot.clone()).current,
                    snapshot: snapshot.clone(),
                    source: format!("recording {}", recording.path().display()),
                    replay: Some(ReplayPos { index, total }),
                    skipped,
                    resolved: judge.resolved(RESOLVED_SHOWN),
                })),
                Err(e) => FeedEvent::Error(e.clone()),
            };
            if !send(&tx, event, &mut skipped) {
                return;
            }
            let at_end = index + 1 >= total;
            if at_end && playing {
                playing = false;
                send(
                    &tx,
                    FeedEvent::Gone(format!(
                        "end of recording ({total} snapshots): , [ to step back"
                    )),
                    &mut skipped,
                );
            }
            let delay = if playing {
                let now_t = current.as_ref().map_or(0, |s| s.taken_at_ms);
                let next_t = recording.read(index + 1).map_or(now_t, |s| s.taken_at_ms);
                let ms = next_t.saturating_sub(now_t) as f64 / speed.max(0.01);
                Some(Duration::from_millis(ms.clamp(10.0, 5_000.0) as u64))
            } else {
                None
            };
            let message = match delay {
                Some(d) => match control.recv_timeout(d) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match control.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                },
            };
            match message {
                None => index += 1,
                Some(Control::Pause(p)) => {
                    playing = !p && !at_end;
                    if playing {
                        index = (index + 1).min(total - 1);
                    } else {
                        // redraw the same snapshot with the paused position
                        judged = None;
                    }
                }
                Some(Control::Step(d)) => {
                    playing = false;
                    index = (index as i64 + d).clamp(0, total as i64 - 1) as usize;
                    if index == judged.unwrap_or(usize::MAX) {
                        judged = None;
                    }
                }
                Some(Control::Retarget(_)) => {
                    send(
                        &tx,
                        FeedEvent::Error(
                            "a recording cannot drill into a child: record the child's pid".into(),
                        ),
                        &mut skipped,
                    );
                    judged = None;
                }
            }
        }
    }
}

/// Starts a feed on its own thread; returns the sender the UI controls it with.
pub fn spawn<F>(name: &str, feed: F, tx: SyncSender<AppEvent>) -> anyhow::Result<Sender<Control>>
where
    F: FnOnce(SyncSender<AppEvent>, Receiver<Control>) + Send + 'static,
{
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || feed(tx, ctl_rx))?;
    Ok(ctl_tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProbeData, Task, Thread};

    fn with_task(pid: u32, task: &str) -> Snapshot {
        Snapshot {
            pid,
            threads: vec![Thread {
                tid: pid,
                name: "python3".into(),
                ..Default::default()
            }],
            probe: Some(ProbeData {
                runtime: "python".into(),
                tasks: vec![Task {
                    id: task.into(),
                    loop_id: Some("loop-1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_view_lists_every_workers_tasks_named_by_pid() {
        let mut root = with_task(10, "Task-1");
        root.probe = None;
        root.workers = vec![with_task(20, "Task-7"), with_task(30, "Task-7")];
        let view = service_view(root);
        assert!(view.workers.is_empty());
        let ids: Vec<&str> = view.tasks().iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["20/Task-7", "30/Task-7"]);
        assert_eq!(view.tasks()[0].loop_id.as_deref(), Some("20/loop-1"));
        let names: Vec<&str> = view.threads.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["python3", "[20] python3", "[30] python3"]);
        let alone = with_task(10, "Task-1");
        assert_eq!(service_view(alone.clone()), alone);
    }
}
