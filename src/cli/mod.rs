//! The command line: raw flags (clap) become a validated [`Common`] config, then each
//! subcommand runs in its own module. Exit codes: 0 clean, 1 findings, 2 leakhound's own error
//! (`check` passes a failing command's own status through).

mod agent;
mod attach;
mod check;
mod dashboard;
mod demo;
mod interrupt;
pub mod out;
mod record;
mod replay;
mod run;
pub mod snapshot;
pub mod watch;

use crate::config::Config;
use crate::source::Target;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use crate::verdict::{EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS};

#[derive(Debug, Parser)]
#[command(
    name = "leakhound",
    version,
    about = "Finds what is stuck, leaking or starving in a concurrent program",
    after_help = "Targets: a PID, unix:/path/to/probe.sock, http://HOST:PORT (tokio-console), FILE.lhrec\n\
                  Exit status: 0 clean, 1 findings, 2 error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print one snapshot of a target: threads, children, descriptors, sockets, probe data, findings.
    Snapshot(SnapshotArgs),
    /// Sample a target, print each finding once when it fires, and a summary at the end.
    Watch(WatchArgs),
    /// Open the dashboard on a running target.
    Attach(AttachArgs),
    /// Start a program with the probes loaded and open the dashboard on it.
    Run(RunArgs),
    /// Run a command under observation and decide a verdict for CI.
    Check(CheckArgs),
    /// Record a target's snapshots to a file for replay.
    Record(RecordArgs),
    /// Replay a recording in the dashboard (or print its findings with --json).
    Replay(ReplayArgs),
    /// Run the built-in misbehaving workload and show it in the dashboard.
    Demo(DemoArgs),
    /// The demo's workload itself (started by `leakhound demo`).
    #[command(name = "__demo-worker", hide = true)]
    DemoWorker(DemoWorkerArgs),
    /// List the rules and the threshold keys.
    Rules,
    /// Watch many processes on this host and serve their metrics to Prometheus.
    Agent(AgentArgs),
}

/// Flags shared by every command that samples.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
    pub interval: Duration,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

impl CommonArgs {
    /// The validated thresholds and interval.
    pub fn config(&self) -> anyhow::Result<Config> {
        let config = self.thresholds.config(&[])?;
        if self.interval.is_zero() {
            anyhow::bail!("--interval must be above zero: write e.g. --interval 500ms");
        }
        Ok(config)
    }
}

/// `-T KEY=VALUE`, declared once and flattened into every command that judges.
#[derive(Debug, Clone, Args)]
pub struct ThresholdArgs {
    /// Set a rule threshold, e.g. -T stuck-task.after=30s (repeatable; `leakhound rules` lists keys).
    #[arg(short = 'T', long = "threshold", value_name = "KEY=VALUE")]
    pub assignments: Vec<String>,
}

