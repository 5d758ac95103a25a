//! Which processes the agent watches: explicit pids, a name/command pattern, every process with
//! a probe socket in the known folders, the members of a cgroup or a systemd unit. Each scan
//! reads /proc afresh, so a service that restarts (a new pid under the same pattern or unit)
//! is found again by the next scan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One way of naming targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// This pid only; not followed across a restart (the pid is the identity).
    Pid(u32),
    /// A glob matched against the process name (`comm`) and against the whole command line.
    Match(glob::Pattern),
    /// Every process that has a `<pid>.sock` in the known probe folders (plus these).
    Probes(Vec<PathBuf>),
    /// Members of this cgroup or of any cgroup below it (`/system.slice/x.service`).
    Cgroup(String),
    /// Members of this systemd unit (`NAME` alone means `NAME.service`).
    Unit(String),
}

impl Selector {
    /// `--match PATTERN`: a glob; one without wildcards matches as a substring.
    pub fn pattern(text: &str) -> Result<Selector, String> {
        if text.trim().is_empty() {
            return Err("--match needs a pattern: write e.g. --match 'gunicorn*'".into());
        }
        let glob_text = if text.contains(['*', '?', '[']) {
            text.to_string()
        } else {
            format!("*{text}*")
        };
        glob::Pattern::new(&glob_text)
            .map(Selector::Match)
            .map_err(|e| format!("--match '{text}' is not a valid pattern: {e}"))
    }

    /// `--cgroup PATH`: relative to the cgroup root; a leading `/sys/fs/cgroup` is dropped.
    pub fn cgroup(text: &str) -> Result<Selector, String> {
        let rest = text.trim().trim_start_matches("/sys/fs/cgroup");
        let path = format!("/{}", rest.trim_matches('/'));
        if path == "/" {
            return Err(format!(
                "--cgroup '{text}' names the root cgroup (every process): name a slice or unit, e.g. /system.slice/nginx.service"
            ));
        }
        Ok(Selector::Cgroup(path))
    }

    /// `--unit NAME`.
    pub fn unit(text: &str) -> Result<Selector, String> {
        let name = text.trim();
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "--unit '{text}' is not a unit name: write e.g. --unit nginx or --unit nginx.service"
            ));
        }
        Ok(Selector::Unit(if name.contains('.') {
            name.to_string()
        } else {
            format!("{name}.service")
        }))
    }

    fn needs_proc_walk(&self) -> bool {
        matches!(
            self,
            Selector::Match(_) | Selector::Cgroup(_) | Selector::Unit(_)
        )
    }
}

/// A process the selectors chose, with the labels that name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub pid: u32,
    /// The process name (`comm`, 15 bytes at most).
    pub service: String,
    /// The systemd unit it runs in (`x.service`), or empty.
    pub unit: String,
    /// Chosen by an explicit `--pid` (not followed across restarts).
    pub explicit: bool,
}

/// The processes the selectors choose now, by pid, never `exclude` (the agent itself).
pub fn discover(selectors: &[Selector], exclude: u32) -> Vec<Candidate> {
    let mut chosen: BTreeSet<(u32, bool)> = BTreeSet::new();
    for s in selectors {
        match s {
            Selector::Pid(pid) => {
                chosen.insert((*pid, true));
            }
            Selector::Probes(extra) => {
                for pid in probe_pids(extra) {
                    chosen.insert((pid, false));
                }
            }
            _ => {}
        }
    }
    if selectors.iter().any(Selector::needs_proc_walk) {
        for pid in all_pids() {
            if pid != exclude && walk_matches(selectors, pid) {
                chosen.insert((pid, false));
            }
        }
    }
    let mut out: Vec<Candidate> = Vec::new();
    for (pid, explicit) in chosen {
        if pid == exclude || out.last().is_some_and(|c| c.pid == pid) {
            continue;
        }
        let Some(service) = read_comm(pid) else {
            continue; // gone meanwhile
        };
        out.push(Candidate {
            pid,
            service,
            unit: unit_of_pid(pid),
            explicit,
        });
    }
    out
}

fn walk_matches(selectors: &[Selector], pid: u32) -> bool {
    let mut cmdline: Option<Option<String>> = None;
    let mut cgroup: Option<Option<String>> = None;
    selectors.iter().any(|s| match s {
        Selector::Match(p) => {
            let cmd = cmdline.get_or_insert_with(|| read_cmdline(pid));
            // Kernel threads and zombies have no command line: never a service.
            let Some(cmd) = cmd else { return false };
            p.matches(cmd) || read_comm(pid).is_some_and(|c| p.matches(&c))
        }
        Selector::Cgroup(want) => cgroup
            .get_or_insert_with(|| cgroup_path(pid))
            .as_deref()
            .is_some_and(|have| under(have, want)),
        Selector::Unit(unit) => cgroup
            .get_or_insert_with(|| cgroup_path(pid))
            .as_deref()
            .is_some_and(|have| have.split('/').any(|part| part == unit)),
        Selector::Pid(_) | Selector::Probes(_) => false,
    })
}

/// `have` is `want` or a cgroup below it.
fn under(have: &str, want: &str) -> bool {
    have == want
        || have
            .strip_prefix(want)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The systemd unit of a cgroup path: its innermost `.service` component, else empty.
pub fn unit_of(cgroup: &str) -> String {
    cgroup
        .rsplit('/')
        .find(|p| p.ends_with(".service"))
        .unwrap_or("")
        .to_string()
}

/// The systemd unit `pid` runs in, or empty.
pub fn unit_of_pid(pid: u32) -> String {
    cgroup_path(pid).map_or_else(String::new, |p| unit_of(&p))
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn read_comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

fn read_cmdline(pid: u32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = crate::source::procfs::parse::parse_cmdline(&bytes);
    (!text.is_empty()).then_some(text)
}

/// The process's cgroup path: the v2 line (`0::/…`), else the first hierarchy's.
fn cgroup_path(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup(&text)
}

pub fn parse_cgroup(text: &str) -> Option<String> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let id = parts.next()?;
            let _controllers = parts.next()?;
            Some((id, parts.next()?))
        })
        .collect();
    paths
        .iter()
        .find(|(id, _)| *id == "0")
        .or_else(|| paths.first())
        .map(|(_, p)| p.to_string())
}

