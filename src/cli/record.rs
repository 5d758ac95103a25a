//! `leakhound record TARGET -o FILE [--for D]`: write the target's snapshots to a recording
//! (docs/RECORDING.md) until the time is up, the target exits, or Ctrl-C.

use super::{EXIT_CLEAN, RecordArgs};
use crate::source::replay::{Header, RecordingWriter};
use crate::source::{Collector, CollectorEvent, SampleOptions, Target};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

pub fn run(args: RecordArgs) -> anyhow::Result<u8> {
    args.common.config()?;
    if let Target::Recording(_) = args.target {
        anyhow::bail!(
            "cannot record a recording: give a PID, unix:/path/to.sock or http://HOST:PORT"
        );
    }
    super::interrupt::install();
    let mut source = crate::source::open(&args.target)?;
    let first = source.sample(SampleOptions::default())?;
    let header = Header::new(
        args.target.to_string(),
        args.common.interval.as_millis() as u64,
    );
    // Made like `check -o`'s: a missing folder is created, not an error.
    super::out::create_parent(&args.output)?;
    let mut writer = RecordingWriter::create(&args.output, &header)?;
    writer.write(&first)?;
    let target = source.describe();
    eprintln!(
        "recording {target} to {} every {:?}{} (Ctrl-C stops)",
        args.output.display(),
        args.common.interval,
        args.duration
            .map_or(String::new(), |d| format!(" for {d:?}"))
    );
    let started = Instant::now();
    let left = || {
        args.duration
            .map_or(Duration::MAX, |d| d.saturating_sub(started.elapsed()))
    };
    std::thread::sleep(args.common.interval.min(left()));
    let (collector, events) =
        Collector::spawn(source, SampleOptions::default(), args.common.interval, 4);
    let ended = loop {
        if super::interrupt::interrupted() {
            break "interrupted".to_string();
        }
        if left().is_zero() {
            break "time is up".to_string();
        }
        match events.recv_timeout(Duration::from_millis(100).min(left())) {
            Ok(CollectorEvent::Snapshot(s)) => writer.write(&s)?,
            Ok(CollectorEvent::Error(e)) => eprintln!("leakhound: warning: sample failed: {e}"),
            Ok(CollectorEvent::Gone(why)) => break why,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break "sampling stopped".to_string(),
        }
    };
    collector.stop();
    let size = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    eprintln!(
        "recorded {} snapshots ({}) to {}; ended: {ended}. Replay: leakhound replay {}",
        writer.written,
        crate::report::text::bytes(size),
        args.output.display(),
        args.output.display()
    );
    Ok(EXIT_CLEAN)
}