impl ThresholdArgs {
    /// The defaults, then `before` (leakhound.toml's), then these flags, which win.
    pub fn config(&self, before: &[String]) -> anyhow::Result<Config> {
        Config::with(before.iter().chain(&self.assignments)).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[arg(value_parser = parse_target)]
    pub target: Target,
    /// Print JSON (the stable interface of docs/SNAPSHOT.md) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Include the full descriptor list with targets.
    #[arg(long)]
    pub fds: bool,
    /// Every thread's stack: from the probe, or read from outside a Python process without
    /// one (py-spy; the GIL holder is marked).
    #[arg(long)]
    pub stacks: bool,
    /// With --stacks and no probe: read the Python stacks without stopping the target (a
    /// stack may be torn).
    #[arg(long, requires = "stacks")]
    pub nonblocking: bool,
    /// Load the Python probe into the running process first (gdb on 3.9-3.13,
    /// sys.remote_exec on 3.14+): tasks, pools and never-awaited coroutines without a restart.
    #[arg(long)]
    pub inject: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(value_parser = parse_target)]
    pub target: Target,
    /// Stop after this long (default: until the target exits or Ctrl-C).
    #[arg(long = "for", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// One JSON object per line per finding, then a summary object.
    #[arg(long)]
    pub json: bool,
    /// Load the Python probe into the running process first (gdb on 3.9-3.13,
    /// sys.remote_exec on 3.14+): tasks, pools and never-awaited coroutines without a restart.
    #[arg(long)]
    pub inject: bool,
    /// Also serve this target's metrics for Prometheus at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Targets are followed across restarts when chosen by --match, --probes, --cgroup or --unit \
(a new pid for the same name and unit); an explicit --pid is watched until it exits. See docs/AGENT.md."
)]
pub struct AgentArgs {
    /// Watch this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Watch every process whose name or command line matches this glob; without a wildcard,
    /// a substring (repeatable).
    #[arg(long = "match", value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Watch every process with a probe socket in the known folders.
    #[arg(long)]
    pub probes: bool,
    /// Another folder of probe sockets (repeatable; implies --probes).
    #[arg(long, value_name = "DIR")]
    pub probe_dir: Vec<PathBuf>,
    /// Watch the members of this cgroup and those below it, e.g. /system.slice (repeatable).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,
    /// Watch the members of this systemd unit, e.g. nginx or nginx.service (repeatable).
    #[arg(long, value_name = "NAME")]
    pub unit: Vec<String>,
    /// Serve metrics for Prometheus at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Send findings (log records) and metrics to an OpenTelemetry collector over OTLP/HTTP,
    /// e.g. http://127.0.0.1:4318 (builds with the cargo feature `otlp`).
    #[arg(long, value_name = "ENDPOINT")]
    pub otlp: Option<String>,
    /// Time between samples of each target, and between looks for new targets [default: 1s].
    #[arg(long, value_parser = parse_duration_arg)]
    pub interval: Option<Duration>,
    /// Most targets watched at once [default: 64].
    #[arg(long)]
    pub max_targets: Option<usize>,
    /// Snapshot history kept for all targets together, shared equally [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long = "for", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Read the stacks of Python targets without a probe from outside at 20 Hz (loop-blocked
    /// without a probe; costs about 0.5-2% of a core per Python target: off by default).
    #[arg(long)]
    pub python_stacks: bool,
    /// Config file with an [agent] table (default: ./leakhound.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Set a rule threshold, e.g. -T stuck-task.after=30s (repeatable; `leakhound rules` lists keys).
    #[arg(short = 'T', long = "threshold", value_name = "KEY=VALUE")]
    pub thresholds: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[arg(value_parser = parse_target)]
    pub target: Target,
    /// Load the Python probe into the running process first (gdb on 3.9-3.13,
    /// sys.remote_exec on 3.14+): tasks, pools and never-awaited coroutines without a restart.
    #[arg(long)]
    pub inject: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status, headless: the program's own non-zero status when it failed on its \
own (128 + N when signal N killed it); otherwise 1 when a finding fired, else 0; 2 when leakhound \
itself could not run. With the dashboard: 0."
)]
pub struct RunArgs {
    /// No dashboard: print findings as `watch` does (the default when standard input or output
    /// is not a terminal). The program's output goes to standard error.
    #[arg(long, alias = "no-tui")]
    pub headless: bool,
    /// Headless: one JSON object per line per finding, then a summary object.
    #[arg(long)]
    pub json: bool,
    /// Headless: stop the program after this long (default: until it exits or Ctrl-C).
    #[arg(long = "for", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: the command's own non-zero status when it failed; otherwise \
1 when a finding is at or above --fail-on, else 0; 2 when leakhound itself could not run. \
SIGTERM or Ctrl-C: passed on to the command, which gets --settle to end (a second signal cuts \
that short), then the reports are written and the status is 143 or 130 (or the command's own \
non-zero exit code)."
)]
pub struct CheckArgs {
    /// Exit 1 when a finding is at or above this severity: info, warning, error [default: warning].
    #[arg(long)]
    pub fail_on: Option<crate::findings::Severity>,
    /// Format on standard output: text, json, junit, sarif.
    #[arg(long, default_value = "text")]
    pub format: check::ReportFormat,
    /// Also write a report to FILE; the format comes from FORMAT:FILE or the extension
    /// (.json, .xml = junit, .sarif, .txt). Repeatable.
    #[arg(short, long, value_name = "[FORMAT:]FILE")]
    pub output: Vec<String>,
    /// Ignore findings: RULE, or KIND=PATTERN with KIND one of rule, thread, task, location,
    /// fd, child; PATTERN is a glob (repeatable; also [ignore] in leakhound.toml).
    #[arg(long, value_name = "[KIND=]PATTERN")]
    pub ignore: Vec<String>,
    /// Config file (default: ./leakhound.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Longest time to wait for descendants to wind down at exit before judging [default: 2s].
    #[arg(long, value_parser = parse_duration_arg)]
    pub settle: Option<Duration>,
    /// Leave descendants that outlive the command running instead of killing them.
    #[arg(long)]
    pub keep_orphans: bool,
    /// Severity of a daemon thread still running at exit (Python ends them at exit by
    /// design): info, warning, error [default: info, which does not fail the run].
    #[arg(long, value_name = "SEVERITY")]
    pub daemon_threads: Option<crate::findings::Severity>,
    /// Time between samples while the command runs [default: 500ms]; what is left at exit is
    /// seen at the exit itself, whatever the interval.
    #[arg(long, value_parser = parse_duration_arg)]
    pub interval: Option<Duration>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[arg(value_parser = parse_target)]
    pub target: Target,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long = "for", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    pub file: PathBuf,
    /// Print the recording's findings as JSON lines instead of opening the dashboard.
    #[arg(long)]
    pub json: bool,
    /// Playback speed multiplier.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Skip the Python part even when python3 is present.
    #[arg(long)]
    pub no_python: bool,
    /// Run without the dashboard, printing findings as `watch` does, for this long.
    #[arg(long, value_parser = parse_duration_arg)]
    pub headless: Option<Duration>,
    /// Write every view of a real demo run as SVG into DIR instead of opening the dashboard.
    #[arg(long, value_name = "DIR")]
    pub screenshots: Option<PathBuf>,
    /// With --screenshots: how long the demo runs before the pictures are taken.
    #[arg(long, default_value = "22s", value_parser = parse_duration_arg)]
    pub after: Duration,
}

