//! `leakhound watch TARGET`: sample, judge, print each finding once when it fires, and a
//! summary at the end (time up, target exited, or Ctrl-C).

use super::{EXIT_CLEAN, EXIT_FINDINGS, WatchArgs, out};
use crate::judge::Judge;
use crate::report::json::WatchSummary;
use crate::source::{Collector, CollectorEvent, SampleOptions};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How often the loop looks at the clock and the Ctrl-C flag between samples.
const POLL: Duration = Duration::from_millis(100);

pub fn run(args: WatchArgs) -> anyhow::Result<u8> {
    let config = args.common.config()?;
    super::interrupt::install();
    let options = SampleOptions::default();
    let mut source = crate::source::open(&args.target)?;
    // The first sample is taken here so a bad target is an error (exit 2), not a summary.
    let first = source.sample(options)?;
    let target = source.describe();
    let started = Instant::now();
    let mut judge = Judge::new(config);
    let mut samples = 0u64;
    let mut errors = 0u64;
    let mut exit_message = None;
    let output_closed = std::cell::Cell::new(false);

    if !args.json {
        out::println(&format!(
            "watching {target} every {:?}",
            args.common.interval
        ));
        let note = crate::report::no_probe_note(&first);
        if let Some(note) = note {
            out::println(&format!("note: {note}"));
        }
    }
    let mut export = match args.listen {
        Some(addr) => {
            let (export, bound) = crate::agent::SingleExport::serve(addr, &first)?;
            if !args.json {
                out::println(&format!("serving metrics on http://{bound}/metrics"));
            }
            Some(export)
        }
        None => None,
    };
    let mut report = |snapshot: crate::model::Snapshot, judge: &mut Judge| {
        let at = snapshot.taken_at_ms;
        let judged = match export.as_mut() {
            Some(export) => {
                let judged = judge.observe(snapshot.clone());
                export.observe(&snapshot, &judged);
                judged
            }
            None => judge.observe(snapshot),
        };
        for f in judged.new {
            let line = if args.json {
                crate::report::json::finding_line(&f, at)
            } else {
                crate::report::text::finding_line(&f)
            };
            if !out::println(&line) {
                output_closed.set(true);
            }
        }
    };
    report(first, &mut judge);
    samples += 1;

    // The first sample is ours; the collector's first comes one interval later.
    std::thread::sleep(args.common.interval.min(remaining(started, args.duration)));
    let (collector, events) = Collector::spawn(source, options, args.common.interval, 4);
    let ended = loop {
        if super::interrupt::interrupted() {
            break "interrupted";
        }
        if output_closed.get() {
            // Nobody reads any more (`| head -1`): stop quietly.
            collector.stop();
            return Ok(if judge.fired_count() > 0 {
                EXIT_FINDINGS
            } else {
                EXIT_CLEAN
            });
        }
        let left = remaining(started, args.duration);
        if left.is_zero() {
            break "duration";
        }
        match events.recv_timeout(POLL.min(left)) {
            Ok(CollectorEvent::Snapshot(snapshot)) => {
                samples += 1;
                report(*snapshot, &mut judge);
            }
            Ok(CollectorEvent::Error(e)) => {
                errors += 1;
                eprintln!("leakhound: warning: sample failed: {e}");
            }
            Ok(CollectorEvent::Gone(why)) => {
                exit_message = Some(why);
                break "target_exited";
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                exit_message = Some(format!("{target}: sampling stopped"));
                break "target_exited";
            }
        }
    };
    collector.stop();

    let summary = WatchSummary {
        kind: "summary",
        target,
        samples,
        duration_ms: started.elapsed().as_millis() as u64,
        ended,
        exit_message,
        fired: judge.fired_count(),
        findings: judge.all_fired(),
        active: judge.current().map(|f| f.key()).collect(),
        errors,
    };
    if args.json {
        out::println(&crate::report::json::summary_line(&summary));
    } else {
        out::print(&text_summary(&summary));
    }
    Ok(if summary.fired > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    })
}

fn remaining(started: Instant, limit: Option<Duration>) -> Duration {
    limit.map_or(Duration::MAX, |l| l.saturating_sub(started.elapsed()))
}

fn text_summary(s: &WatchSummary) -> String {
    use crate::report::text::{duration_ms, finding_line};
    let how = match s.ended {
        "target_exited" => format!(
            "ended: {}",
            s.exit_message.as_deref().unwrap_or("target exited")
        ),
        "interrupted" => "ended: interrupted".to_string(),
        _ => "ended: time is up".to_string(),
    };
    let mut out = format!(
        "\nwatched {} for {} ({} samples); {how}\n",
        s.target,
        duration_ms(s.duration_ms),
        s.samples
    );
    if s.findings.is_empty() {
        out.push_str("no findings\n");
    } else {
        out.push_str(&format!(
            "{} finding(s), {} still active at the end:\n",
            s.findings.len(),
            s.active.len()
        ));
        for f in &s.findings {
            out.push_str(&format!("  {}\n", finding_line(f)));
        }
    }
    out
}
