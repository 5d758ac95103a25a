//! The collector: a thread that owns a [`Source`], samples it every interval and sends what it
//! sees down a bounded channel (bottom's design). The dashboard, `watch`, `record` and `check`
//! all read snapshots this way, so sampling never blocks rendering or judging.
//!
//! It stops when the receiver is dropped, when [`Collector::stop`] is called or its stop flag
//! is set (e.g. from a Ctrl-C handler), or after the target is gone.

use super::api::{SampleOptions, Source, SourceError};
use crate::model::Snapshot;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the collector sends.
#[derive(Debug)]
pub enum CollectorEvent {
    /// One good sample.
    Snapshot(Box<Snapshot>),
    /// A sample failed but the target may still be there (one line); sampling goes on.
    Error(String),
    /// The target is gone (or was never there); this is the last event.
    Gone(String),
}

/// What can be asked of a running collector.
#[derive(Debug, Clone, Copy)]
enum Command {
    SampleNow,
    SetOptions(SampleOptions),
    SetInterval(Duration),
    Stop,
}

/// Handle on a running collector thread. Dropping it stops the thread (without waiting).
pub struct Collector {
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The longest [`Collector::stop`] waits for the thread.
pub const STOP_WAIT: Duration = Duration::from_millis(200);

/// How often a blocked send re-checks the stop flag while the channel is full.
const FULL_CHANNEL_POLL: Duration = Duration::from_millis(20);

impl Collector {
    /// Starts sampling `source` now and then every `interval`. `capacity` bounds the channel:
    /// when the reader falls that far behind, the collector waits for it rather than queue.
    pub fn spawn(
        source: Box<dyn Source>,
        options: SampleOptions,
        interval: Duration,
        capacity: usize,
    ) -> (Collector, Receiver<CollectorEvent>) {
        let (events_tx, events_rx) = mpsc::sync_channel(capacity.max(1));
        let (commands_tx, commands_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            source,
            options,
            interval: interval.max(Duration::from_millis(1)),
            events: events_tx,
            commands: commands_rx,
            stop: Arc::clone(&stop),
        };
        let handle = std::thread::Builder::new()
            .name("leakhound-collector".into())
            .spawn(move || worker.run())
            .expect("spawning the collector thread");
        (
            Collector {
                commands: commands_tx,
                stop,
                handle: Some(handle),
            },
            events_rx,
        )
    }

    /// The flag that stops the collector when set; safe to set from a signal-handling thread.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Takes a sample now instead of waiting for the interval.
    pub fn sample_now(&self) {
        let _ = self.commands.send(Command::SampleNow);
    }

    /// Changes what later samples include (fd list, stacks) and samples at once.
    pub fn set_options(&self, options: SampleOptions) {
        let _ = self.commands.send(Command::SetOptions(options));
    }

    pub fn set_interval(&self, interval: Duration) {
        let _ = self.commands.send(Command::SetInterval(interval));
    }

