//! One bug, one finding: many instances that share a site (1,392 tasks stuck at the same
//! `await`, a hundred zombies of one parent) are reported once, with a count and a few
//! examples, instead of once each. A lone instance keeps its own finding as it was.

use crate::findings::Finding;
use crate::model::{Proto, Socket, SocketState};

/// How many instances a grouped finding names as examples.
pub const EXAMPLES: usize = 5;

/// Groups `(key, finding)` pairs by key, in the order keys are first seen. A key seen once
/// yields its finding unchanged; a key seen `n >= 2` times yields `merge(key, members)`, to
/// which `count` (n) and `examples` (the first [`EXAMPLES`] members' subjects) are added,
/// unless `merge` put its own there.
pub fn collapse(
    instances: impl IntoIterator<Item = (String, Finding)>,
    merge: impl Fn(&str, &[Finding]) -> Finding,
) -> Vec<Finding> {
    let mut groups: Vec<(String, Vec<Finding>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (key, finding) in instances {
        match index.get(&key) {
            Some(&i) => {
                let (_, members): &mut (String, Vec<Finding>) = &mut groups[i];
                members.push(finding);
            }
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![finding]));
            }
        }
    }
    groups
        .into_iter()
        .map(|(key, mut members)| {
            if members.len() == 1 {
                return members.pop().expect("one member");
            }
            let examples: Vec<String> = members
                .iter()
                .take(EXAMPLES)
                .map(|f| f.subject.clone())
                .collect();
            let severity = members.iter().map(|f| f.severity).max();
            let mut merged = merge(&key, &members);
            for (k, v) in [
                ("count", members.len().into()),
                ("examples", examples.into()),
            ] {
                merged.evidence.entry(k.to_string()).or_insert(v);
            }
            if let Some(severity) = severity {
                merged.severity = merged.severity.max(severity);
            }
            merged
        })
        .collect()
}

/// The endpoint the sockets of one bug share, the varying port left out: `tcp inbound to
/// 0.0.0.0:8080` (a server's accepted connections: one local address, a port per client, known
/// by the listening socket on that port among `all`), `tcp to 10.0.0.5:5432` (a client's: one
/// peer, an ephemeral local port each), `tcp 127.0.0.1:9000` (no peer), `unix /run/x.sock`.
pub fn socket_pattern(s: &Socket, all: &[Socket]) -> String {
    if s.proto == Proto::Unix {
        return match s.local.as_str() {
            "" => "unix (unnamed)".to_string(),
            path => format!("unix {path}"),
        };
    }
    let proto = format!("{:?}", s.proto).to_lowercase();
    let port = |addr: &str| addr.rsplit_once(':').map(|(_, p)| p.to_string());
    let listening = all.iter().any(|l| {
        l.state == SocketState::Listen && l.proto != Proto::Unix && port(&l.local) == port(&s.local)
    });
    if s.remote.is_empty() || s.remote.ends_with(":0") {
        format!("{proto} {}", s.local)
    } else if listening {
        format!("{proto} inbound to {}", s.local)
    } else {
        format!("{proto} to {}", s.remote)
    }
}

/// `1392` as `1,392`: counts people read at a glance.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Severity;

    fn f(subject: &str, severity: Severity) -> Finding {
        Finding::new("r", severity, subject, subject)
    }

    #[test]
    fn a_lone_instance_is_unchanged_and_a_shared_key_is_one_finding() {
        let out = collapse(
            vec![
                ("a".to_string(), f("task:1", Severity::Warning)),
                ("b".to_string(), f("task:2", Severity::Warning)),
                ("a".to_string(), f("task:3", Severity::Error)),
                ("a".to_string(), f("task:4", Severity::Warning)),
            ],
            |key, members| {
                Finding::new(
                    "r",
                    Severity::Warning,
                    format!("at:{key}"),
                    format!("{} at {key}", members.len()),
                )
            },
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].subject, "at:a");
        assert_eq!(out[0].message, "3 at a");
        assert_eq!(out[0].evidence["count"], 3);
        assert_eq!(
            out[0].evidence["examples"],
            serde_json::json!(["task:1", "task:3", "task:4"])
        );
        // The worst member's severity carries over.
        assert_eq!(out[0].severity, Severity::Error);
        assert_eq!(out[1], f("task:2", Severity::Warning));
    }

    #[test]
    fn examples_are_capped() {
        let out = collapse(
            (0..100).map(|i| ("k".to_string(), f(&format!("task:{i}"), Severity::Warning))),
            |_, _| Finding::new("r", Severity::Warning, "at:k", "m"),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence["count"], 100);
        assert_eq!(
            out[0].evidence["examples"].as_array().unwrap().len(),
            EXAMPLES
        );
    }

    fn tcp(local: &str, remote: &str, state: &str) -> Socket {
        Socket {
            proto: Proto::Tcp,
            local: local.into(),
            remote: remote.into(),
            state: state.into(),
            inode: 1,
            fd: None,
            rx_queue: 0,
            tx_queue: 0,
        }
    }

    #[test]
    fn sockets_of_one_server_or_one_peer_share_a_pattern() {
        let listen = tcp("0.0.0.0:8080", "0.0.0.0:0", "LISTEN");
        let accepted = tcp("127.0.0.1:8080", "127.0.0.1:51234", "CLOSE_WAIT");
        let all = vec![listen.clone(), accepted.clone()];
        assert_eq!(
            socket_pattern(&accepted, &all),
            "tcp inbound to 127.0.0.1:8080"
        );
        let outbound = tcp("127.0.0.1:51234", "10.0.0.5:5432", "CLOSE_WAIT");
        assert_eq!(socket_pattern(&outbound, &all), "tcp to 10.0.0.5:5432");
        assert_eq!(socket_pattern(&listen, &all), "tcp 0.0.0.0:8080");
        // Without the listening socket in view, an accepted one reads as its peer.
        assert_eq!(
            socket_pattern(&accepted, std::slice::from_ref(&accepted)),
            "tcp to 127.0.0.1:51234"
        );
    }

    #[test]
    fn thousands_separates_groups_of_three() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1392), "1,392");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
