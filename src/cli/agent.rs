//! `leakhound agent`: flags and the `[agent]` table of `leakhound.toml` become
//! [`AgentOptions`]; each event of the agent is one line on standard output.

use super::{AgentArgs, EXIT_CLEAN, out};
use crate::agent::discover::Selector;
use crate::agent::{Agent, AgentOptions, Event, parse_bytes};
use crate::check::settings::Settings;
use crate::config::Config;
use std::time::Duration;

/// Defaults: 64 targets sharing 64 MiB of history (1 MiB each: ~100 plain /proc snapshots).
const DEFAULT_MAX_TARGETS: usize = 64;
const DEFAULT_MEMORY: usize = 64 << 20;
/// The most targets `--max-targets` may ask for (series grow with it: docs/AGENT.md).
const MAX_TARGETS_LIMIT: usize = 1000;

pub fn run(args: AgentArgs) -> anyhow::Result<u8> {
    let options = options(&args)?;
    super::interrupt::install();
    let mut agent = Agent::new(options);
    agent.run(super::interrupt::interrupted, |event| {
        out::println(&line(&event));
    })?;
    Ok(EXIT_CLEAN)
}

fn line(event: &Event) -> String {
    let who = |l: &crate::agent::prometheus::TargetLabels| {
        if l.unit.is_empty() {
            format!("{}[{}]", l.service, l.pid)
        } else {
            format!("{}[{}] ({})", l.service, l.pid, l.unit)
        }
    };
    match event {
        Event::Listening(addr) => format!("serving metrics on http://{addr}/metrics"),
        Event::Watching(l) => format!("watching {}", who(l)),
        Event::Exited(l, why) => format!("{} ended: {why}", who(l)),
        Event::Failed(l, why) => format!("{}: {why}", who(l)),
        Event::Finding(l, f) => format!("{}: {}", who(l), crate::report::text::finding_line(f)),
        Event::Dropped(n) => format!(
            "{n} more process(es) chosen than --max-targets allows: left unwatched (raise --max-targets)"
        ),
    }
}

/// The file's `[agent]` table and `[thresholds]`, then the flags on top.
pub fn options(args: &AgentArgs) -> anyhow::Result<AgentOptions> {
    let settings = Settings::load(args.config.as_deref()).map_err(anyhow::Error::msg)?;
    let file = &settings.agent;
    let name = settings
        .path
        .as_ref()
        .map_or_else(|| "leakhound.toml".to_string(), |p| p.display().to_string());
    let in_file = |e: String| anyhow::anyhow!("{name}: [agent] {e}");

    let mut selectors = Vec::new();
    for pid in file.pid.iter().chain(&args.pid) {
        if *pid == 0 {
            anyhow::bail!("PID 0 is not a process: give the PID of a running process");
        }
        selectors.push(Selector::Pid(*pid));
    }
    for p in &file.patterns {
        selectors.push(Selector::pattern(p).map_err(in_file)?);
    }
    for p in &args.patterns {
        selectors.push(Selector::pattern(p).map_err(anyhow::Error::msg)?);
    }
    for c in &file.cgroup {
        selectors.push(Selector::cgroup(c).map_err(in_file)?);
    }
    for c in &args.cgroup {
        selectors.push(Selector::cgroup(c).map_err(anyhow::Error::msg)?);
    }
    for u in &file.unit {
        selectors.push(Selector::unit(u).map_err(in_file)?);
    }
    for u in &args.unit {
        selectors.push(Selector::unit(u).map_err(anyhow::Error::msg)?);
    }
    let probe_dirs: Vec<_> = file
        .probe_dir
        .iter()
        .chain(&args.probe_dir)
        .cloned()
        .collect();
    if args.probes || file.probes == Some(true) || !probe_dirs.is_empty() {
        selectors.push(Selector::Probes(probe_dirs));
    }
    if selectors.is_empty() {
        anyhow::bail!(
            "nothing to watch: give --pid, --match, --probes, --cgroup or --unit (or an [agent] table in leakhound.toml)"
        );
    }

    let mut config = Config::default();
    for t in settings.thresholds.iter().chain(&args.thresholds) {
        config.set(t).map_err(anyhow::Error::msg)?;
    }
    let interval = match (args.interval, &file.interval) {
        (Some(i), _) => i,
        (None, Some(text)) => {
            crate::config::parse_duration(text).map_err(|e| in_file(format!("interval: {e}")))?
        }
        (None, None) => Duration::from_secs(1),
    };
    if interval.is_zero() {
        anyhow::bail!("--interval must be above zero: write e.g. --interval 1s");
    }
    let max_targets = args
        .max_targets
        .or(file.max_targets)
        .unwrap_or(DEFAULT_MAX_TARGETS);
    if max_targets == 0 || max_targets > MAX_TARGETS_LIMIT {
        anyhow::bail!("--max-targets must be between 1 and {MAX_TARGETS_LIMIT}");
    }
    let memory_budget = match (&args.memory, &file.memory) {
        (Some(m), _) => parse_bytes(m).map_err(anyhow::Error::msg)?,
        (None, Some(m)) => parse_bytes(m).map_err(in_file)?,
        (None, None) => DEFAULT_MEMORY,
    };
    let listen = match (&args.listen, &file.listen) {
        (Some(a), _) => Some(*a),
        (None, Some(text)) => Some(text.parse().map_err(|_| {
            in_file(format!(
                "listen: '{text}' is not HOST:PORT, e.g. 127.0.0.1:9464"
            ))
        })?),
        (None, None) => None,
    };
    let otlp = args.otlp.clone().or_else(|| file.otlp.clone());
    if otlp.is_some() && !cfg!(feature = "otlp") {
        anyhow::bail!(crate::agent::OTLP_MISSING);
    }
    Ok(AgentOptions {
        selectors,
        interval,
        config,
        max_targets,
        memory_budget,
        listen,
        otlp,
        duration: args.duration,
        python_stacks: args.python_stacks || file.python_stacks.unwrap_or(false),
    })
}
