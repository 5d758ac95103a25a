//! `close-wait`: sockets pile up in CLOSE_WAIT — the peer closed, this side never did. Each
//! one is a descriptor (and a connection-pool slot) leaked until the process closes it.

use super::Rule;
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::SocketState;
use serde_json::json;

pub struct CloseWait;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "close-wait";

/// How many stuck sockets the evidence names.
const EXAMPLES: usize = 5;

impl Rule for CloseWait {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        "sockets pile up in CLOSE_WAIT: the peer closed, this side never did"
    }

    fn check(&self, history: &History, config: &Config) -> Vec<Finding> {
        let Some(latest) = history.latest() else {
            return Vec::new();
        };
        let min = config.close_wait_min.max(1) as usize;
        let count = latest.sockets_in_state(SocketState::CloseWait);
        if count < min {
            return Vec::new();
        }
        // How long the pile has been at least `min` deep without a break, newest backwards.
        let since = history
            .iter()
            .rev()
            .take_while(|s| s.sockets_in_state(SocketState::CloseWait) >= min)
            .last()
            .unwrap_or(latest);
        let held_ms = latest.taken_at_ms.saturating_sub(since.taken_at_ms);
        if (held_ms as u128) < config.close_wait_for.as_millis() {
            return Vec::new();
        }
        let at_start = since.sockets_in_state(SocketState::CloseWait);
        let examples: Vec<serde_json::Value> = latest
            .sockets
            .iter()
            .filter(|s| s.state == SocketState::CloseWait)
            .take(EXAMPLES)
            .map(|s| json!({"fd": s.fd, "local": s.local, "remote": s.remote}))
            .collect();
        let growth = count as i64 - at_start as i64;
        vec![
            Finding::new(
                ID,
                Severity::Warning,
                format!("pid:{}", latest.pid),
                format!(
                    "{count} sockets in CLOSE_WAIT for {:.0}s ({growth:+} since): the peer closed \
                     and this process never closed its end",
                    held_ms as f64 / 1000.0
                ),
            )
            .with("count", count)
            .with("growth", growth)
            .with("held_s", (held_ms as f64 / 100.0).round() / 10.0)
            .with("examples", examples),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Proto, Snapshot, Socket};

    fn socket(state: &str, port: u16) -> Socket {
        Socket {
            proto: Proto::Tcp,
            local: format!("127.0.0.1:{port}"),
            remote: "127.0.0.1:8080".into(),
            state: state.into(),
            inode: port as u64,
            fd: Some(port as i32),
            rx_queue: 0,
            tx_queue: 0,
        }
    }

    fn history(counts: &[usize]) -> History {
        let mut h = History::default();
        for (i, &n) in counts.iter().enumerate() {
            let mut sockets: Vec<Socket> = (0..n)
                .map(|p| socket("CLOSE_WAIT", 40000 + p as u16))
                .collect();
            sockets.push(socket("ESTABLISHED", 1));
            h.push(Snapshot {
                taken_at_ms: i as u64 * 1000,
                pid: 5,
                sockets,
                ..Default::default()
            });
        }
        h
    }

    #[test]
    fn fires_when_the_pile_holds_long_enough() {
        let f = CloseWait.check(&history(&[0, 3, 4, 6, 8]), &Config::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["count"], 8);
        assert_eq!(f[0].evidence["growth"], 5);
        assert_eq!(f[0].evidence["held_s"], 3.0);
        assert_eq!(f[0].evidence["examples"].as_array().unwrap().len(), 5);
        assert_eq!(f[0].evidence["examples"][0]["remote"], "127.0.0.1:8080");
    }

    #[test]
    fn does_not_fire_below_the_minimum_or_too_briefly() {
        let c = Config::default();
        assert!(
            CloseWait
                .check(&history(&[2, 2, 2, 2, 2, 2]), &c)
                .is_empty(),
            "under min"
        );
        assert!(
            CloseWait.check(&history(&[0, 0, 0, 5, 5]), &c).is_empty(),
            "only 1 s"
        );
        // A pile that drained in between restarts the clock.
        assert!(
            CloseWait
                .check(&history(&[5, 5, 5, 0, 5, 5]), &c)
                .is_empty()
        );
        assert!(CloseWait.check(&History::default(), &c).is_empty());
    }
}
