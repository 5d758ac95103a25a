//! `close-wait`: sockets pile up in CLOSE_WAIT — the peer closed, this side never did. Each
//! one is a descriptor (and a connection-pool slot) leaked until the process closes it.

use super::{Rule, group};
use crate::config::Config;
use crate::findings::{Finding, Severity};
use crate::history::History;
use crate::model::SocketState;
use serde_json::json;

pub struct CloseWait;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "close-wait";

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
        // A pile this deep is no close in progress: one view (a snapshot) proves it.
        let held = (held_ms as u128) >= config.close_wait_for.as_millis();
        let pile = config.close_wait_pile.max(1);
        if !held && (count as u64) < pile {
            return Vec::new();
        }
        let at_start = since.sockets_in_state(SocketState::CloseWait);
        let examples: Vec<serde_json::Value> = latest
            .sockets
            .iter()
            .filter(|s| s.state == SocketState::CloseWait)
            .take(group::EXAMPLES)
            .map(|s| json!({"fd": s.fd, "local": s.local, "remote": s.remote}))
            .collect();
        let growth = count as i64 - at_start as i64;
        // One finding per process; which endpoint the sockets share says which code to look at.
        let mut patterns: Vec<(String, usize)> = Vec::new();
        for s in latest
            .sockets
            .iter()
            .filter(|s| s.state == SocketState::CloseWait)
        {
            let pattern = group::socket_pattern(s, &latest.sockets);
            match patterns.iter_mut().find(|(p, _)| *p == pattern) {
                Some((_, n)) => *n += 1,
                None => patterns.push((pattern, 1)),
            }
        }
        patterns.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let most = patterns.first().map_or(String::new(), |(p, n)| {
            if *n == count {
                format!(", all {p}")
            } else {
                format!(", {} of them {p}", group::thousands(*n))
            }
        });
        let count_text = group::thousands(count);
        let how = if held {
            format!("for {:.0}s ({growth:+} since)", held_ms as f64 / 1000.0)
        } else {
            format!("at once (close-wait.pile is {pile})")
        };
        let patterns: Vec<serde_json::Value> = patterns
            .iter()
            .map(|(p, n)| json!({"pattern": p, "count": n}))
            .collect();
        vec![
            Finding::new(
                ID,
                Severity::Warning,
                format!("pid:{}", latest.pid),
                format!(
                    "{count_text} sockets in CLOSE_WAIT {how}{most}: the peer closed and this \
                     process never closed its end"
                ),
            )
            .with("count", count)
            .with("growth", growth)
            .with("held_s", (held_ms as f64 / 100.0).round() / 10.0)
            .with("patterns", patterns)
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
    fn one_view_proves_a_pile_over_the_threshold() {
        let c = Config::default();
        let f = CloseWait.check(&history(&[3692]), &c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["count"], 3692);
        assert_eq!(
            f[0].message,
            "3,692 sockets in CLOSE_WAIT at once (close-wait.pile is 100), all tcp to \
             127.0.0.1:8080: the peer closed and this process never closed its end"
        );
        assert_eq!(
            f[0].evidence["patterns"],
            json!([{"pattern": "tcp to 127.0.0.1:8080", "count": 3692}])
        );
        // Under the threshold, one view proves nothing; the threshold moves.
        assert!(CloseWait.check(&history(&[99]), &c).is_empty());
        let mut low = Config::default();
        low.set("close-wait.pile=20").unwrap();
        assert_eq!(CloseWait.check(&history(&[20]), &low).len(), 1);
    }

    #[test]
    fn the_message_names_the_endpoint_most_of_the_pile_shares() {
        let mut h = history(&[0, 4, 4, 4, 4]);
        let mut latest = h.latest().unwrap().clone();
        latest.taken_at_ms += 1000;
        latest.sockets.push(Socket {
            remote: "10.0.0.9:6379".into(),
            ..socket("CLOSE_WAIT", 50000)
        });
        h.push(latest);
        let f = CloseWait.check(&h, &Config::default());
        assert!(
            f[0].message.contains(", 4 of them tcp to 127.0.0.1:8080:"),
            "{}",
            f[0].message
        );
        assert_eq!(
            f[0].evidence["patterns"][1]["pattern"],
            "tcp to 10.0.0.9:6379"
        );
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
