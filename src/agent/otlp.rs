//! `--otlp ENDPOINT` (cargo feature `otlp`): findings as OTLP log records and the same metrics
//! as `/metrics`, over OTLP/HTTP with protobuf bodies (`ENDPOINT/v1/logs`, `ENDPOINT/v1/metrics`).
//!
//! The metrics are observable instruments whose callbacks read the shared [`Exposition`] at
//! each export (every sampling interval), so OTLP and `/metrics` always agree.

use super::prometheus::{COUNTERS, GAUGES, Shared, TargetLabels, samples};
use crate::findings::{Finding, Severity};
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity as OtelSeverity};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_otlp::{LogExporter, MetricExporter, WithExportConfig};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use std::time::Duration;

pub struct Otlp {
    logs: SdkLoggerProvider,
    logger: SdkLogger,
    meters: SdkMeterProvider,
}

/// `http://host:4318` → the signal's URL.
fn signal_url(endpoint: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", endpoint.trim_end_matches('/'))
}

impl Otlp {
    /// Starts the exporters; metrics are sent every `interval`.
    pub fn start(endpoint: &str, shared: Shared, interval: Duration) -> anyhow::Result<Otlp> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!(
                "--otlp '{endpoint}' is not an http(s) URL: write e.g. --otlp http://127.0.0.1:4318"
            );
        }
        let log_exporter = LogExporter::builder()
            .with_http()
            .with_endpoint(signal_url(endpoint, "logs"))
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp {endpoint}: {e}"))?;
        let logs = SdkLoggerProvider::builder()
            .with_batch_exporter(log_exporter)
            .build();
        let logger = logs.logger("leakhound");
        let metric_exporter = MetricExporter::builder()
            .with_http()
            .with_endpoint(signal_url(endpoint, "metrics"))
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp {endpoint}: {e}"))?;
        let reader = PeriodicReader::builder(metric_exporter)
            .with_interval(interval.max(Duration::from_secs(1)))
            .build();
        let meters = SdkMeterProvider::builder().with_reader(reader).build();
        let meter = meters.meter("leakhound");
        for (name, help) in GAUGES {
            let shared = shared.clone();
            meter
                .f64_observable_gauge(*name)
                .with_description(*help)
                .with_callback(move |obs| {
                    for s in current(&shared, name) {
                        obs.observe(s.0, &s.1);
                    }
                })
                .build();
        }
        for (name, help) in COUNTERS {
            let shared = shared.clone();
            meter
                .u64_observable_counter(*name)
                .with_description(*help)
                .with_callback(move |obs| {
                    for s in current(&shared, name) {
                        obs.observe(s.0 as u64, &s.1);
                    }
                })
                .build();
        }
        Ok(Otlp {
            logs,
            logger,
            meters,
        })
    }

    /// One log record for a finding that fired.
    pub fn finding(&self, who: &TargetLabels, f: &Finding) {
        let mut record = self.logger.create_log_record();
        record.set_body(AnyValue::from(f.message.clone()));
        let (number, text) = match f.severity {
            Severity::Info => (OtelSeverity::Info, "INFO"),
            Severity::Warning => (OtelSeverity::Warn, "WARN"),
            Severity::Error => (OtelSeverity::Error, "ERROR"),
        };
        record.set_severity_number(number);
        record.set_severity_text(text);
        record.set_event_name("leakhound.finding");
        record.add_attribute("leakhound.rule", f.rule.clone());
        record.add_attribute("leakhound.subject", f.subject.clone());
        record.add_attribute("service", who.service.clone());
        record.add_attribute("process.pid", i64::from(who.pid));
        record.add_attribute("unit", who.unit.clone());
        if let Ok(evidence) = serde_json::to_string(&f.evidence) {
            record.add_attribute("leakhound.evidence", evidence);
        }
        self.logger.emit(record);
    }

    /// Sends what is pending and stops the exporters.
    pub fn shutdown(self) {
        let _ = self.logs.force_flush();
        let _ = self.meters.force_flush();
        let _ = self.logs.shutdown();
        let _ = self.meters.shutdown();
    }
}

/// The samples of one metric now, as OTLP values and attributes.
fn current(shared: &Shared, name: &str) -> Vec<(f64, Vec<KeyValue>)> {
    let e = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
    samples(&e)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| {
            let attrs = s
                .labels
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v))
                .collect();
            (s.value, attrs)
        })
        .collect()
}
