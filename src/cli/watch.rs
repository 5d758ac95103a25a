//! `leakhound watch TARGET`: sample, judge, print each finding once when it fires, and a
//! summary at the end (time up, target exited, or Ctrl-C).

use super::{EXIT_CLEAN, EXIT_FINDINGS, WatchArgs, out};
use crate::judge::Judges;
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
    crate::launch::inject_if_asked(args.inject, &args.target)?;
    let started = Instant::now();
    // A PID stands for the process and its descendants: each worker's probe is judged too.
    let source = crate::source::open_tree(&args.target)?;
    // The first sample is taken first so a bad target is an error (exit 2), not a summary;
    // off this thread, so Ctrl-C and --for are honoured whatever the target does meanwhile.
    let (source, first) = match first_sample(source, options, started, args.duration) {
        Some((source, first)) => (source, first?),
        None => {
            // Ended (Ctrl-C, --for) before the target gave a first sample: still a summary.
            let ended = if super::interrupt::interrupted() {
                "interrupted"
            } else {
                "duration"
            };
            let summary = WatchSummary {
                kind: "summary",
                target: args.target.to_string(),
                samples: 0,
                duration_ms: started.elapsed().as_millis() as u64,
                ended,
                exit_message: None,
                fired: 0,
                findings: Vec::new(),
                active: Vec::new(),
                errors: 0,
            };
            return Ok(print_summary(&summary, args.json));
        }
    };
    let target = source.describe();
    let mut judges = Judges::new(config);
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
        if !first.workers.is_empty() {
            let pids: Vec<String> = first.workers.iter().map(|w| w.pid.to_string()).collect();
            out::println(&format!(
                "and its {} worker(s) with a probe or read from outside: pid {} (new ones are picked up as they start)",
                pids.len(),
                pids.join(", ")
            ));
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
    let mut report = |snapshot: crate::model::Snapshot, judges: &mut Judges| {
        let at = snapshot.taken_at_ms;
        let judged = match export.as_mut() {
            Some(export) => {
                let judged = judges.observe_tree(snapshot.clone());
                export.observe(&snapshot, &judged);
                judged
            }
            None => judges.observe_tree(snapshot),
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
    report(first, &mut judges);
    samples += 1;

    // The first sample is ours; the collector's first comes one interval later.
    let pause = Instant::now() + args.common.interval;
    while Instant::now() < pause
        && !super::interrupt::interrupted()
        && !remaining(started, args.duration).is_zero()
    {
        std::thread::sleep(POLL.min(pause.saturating_duration_since(Instant::now())));
    }
    let (collector, events) = Collector::spawn(source, options, args.common.interval, 4);
    let ended = loop {
        if super::interrupt::interrupted() {
            break "interrupted";
        }
        if output_closed.get() {
            // Nobody reads any more (`| head -1`): stop quietly.
            drop(collector);
            return Ok(if judges.fired_count() > 0 {
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
                report(*snapshot, &mut judges);
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
    // Not joined: the collector may be inside a probe request (up to its deadline); dropping
    // the handle tells it to stop, and the summary need not wait for it.
    drop(collector);

    let summary = WatchSummary {
        kind: "summary",
        target,
        samples,
        duration_ms: started.elapsed().as_millis() as u64,
        ended,
        exit_message,
        fired: judges.fired_count(),
        findings: judges.all_fired(),
        active: judges.current().iter().map(|f| f.key()).collect(),
        errors,
    };
    Ok(print_summary(&summary, args.json))
}

/// Prints the summary; the exit code it calls for.
fn print_summary(summary: &WatchSummary, json: bool) -> u8 {
    if json {
        out::println(&crate::report::json::summary_line(summary));
    } else {
        out::print(&text_summary(summary));
    }
    if summary.fired > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    }
}

type First = (
    Box<dyn crate::source::Source>,
    Result<crate::model::Snapshot, crate::source::SourceError>,
);

/// Takes the first sample on a helper thread; `None` when Ctrl-C or the end of `--for` comes
/// first (the helper is left to finish on its own).
fn first_sample(
    mut source: Box<dyn crate::source::Source>,
    options: SampleOptions,
    started: Instant,
    limit: Option<Duration>,
) -> Option<First> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = source.sample(options);
        let _ = tx.send((source, result));
    });
    loop {
        if super::interrupt::interrupted() {
            return None;
        }
        let left = remaining(started, limit);
        if left.is_zero() {
            return None;
        }
        match rx.recv_timeout(POLL.min(left)) {
            Ok(first) => return Some(first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
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