    /// Asks the thread to stop and waits for it, but not past [`STOP_WAIT`]: a thread inside a
    /// probe request (up to its deadline) is left to end on its own, so Ctrl-C and `--for`
    /// never wait for a slow probe.
    pub fn stop(mut self) {
        self.request_stop();
        if let Some(handle) = self.handle.take() {
            let until = Instant::now() + STOP_WAIT;
            while !handle.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Stop);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.request_stop();
    }
}

struct Worker {
    source: Box<dyn Source>,
    options: SampleOptions,
    interval: Duration,
    events: SyncSender<CollectorEvent>,
    commands: Receiver<Command>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self) {
        let mut next = Instant::now();
        loop {
            if self.stopped() {
                return;
            }
            // Wait for the next tick, or a command that cuts the wait short.
            let now = Instant::now();
            if next > now {
                match self.commands.recv_timeout(next - now) {
                    Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(Command::SampleNow) => {}
                    Ok(Command::SetOptions(o)) => self.options = o,
                    Ok(Command::SetInterval(i)) => {
                        self.interval = i.max(Duration::from_millis(1));
                        next = Instant::now() + self.interval;
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
                if self.stopped() {
                    return;
                }
            }
            let started = Instant::now();
            let event = match self.source.sample(self.options) {
                Ok(snapshot) => CollectorEvent::Snapshot(Box::new(snapshot)),
                Err(err @ (SourceError::Gone(_) | SourceError::NoSuchProcess(_))) => {
                    let _ = self.send(CollectorEvent::Gone(err.to_string()));
                    return;
                }
                Err(err) => CollectorEvent::Error(err.to_string().replace('\n', " ")),
            };
            if !self.send(event) {
                return;
            }
            // Schedule from the start of the sample so a slow sample does not drift the rate.
            next = started + self.interval;
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sends, waiting while the channel is full; false when the reader is gone or stop was
    /// asked for meanwhile.
    fn send(&self, mut event: CollectorEvent) -> bool {
        loop {
            match self.events.try_send(event) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if self.stopped() {
                        return false;
                    }
                    event = back;
                    std::thread::sleep(FULL_CHANNEL_POLL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A source that counts its samples and fails as scripted.
    struct Scripted {
        calls: Arc<Mutex<Vec<SampleOptions>>>,
        script: Vec<Result<(), &'static str>>,
    }

    impl Source for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn sample(&mut self, options: SampleOptions) -> Result<Snapshot, SourceError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(options);
            match self.script.get(calls.len() - 1) {
                Some(Err("gone")) => Err(SourceError::Gone("pid 1 exited".into())),
                Some(Err(other)) => Err(SourceError::Other((*other).into())),
                _ => Ok(Snapshot {
                    taken_at_ms: calls.len() as u64,
                    ..Default::default()
                }),
            }
        }
    }

    fn scripted(
        script: Vec<Result<(), &'static str>>,
    ) -> (Box<dyn Source>, Arc<Mutex<Vec<SampleOptions>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (
            Box::new(Scripted {
                calls: Arc::clone(&calls),
                script,
            }),
            calls,
        )
    }

    #[test]
    fn samples_reports_transient_errors_and_ends_when_gone() {
        let (source, _) = scripted(vec![Ok(()), Err("flaky read"), Ok(()), Err("gone")]);
        let (_c, rx) = Collector::spawn(
            source,
            SampleOptions::default(),
            Duration::from_millis(5),
            4,
        );
        let events: Vec<_> = rx.iter().collect();
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(&events[0], CollectorEvent::Snapshot(s) if s.taken_at_ms == 1));
        assert!(matches!(&events[1], CollectorEvent::Error(e) if e == "flaky read"));
        assert!(matches!(&events[2], CollectorEvent::Snapshot(_)));
        assert!(matches!(&events[3], CollectorEvent::Gone(m) if m.contains("exited")));
    }

    #[test]
    fn sample_now_and_options_reach_the_source() {
        let (source, calls) = scripted(vec![]);
        let (c, rx) = Collector::spawn(
            source,
            SampleOptions::default(),
            Duration::from_secs(3600),
            4,
        );
        assert!(matches!(rx.recv().unwrap(), CollectorEvent::Snapshot(_)));
        c.set_options(SampleOptions {
            fd_list: true,
            stacks: false,
        });
        c.sample_now();
        assert!(matches!(rx.recv().unwrap(), CollectorEvent::Snapshot(_)));
        let seen = calls.lock().unwrap().clone();
        assert!(!seen[0].fd_list);
        assert!(seen[1].fd_list, "{seen:?}");
        c.stop();
    }

    /// A source whose sample takes `hold` (a probe dripping its reply).
    struct Slow {
        hold: Duration,
        started: std::sync::mpsc::Sender<()>,
        finished: Arc<AtomicBool>,
    }

    impl Source for Slow {
        fn describe(&self) -> String {
            "slow".into()
        }
        fn sample(&mut self, _: SampleOptions) -> Result<Snapshot, SourceError> {
            let _ = self.started.send(());
            std::thread::sleep(self.hold);
            self.finished.store(true, Ordering::SeqCst);
            Ok(Snapshot::default())
        }
    }

    #[test]
    fn stop_does_not_wait_for_a_sample_in_progress() {
        let (started_tx, started_rx) = mpsc::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let hold = Duration::from_secs(20);
        let source = Box::new(Slow {
            hold,
            started: started_tx,
            finished: Arc::clone(&finished),
        });
        let (c, _rx) = Collector::spawn(source, SampleOptions::default(), hold, 1);
        started_rx.recv().unwrap();
        c.stop();
        // A stop that joined the thread would return only after the sample ended.
        assert!(!finished.load(Ordering::SeqCst));
    }

    #[test]
    fn stops_when_the_receiver_is_dropped_or_asked() {
        let (source, calls) = scripted(vec![]);
        let (c, rx) = Collector::spawn(
            source,
            SampleOptions::default(),
            Duration::from_millis(1),
            1,
        );
        drop(rx);
        // The thread exits on its own once a send finds no receiver; join proves it.
        c.stop();
        let after = calls.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(calls.lock().unwrap().len(), after);

        let (source, _) = scripted(vec![]);
        let (c, rx) = Collector::spawn(
            source,
            SampleOptions::default(),
            Duration::from_millis(1),
            1,
        );
        c.stop_flag().store(true, Ordering::SeqCst);
        c.stop();
        // Whatever was queued before the stop, the channel then closes.
        let drained: Vec<_> = rx.iter().collect();
        assert!(drained.len() <= 2);
    }
}
