//! `unclosed-resource`: Python reported (ResourceWarning) a socket, file, transport or client
//! session collected without being closed; with the allocation site when tracemalloc is on.
//! Under `check`, also judged at exit: descriptors opened during the run and never closed.

use super::at_exit::{Exit, Held};
use super::group;
use super::probe_common::{events_by_site, innermost};
use super::{ExitRule, Rule};
use crate::config::Config;
use crate::findings::{Finding, Seen, Severity};
use crate::history::History;
use crate::model::{FdKind, ProbeEventKind, Proto, Snapshot, Socket, SocketState};
use std::collections::BTreeSet;

pub struct UnclosedResource;

/// The rule id, as findings and ignore lists name it.
pub const ID: &str = "unclosed-resource";
const SUMMARY: &str =
    "a socket, file, transport or client session was dropped without being closed";

/// Shells (by process name) whose descriptors 10 and up holding files are their own input.
const SHELLS: &[&str] = &["bash", "sh", "dash", "zsh", "ksh", "mksh", "ash", "busybox"];

impl Rule for UnclosedResource {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        SUMMARY
    }

    fn check(&self, history: &History, _config: &Config) -> Vec<Finding> {
        events_by_site(history, ProbeEventKind::UnclosedResource)
            .into_iter()
            .map(|e| {
                let site = innermost(&e.site);
                Finding::new(
                    ID,
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

impl ExitRule for UnclosedResource {
    fn id(&self) -> &'static str {
        ID
    }

    fn summary(&self) -> &'static str {
        SUMMARY
    }

    /// Descriptors that appeared during the run and were still held at its end (see
    /// [`Held`]), except the std streams, a shell's own script and leakhound's probe sockets.
    fn judge_exit(&self, exit: &Exit) -> Vec<Finding> {
        exit.held.map(|held| left_open(&held)).unwrap_or_default()
    }
}

fn left_open(held: &Held) -> Vec<Finding> {
    let Held {
        first,
        last,
        before_last,
        ..
    } = *held;
    let fd_set = |s: &Snapshot| -> BTreeSet<(i32, String)> {
        s.fd_list
            .iter()
            .flatten()
            .map(|f| (f.fd, f.target.clone()))
            .collect()
    };
    let baseline = fd_set(first);
    let still = fd_set(before_last);
    let probe_inodes: BTreeSet<u64> = last
        .sockets
        .iter()
        .filter(|s| held.is_probe_path(&s.local))
        .map(|s| s.inode)
        .collect();
    // A shell reads its script, and every file it sources, through a descriptor it moves to 10
    // or above (bash: 255) and holds while it runs them: the interpreter's, not the script's.
    let shell = [last, before_last, first]
        .iter()
        .filter_map(|s| s.process.as_ref())
        .any(|p| {
            // A `#!/bin/bash` script's name is the script's; its argv[0] is the shell.
            let argv0 = p.cmd.split_whitespace().next().unwrap_or_default();
            let argv0 = argv0.rsplit('/').next().unwrap_or_default();
            SHELLS.contains(&p.name.as_str()) || SHELLS.contains(&argv0)
        });
    let mut out = Vec::new();
    for fd in last.fd_list.iter().flatten() {
        let key = (fd.fd, fd.target.clone());
        if fd.fd <= 2 || baseline.contains(&key) || !still.contains(&key) {
            continue;
        }
        if shell && fd.fd >= 10 && fd.kind == FdKind::File {
            continue;
        }
        if held.is_probe_path(&fd.target) {
            continue;
        }
        let socket = last
            .sockets
            .iter()
            .find(|s| s.fd == Some(fd.fd) || format!("socket:[{}]", s.inode) == fd.target);
        if socket.is_some_and(|s| probe_inodes.contains(&s.inode) || in_process_pair(s, last)) {
            continue;
        }
        let what = match (fd.kind, socket) {
            (FdKind::Socket, Some(s)) => {
                let peer = if s.remote.is_empty() || s.remote.ends_with(":0") {
                    String::new()
                } else {
                    format!(" -> {}", s.remote)
                };
                format!("{:?} socket {}{} ({})", s.proto, s.local, peer, s.state).to_lowercase()
            }
            (FdKind::File, _) => format!("file {}", fd.target),
            (kind, _) => format!("{} {}", kind.as_str(), fd.target),
        };
        let mut finding = Finding::new(
            ID,
            Severity::Warning,
            format!("fd:{}", fd.fd),
            format!(
                "fd {} ({what}) was opened during the run and never closed",
                fd.fd
            ),
        )
        .with("fd", fd.fd)
        .with("kind", fd.kind.as_str())
        .with("target", fd.target.clone())
        .seen_by(Seen::Procfs);
        // Descriptors of one bug share what they are: one file, one peer, pipes.
        let like = match (fd.kind, socket) {
            (FdKind::Socket, Some(s)) => {
                format!("{} ({})", group::socket_pattern(s, &last.sockets), s.state)
            }
            (FdKind::File, _) => format!("file {}", fd.target),
            (kind, _) => kind.as_str().to_string(),
        };
        if let Some(s) = socket {
            finding = finding
                .with("local", s.local.clone())
                .with("remote", s.remote.clone())
                .with("state", s.state.as_str());
        }
        out.push((like, finding));
    }
    group::collapse(out, |like, members| {
        let fds: Vec<i64> = members
            .iter()
            .filter_map(|f| f.evidence["fd"].as_i64())
            .collect();
        let shown: Vec<String> = fds
            .iter()
            .take(group::EXAMPLES)
            .map(i64::to_string)
            .collect();
        let more = if fds.len() > shown.len() { ", …" } else { "" };
        let first = &members[0];
        Finding::new(
            ID,
            first.severity,
            format!("fds:{like}"),
            format!(
                "{} descriptors ({like}) were opened during the run and never closed: fds {}{more}",
                group::thousands(fds.len()),
                shown.join(", ")
            ),
        )
        .with("kind", first.evidence["kind"].clone())
        .with("target", first.evidence["target"].clone())
        .with("pattern", like)
        .with("fds", fds)
        .seen_by(Seen::Procfs)
    })
}

/// A connected, unnamed Unix socket whose twin (the other end of the same `socketpair()`, whose
/// inodes the kernel allocates together) the process also holds: an in-process wake-up channel
/// such as tokio's signal driver or a self-pipe, kept by design for the process's life. It
/// reaches nothing outside the process; a pair leaked per request still shows as leak-growth.
fn in_process_pair(socket: &Socket, snapshot: &Snapshot) -> bool {
    let unnamed_connected = |s: &Socket| {
        s.proto == Proto::Unix && s.local.is_empty() && s.state == SocketState::Connected
    };
    unnamed_connected(socket)
        && snapshot.sockets.iter().any(|other| {
            unnamed_connected(other)
                && (other.inode == socket.inode + 1 || other.inode + 1 == socket.inode)
        })
}

#[cfg(test)]
mod tests {
    use super::super::probe_common::testing::history;
    use super::*;
    use crate::model::{ProbeData, ProbeEvent};

    fn unix(inode: u64, local: &str, state: &str) -> Socket {
        Socket {
            proto: Proto::Unix,
            local: local.into(),
            remote: String::new(),
            state: state.into(),
            inode,
            fd: None,
            rx_queue: 0,
            tx_queue: 0,
        }
    }

    #[test]
    fn a_socketpair_held_whole_is_in_process_and_a_lone_socket_is_not() {
        let pair = Snapshot {
            sockets: vec![unix(100, "", "CONNECTED"), unix(101, "", "CONNECTED")],
            ..Default::default()
        };
        assert!(in_process_pair(&pair.sockets[0], &pair));
        assert!(in_process_pair(&pair.sockets[1], &pair));

        // One end only (the peer is another process), or a named socket beside it: judged.
        let lone = Snapshot {
            sockets: vec![
                unix(100, "", "CONNECTED"),
                unix(101, "/run/x.sock", "CONNECTED"),
            ],
            ..Default::default()
        };
        assert!(!in_process_pair(&lone.sockets[0], &lone));
        let apart = Snapshot {
            sockets: vec![unix(100, "", "CONNECTED"), unix(205, "", "CONNECTED")],
            ..Default::default()
        };
        assert!(!in_process_pair(&apart.sockets[0], &apart));
    }
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

    fn fds(list: &[(i32, FdKind, String)], sockets: Vec<Socket>) -> Snapshot {
        Snapshot {
            pid: 100,
            fd_list: Some(
                list.iter()
                    .map(|(fd, kind, target)| crate::model::Fd {
                        fd: *fd,
                        kind: *kind,
                        target: target.clone(),
                    })
                    .collect(),
            ),
            sockets,
            ..Default::default()
        }
    }

    #[test]
    fn descriptors_left_open_alike_are_one_finding_with_a_count() {
        // 50 pipes, 30 connections to one peer, one file: three findings, not 81.
        let mut list: Vec<(i32, FdKind, String)> = (0..50)
            .map(|i| (10 + i, FdKind::Pipe, format!("pipe:[{}]", 9000 + i)))
            .collect();
        let mut sockets = Vec::new();
        for i in 0..30 {
            list.push((100 + i, FdKind::Socket, format!("socket:[{}]", 500 + i)));
            sockets.push(Socket {
                proto: Proto::Tcp,
                local: format!("127.0.0.1:{}", 40000 + i),
                remote: "127.0.0.1:5432".into(),
                state: "ESTABLISHED".into(),
                inode: 500 + i as u64,
                fd: Some(100 + i),
                rx_queue: 0,
                tx_queue: 0,
            });
        }
        list.push((200, FdKind::File, "/tmp/report.txt".into()));
        let first = fds(&[(0, FdKind::File, "/dev/null".into())], vec![]);
        let exit = fds(&list, sockets);
        let mut f = crate::rules::left_open(&[&first, &exit], Some(&exit), "/tmp/lh", false);
        f.sort_by(|a, b| a.subject.cmp(&b.subject));
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "fd:200",
                "fds:pipe",
                "fds:tcp to 127.0.0.1:5432 (ESTABLISHED)"
            ]
        );
        assert_eq!(f[1].evidence["count"], 50);
        assert_eq!(
            f[1].message,
            "50 descriptors (pipe) were opened during the run and never closed: fds 10, 11, 12, \
             13, 14, …"
        );
        assert_eq!(f[1].evidence["examples"][0], "fd:10");
        assert_eq!(f[2].evidence["count"], 30);
        assert_eq!(f[2].evidence["fds"].as_array().unwrap().len(), 30);
        assert!(f[0].message.contains("/tmp/report.txt"), "{}", f[0].message);
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
