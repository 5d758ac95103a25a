//! `unclosed-resource`: Python reported (ResourceWarning) a socket, file, transport or client
//! session collected without being closed; with the allocation site when tracemalloc is on.

use super::Rule;
use super::probe_common::{events_of, innermost};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::ProbeEventKind;

pub struct UnclosedResource;

impl Rule for UnclosedResource {
    fn id(&self) -> &'static str {
        "unclosed-resource"
    }

    fn summary(&self) -> &'static str {
        "a socket, file, transport or client session was dropped without being closed"
    }

    fn check(&self, history: &History, _config: &Config) -> Vec<Finding> {
        events_of(history, ProbeEventKind::UnclosedResource)
            .into_iter()
            .map(|e| {
                let site = innermost(&e.site);
                Finding::new(
                    self.id(),
                    Severity::Warning,
                    format!("resource:{} at {site}", e.subject),
                    format!(
                        "{} never closed ({}x), {site}: close it or use `with`/`async with`",
                        e.subject, e.count
                    ),
                )
                .with("resource", e.subject.clone())
                .with("count", e.count)
                .with("site", e.site.clone())
                .with("example", e.message.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{ProbeData, ProbeEvent};

    #[test]
    fn fires_per_resource_and_site() {
        let data = ProbeData {
            events: vec![
                ProbeEvent {
                    kind: ProbeEventKind::UnclosedResource,
                    subject: "socket".into(),
                    site: vec!["app.py:5".into()],
                    message: "unclosed <socket.socket fd=7>".into(),
                    count: 4,
                    ..ProbeEvent::default()
                },
                ProbeEvent {
                    kind: ProbeEventKind::NeverAwaited,
                    subject: "x".into(),
                    count: 1,
                    ..ProbeEvent::default()
                },
            ],
            ..ProbeData::default()
        };
        let f = UnclosedResource.check(&history(vec![(0, data)]), &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "resource:socket at app.py:5");
        assert_eq!(f[0].evidence["count"], 4);
        assert!(f[0].evidence["example"].as_str().unwrap().contains("fd=7"));
    }

    #[test]
    fn quiet_without_events_or_probe() {
        let h = history(vec![(0, ProbeData::default())]);
        assert!(UnclosedResource.check(&h, &Config::default()).is_empty());
        assert!(
            UnclosedResource
                .check(&History::default(), &Config::default())
                .is_empty()
        );
    }
}
