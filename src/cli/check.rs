//! `leakhound check`: flags + leakhound.toml → [`CheckOptions`], run, write the reports.

use super::CheckArgs;
use crate::check::CheckOptions;
use crate::check::ignore::Ignore;
use crate::check::settings::Settings;
use crate::config::Config;
use crate::findings::Severity;
use crate::verdict::CheckReport;
use std::path::PathBuf;
use std::time::Duration;

pub fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let settings = Settings::load(args.config.as_deref()).map_err(anyhow::Error::msg)?;
    let config: Config = args.thresholds.config(&settings.thresholds)?;
    let mut ignores = settings.ignores;
    for text in &args.ignore {
        ignores.push(Ignore::parse(text, "--ignore").map_err(anyhow::Error::msg)?);
    }
    // Validate every output before running the command: a typo must not cost a CI run.
    let outputs = args
        .output
        .iter()
        .map(|spec| parse_output(spec))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let interval = args
        .interval
        .or(settings.interval)
        .unwrap_or(Duration::from_millis(500));
    if interval.is_zero() {
        anyhow::bail!("--interval must be above zero: write e.g. --interval 250ms");
    }
    let options = CheckOptions {
        command: args.command,
        config,
        interval,
        settle: args
            .settle
            .or(settings.settle)
            .unwrap_or(Duration::from_secs(2)),
        keep_orphans: args.keep_orphans || settings.keep_orphans.unwrap_or(false),
        fail_on: args
            .fail_on
            .or(settings.fail_on)
            .unwrap_or(Severity::Warning),
        daemon_threads: args
            .daemon_threads
            .or(settings.daemon_threads)
            .unwrap_or(Severity::Info),
        ignores,
        interrupt: super::interrupt::signal,
    };
    // SIGTERM (a CI cancel) and Ctrl-C end the run with its reports, not leakhound itself.
    super::interrupt::install();
    let report = crate::check::run(&options)?;
    for (format, path) in &outputs {
        super::out::create_parent(path)?;
        std::fs::write(path, render(*format, &report))
            .map_err(|e| anyhow::anyhow!("cannot write the report {}: {e}", path.display()))?;
    }
    // A closed standard output (`| true`) must not hide the verdict's exit status.
    super::out::print(&render(args.format, &report));
    Ok(report.exit_code)
}

fn render(format: ReportFormat, report: &CheckReport) -> String {
    match format {
        ReportFormat::Text => crate::report::verdict::text(report),
        ReportFormat::Json => crate::report::verdict::json(report),
        ReportFormat::Junit => crate::report::junit::render(report),
        ReportFormat::Sarif => crate::report::sarif::render(report),
    }
}

/// Where a report goes: `--format` for stdout, `--output [FORMAT:]FILE` for files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Junit,
    Sarif,
}

impl std::str::FromStr for ReportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(ReportFormat::Text),
            "json" => Ok(ReportFormat::Json),
            "junit" => Ok(ReportFormat::Junit),
            "sarif" => Ok(ReportFormat::Sarif),
            other => Err(format!(
                "unknown report format '{other}': use text, json, junit or sarif"
            )),
        }
    }
}

/// Parses `--output [FORMAT:]FILE`: the prefix, else the extension (.json, .xml = junit,
/// .sarif, .txt = text).
pub fn parse_output(spec: &str) -> Result<(ReportFormat, PathBuf), String> {
    if let Some((prefix, path)) = spec.split_once(':')
        && let Ok(format) = prefix.parse::<ReportFormat>()
    {
        if path.is_empty() {
            return Err(format!("--output {spec}: no file after '{prefix}:'"));
        }
        return Ok((format, PathBuf::from(path)));
    }
    let path = PathBuf::from(spec);
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => ReportFormat::Json,
        Some("xml") => ReportFormat::Junit,
        Some("sarif") => ReportFormat::Sarif,
        Some("txt") => ReportFormat::Text,
        _ => {
            return Err(format!(
                "--output {spec}: cannot tell the format: end the name in .json, .xml (junit), .sarif or .txt, or write FORMAT:FILE"
            ));
        }
    };
    Ok((format, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        assert_eq!(
            parse_output("junit:out/report").unwrap(),
            (ReportFormat::Junit, PathBuf::from("out/report"))
        );
        assert_eq!(parse_output("r.sarif").unwrap().0, ReportFormat::Sarif);
        assert_eq!(parse_output("r.xml").unwrap().0, ReportFormat::Junit);
        assert_eq!(parse_output("r.json").unwrap().0, ReportFormat::Json);
        assert!(parse_output("report").unwrap_err().contains(".sarif"));
        assert!(parse_output("sarif:").unwrap_err().contains("no file"));
        // A Windows-ish or odd prefix that is not a format is part of the path.
        assert_eq!(parse_output("c:/x.json").unwrap().0, ReportFormat::Json);
    }
}
