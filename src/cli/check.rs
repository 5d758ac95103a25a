//! `leakhound check`: flags + leakhound.toml → [`CheckOptions`], run, write the reports.

use super::CheckArgs;
use crate::check::ignore::Ignore;
use crate::check::settings::Settings;
use crate::check::{CheckOptions, CheckReport, ReportFormat, parse_output};
use crate::config::Config;
use crate::findings::Severity;
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
        ignores,
    };
    let report = crate::check::run(&options)?;
    for (format, path) in &outputs {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, render(*format, &report))
            .map_err(|e| anyhow::anyhow!("cannot write the report {}: {e}", path.display()))?;
    }
    print!("{}", render(args.format, &report));
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