#[derive(Debug, Args)]
pub struct DemoWorkerArgs {
    /// Also start the Python part.
    #[arg(long)]
    pub python: bool,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// Runs the parsed command; every error becomes one line on stderr and exit status 2.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Rules => rules_command(),
        other => dispatch(other),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("leakhound: error: {}", one_line(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Rules => rules_command(),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Check(args) => check::run(args),
        Command::Attach(args) => attach::run(args),
        Command::Run(args) => run::run(args),
        Command::Record(args) => record::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DemoWorker(args) => demo::worker(args),
        Command::Agent(args) => agent::run(args),
    }
}

fn rules_command() -> anyhow::Result<u8> {
    use std::fmt::Write;
    let mut text = String::from("RULES\n");
    // The rules plus the ones `check` decides at exit (orphan-child).
    for (id, summary) in crate::rules::catalog() {
        let _ = writeln!(text, "  {id:<18} {summary}");
    }
    text.push_str("\nTHRESHOLDS (-T KEY=VALUE)\n");
    for t in crate::config::THRESHOLDS {
        let (key, help, kind, default) = (t.key, t.help, t.kind, t.default);
        let _ = writeln!(text, "  {key:<32} {help} ({kind}, default {default})");
    }
    // `leakhound rules | head` closing the pipe is not an error.
    out::print(&text);
    Ok(EXIT_CLEAN)
}

/// The error and its causes on one line: `reading x: permission denied`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// A command-line mistake (bad target, unknown flag) as one line and exit status 2; help and
/// version still print in full.
pub fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return ExitCode::from(EXIT_CLEAN);
    }
    let rendered = err.render().to_string();
    // clap's message runs until the first blank line (then usage and tips follow).
    let message: Vec<&str> = rendered
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = message.join(" ");
    let first = first.trim_start_matches("error: ");
    eprintln!("leakhound: error: {first} (see `leakhound --help`)");
    ExitCode::from(EXIT_ERROR)
}