/// The folders probes put their sockets in, for every user: what `source::probe` looks in for
/// one pid, widened to all (`/tmp/leakhound-*`, `/run/user/*/leakhound`), plus `extra`.
pub fn probe_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    if let Ok(d) = std::env::var("LEAKHOUND_SOCKET_DIR") {
        dirs.push(d.into());
    }
    for pattern in ["/tmp/leakhound-*", "/run/user/*/leakhound"] {
        if let Ok(paths) = glob::glob(pattern) {
            dirs.extend(paths.flatten());
        }
    }
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Pids with a `<pid>.sock` in the probe folders whose process is alive.
fn probe_pids(extra: &[PathBuf]) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for dir in probe_dirs(extra) {
        pids.extend(socket_pids(&dir));
    }
    pids
}

fn socket_pids(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let pid: u32 = name.to_str()?.strip_suffix(".sock")?.parse().ok()?;
            // Only where the probe source looks for that pid's socket: a `7.sock` written from
            // another pid namespace (a pod) is not node pid 7's probe.
            crate::source::probe::socket_dirs(pid)
                .iter()
                .any(|d| d == dir)
                .then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_without_wildcards_are_substrings() {
        let Selector::Match(p) = Selector::pattern("worker").unwrap() else {
            panic!()
        };
        assert!(p.matches("python3 -m app.worker --queue x"));
        assert!(!p.matches("python3 -m app.web"));
        assert!(Selector::pattern("[").unwrap_err().contains("--match"));
        assert!(Selector::pattern(" ").is_err());
    }

    #[test]
    fn cgroups_and_units_are_normalised() {
        assert_eq!(
            Selector::cgroup("/sys/fs/cgroup/system.slice/").unwrap(),
            Selector::Cgroup("/system.slice".into())
        );
        assert!(Selector::cgroup("/sys/fs/cgroup").is_err());
        assert_eq!(
            Selector::unit("nginx").unwrap(),
            Selector::Unit("nginx.service".into())
        );
        assert_eq!(
            Selector::unit("app.scope").unwrap(),
            Selector::Unit("app.scope".into())
        );
        assert!(Selector::unit("a/b").is_err());
        assert!(under("/system.slice/a.service", "/system.slice"));
        assert!(!under("/system.slicex/a", "/system.slice"));
    }

    #[test]
    fn cgroup_files_v1_and_v2() {
        let v2 = "0::/system.slice/nginx.service\n";
        assert_eq!(
            parse_cgroup(v2).as_deref(),
            Some("/system.slice/nginx.service")
        );
        let v1 = "12:pids:/user.slice\n1:name=systemd:/system.slice/db.service\n";
        assert_eq!(parse_cgroup(v1).as_deref(), Some("/user.slice"));
        assert_eq!(unit_of("/system.slice/nginx.service"), "nginx.service");
        assert_eq!(unit_of("/user.slice/session-1.scope"), "");
        assert_eq!(parse_cgroup("garbage"), None);
    }

    #[test]
    fn finds_itself_by_pid_pattern_and_cgroup_but_never_the_excluded() {
        let me = std::process::id();
        let comm = read_comm(me).unwrap();
        let mine = cgroup_path(me).unwrap();
        let by_pid = discover(&[Selector::Pid(me)], 0);
        assert_eq!(by_pid.len(), 1);
        assert!(by_pid[0].explicit);
        assert_eq!(by_pid[0].service, comm);
        let by_name = discover(&[Selector::pattern(&comm).unwrap()], 0);
        assert!(by_name.iter().any(|c| c.pid == me && !c.explicit));
        if mine != "/" {
            let by_cgroup = discover(&[Selector::cgroup(&mine).unwrap()], 0);
            assert!(by_cgroup.iter().any(|c| c.pid == me), "{mine}");
        }
        assert!(discover(&[Selector::Pid(me)], me).is_empty());
        assert!(discover(&[Selector::unit("no-such-unit-x").unwrap()], 0).is_empty());
    }

    #[test]
    fn probe_sockets_pair_with_live_pids_that_would_look_there() {
        let me = std::process::id();
        // Where the probe source looks for our socket: /tmp/leakhound-<our uid>.
        let ours = PathBuf::from(format!(
            "/tmp/leakhound-{}",
            rustix::process::getuid().as_raw()
        ));
        std::fs::create_dir_all(&ours).unwrap();
        let sock = ours.join(format!("{me}.sock"));
        std::fs::write(&sock, "").unwrap();
        let found = socket_pids(&ours);
        let by_probes = discover(&[Selector::Probes(Vec::new())], 0);
        std::fs::remove_file(&sock).unwrap();
        assert!(found.contains(&me), "{found:?}");
        assert!(by_probes.iter().any(|c| c.pid == me));
        // A folder our process does not use: its `<pid>.sock` is some other namespace's.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(format!("{me}.sock")), "").unwrap();
        std::fs::write(elsewhere.path().join("4294967295.sock"), "").unwrap();
        std::fs::write(elsewhere.path().join("notes.txt"), "").unwrap();
        assert!(socket_pids(elsewhere.path()).is_empty());
    }
}
