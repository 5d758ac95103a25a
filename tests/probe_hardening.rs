//! The collector against probes it should not believe or wait for (issue 12): sockets planted
//! by someone else, probes that drip or vanish, and the notes it gives. Every fake probe is a
//! real process (`tests/fixtures/fake_probe.py`) on a real Unix socket; the "attacker" folders
//! and sockets are made by the test itself with the wrong owner or mode.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// A process killed and reaped when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// A target process that has no probe of its own.
fn sleeper() -> Proc {
    Proc(
        Command::new("sleep")
            .arg("120")
            .spawn()
            .expect("sleep runs"),
    )
}

/// Starts the fake probe at `path` (`{pid}` = its own pid) and waits until it listens;
/// returns it and the path it bound.
fn fake_probe(path: &str, mode: &str, hello_pid: Option<u32>, uid: Option<u32>) -> (Proc, PathBuf) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_probe.py");
    // Not the pyenv shim: another uid cannot reach /root.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(path).arg(mode);
    if let Some(pid) = hello_pid {
        cmd.arg(pid.to_string());
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 runs the fake probe");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bound = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("fake probe said {line:?}"))
        .trim()
        .to_string();
    (Proc(child), PathBuf::from(bound))
}

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

fn leakhound(args: &[&str], socket_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(args)
        .env("LEAKHOUND_SOCKET_DIR", socket_dir)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("leakhound runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private folder (0700, ours) for sockets.
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lh-trust-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// `snapshot PID --json` with `dir` as our socket folder, which must succeed; what it printed.
fn snapshot_of(target: &Proc, dir: &Path) -> String {
    let out = leakhound(&["snapshot", &target.pid().to_string(), "--json"], dir);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    all
}

/// The fake probe, serving as itself, at `dir/name`.
fn own_probe(dir: &Path, name: &str, mode: &str) -> (Proc, PathBuf) {
    fake_probe(dir.join(name).to_str().unwrap(), mode, None, None)
}

/// The fake probe, serving as `target`, at `dir/<target pid>.sock`.
fn planted_probe(dir: &Path, target: &Proc) -> (Proc, PathBuf) {
    let path = dir.join(format!("{}.sock", target.pid()));
    fake_probe(path.to_str().unwrap(), "serve", Some(target.pid()), None)
}

/// `snapshot PID --json` with `dir` as our socket folder: succeeds without believing the fake
/// probe there; returns what it printed.
fn snapshot_ignoring(target: &Proc, dir: &Path) -> String {
    let all = snapshot_of(target, dir);
    assert!(
        !all.contains("Task-fake"),
        "the planted probe was believed: {all}"
    );
    all
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

#[test]
fn a_probe_in_a_private_folder_of_the_targets_uid_is_used() {
    // The control for the refusals below: the same fake, trusted, is believed.
    let target = sleeper();
    let dir = private_dir();
    let (_probe, _) = planted_probe(dir.path(), &target);
    let all = snapshot_of(&target, dir.path());
    assert!(all.contains("Task-fake"), "{all}");
}

#[test]
fn a_socket_in_a_folder_writable_by_others_is_ignored_with_a_note() {
    let target = sleeper();
    let dir = private_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join(format!("{}.sock", target.pid()));
    let (_probe, _) = fake_probe(path.to_str().unwrap(), "serve", Some(target.pid()), None);
    let out = leakhound(
        &["snapshot", &target.pid().to_string(), "--json"],
        dir.path(),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains("Task-fake"),
        "the planted probe was believed: {all}"
    );
    assert!(
        all.contains(&format!("ignored probe socket {}", path.display())) && all.contains("0777"),
        "{all}"
    );
}

#[test]
fn a_socket_or_folder_of_another_uid_or_a_linked_folder_is_ignored() {
    if !is_root() {
        eprintln!("skipped: making files of another uid needs root");
        return;
    }
    let target = sleeper();

    // The socket owned by another uid, in a good folder.
    let dir = private_dir();
    let (_probe, path) = planted_probe(dir.path(), &target);
    chown(&path, NOBODY);
    let all = snapshot_ignoring(&target, dir.path());
    assert!(
        all.contains(&format!(
            "ignored probe socket {}: owned by uid {NOBODY}, not the target's uid 0",
            path.display()
        )),
        "{all}"
    );

    // The folder owned by another uid (private, but not the target's).
    let dir = private_dir();
    let (_probe2, _) = planted_probe(dir.path(), &target);
    chown(dir.path(), NOBODY);
    let all = snapshot_ignoring(&target, dir.path());
    assert!(all.contains("its folder is owned by uid 65534"), "{all}");

    // The folder is a symbolic link to a good one.
    let good = private_dir();
    let (_probe3, _) = planted_probe(good.path(), &target);
    let holder = private_dir();
    let link = holder.path().join("link");
    std::os::unix::fs::symlink(good.path(), &link).unwrap();
    let all = snapshot_ignoring(&target, &link);
    assert!(all.contains("is a symbolic link"), "{all}");
}

#[test]
fn a_socket_served_by_a_process_of_another_uid_is_ignored() {
    if !is_root() {
        eprintln!("skipped: running a fake probe as another uid needs root");
        return;
    }
    let target = sleeper();
    let pid = target.pid().to_string();
    // The attacker binds in its own folder; the socket then appears, owned and moded like
    // the target's, in the target's folder: only SO_PEERCRED tells who serves it.
    let theirs = private_dir();
    chown(theirs.path(), NOBODY);
    let planted = theirs.path().join("x.sock");
    let (attacker, _) = fake_probe(
        planted.to_str().unwrap(),
        "serve",
        Some(target.pid()),
        Some(NOBODY),
    );
    let dir = private_dir();
    let path = dir.path().join(format!("{pid}.sock"));
    std::fs::rename(&planted, &path).unwrap();
    chown(&path, 0);
    let all = snapshot_ignoring(&target, dir.path());
    assert!(
        all.contains(&format!(
            "it is served by pid {} of uid {NOBODY}, not the target (pid {pid}, uid 0)",
            attacker.pid()
        )),
        "{all}"
    );
}

#[test]
fn a_probe_that_fell_back_to_its_own_folder_is_found_by_its_listening_socket() {
    // The probe could not use the usual folder and listens in a private folder of another
    // name (PROTOCOL.md); our LEAKHOUND_SOCKET_DIR points at an empty folder.
    let fallback = private_dir();
    let (probe, bound) = own_probe(fallback.path(), "{pid}.sock", "fallback");
    let elsewhere = private_dir();
    let all = snapshot_of(&probe, elsewhere.path());
    assert!(
        all.contains("Task-fake"),
        "{} not found: {all}",
        bound.display()
    );
    // The hello's note reaches the user.
    let note = format!(
        "probe: the usual folder is not private; listening at {}",
        bound.display()
    );
    assert!(all.contains(&note), "{all}");
}

#[test]
fn a_stale_socket_gives_one_note_that_says_nothing_listens() {
    let target = sleeper();
    let dir = private_dir();
    let path = dir.path().join(format!("{}.sock", target.pid()));
    // Bound, then closed without removing the file: what a killed probe leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let all = snapshot_of(&target, dir.path());
    assert!(
        all.contains("refuses connections: nothing listens on it"),
        "{all}"
    );
    assert!(!all.contains("not read this sample"), "{all}");
    assert!(!all.contains("is the program still running"), "{all}");
    assert_eq!(all.matches("no probe found in pid").count(), 1, "{all}");
}

#[test]
fn a_probe_answering_for_another_pid_gives_one_note() {
    let target = sleeper();
    let dir = private_dir();
    let path = dir.path().join(format!("{}.sock", target.pid()));
    // Its hello names pid 1: a socket left from an earlier process with the target's pid.
    let (_probe, _) = fake_probe(path.to_str().unwrap(), "serve", Some(1), None);
    let all = snapshot_ignoring(&target, dir.path());
    assert!(all.contains("it answers for pid 1, not"), "{all}");
    assert!(!all.contains("not read this sample"), "{all}");
    assert_eq!(all.matches("no probe found in pid").count(), 1, "{all}");
}

#[test]
fn unix_targets_say_what_is_wrong_with_the_path() {
    let empty = private_dir();
    let out = leakhound(&["snapshot", "unix:/etc/passwd"], empty.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("/etc/passwd is not a socket (a regular file)"),
        "{all}"
    );
    assert!(!all.contains("still running"), "{all}");

    if !is_root() {
        eprintln!("skipped: the permission case runs leakhound as another uid, which needs root");
        return;
    }
    // Another user's private folder: leakhound run as nobody cannot reach the socket.
    let dir = private_dir();
    let path = dir.path().join("1.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leakhound"))
        .args(["snapshot", &format!("unix:{}", path.display())])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("permission denied"), "{all}");
    assert!(!all.contains("no probe socket at"), "{all}");
}

/// Waits for `child` at most `limit`; kills it if still running. Returns its output and how
/// long it ran.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    signal_after: Option<Duration>,
) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut signalled = false;
    loop {
        if let Some(after) = signal_after
            && !signalled
            && started.elapsed() >= after
        {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            signalled = true;
        }
        if child.try_wait().unwrap().is_some() || started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (out, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leakhound_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakhound"));
    cmd.args(args);
    cmd
}

#[test]
fn a_dripping_probe_costs_one_request_deadline_not_forever() {
    let dir = private_dir();
    let (_probe, path) = own_probe(dir.path(), "drip.sock", "drip");
    let target = format!("unix:{}", path.display());
    // A byte every 0.5 s never trips a per-read timeout; the whole request has 3 s.
    let (out, took) = run_bounded(
        leakhound_cmd(&["snapshot", &target]),
        Duration::from_secs(30),
        None,
    );
    let all = text(&out);
    assert!(took < Duration::from_secs(10), "took {took:?}: {all}");
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("did not answer in whole within"), "{all}");

    // `watch --for 1s` ends on time, and so does Ctrl-C, whatever the probe does.
    let (out, took) = run_bounded(
        leakhound_cmd(&["watch", &target, "--for", "1s", "--interval", "200ms"]),
        Duration::from_secs(30),
        None,
    );
    assert!(
        took < Duration::from_secs(3),
        "--for 1s took {took:?}: {}",
        text(&out)
    );
    assert!(text(&out).contains("ended: time is up"), "{}", text(&out));
    let (out, took) = run_bounded(
        leakhound_cmd(&["watch", &target, "--interval", "200ms"]),
        Duration::from_secs(30),
        Some(Duration::from_millis(1500)),
    );
    assert!(
        took < Duration::from_millis(2500),
        "Ctrl-C at 1.5 s, ended at {took:?}: {}",
        text(&out)
    );
}

#[test]
fn a_listener_that_never_accepts_costs_one_deadline_not_forever() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let dir = private_dir();
    let path = dir.path().join("full.sock");
    let addr = SocketAddrUnix::new(&path).unwrap();
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    // Fill its backlog: a blocking connect would now wait for room that never comes.
    let mut queued = Vec::new();
    for _ in 0..1000 {
        let client = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        if rustix::net::connect(&client, &addr).is_err() {
            break;
        }
        queued.push(client);
    }
    let (out, took) = run_bounded(
        leakhound_cmd(&["snapshot", &format!("unix:{}", path.display())]),
        Duration::from_secs(30),
        None,
    );
    let all = text(&out);
    assert!(took < Duration::from_secs(10), "took {took:?}: {all}");
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("took no connection in time"), "{all}");
}

#[test]
fn watch_of_a_socket_ends_with_probe_gone_when_its_process_is_killed() {
    let dir = private_dir();
    let (mut probe, path) = own_probe(dir.path(), "gone.sock", "serve");
    let target = format!("unix:{}", path.display());
    let mut cmd = leakhound_cmd(&["watch", &target, "--interval", "200ms", "--json"]);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        let _ = probe.0.kill(); // SIGKILL: the socket file stays behind
        let _ = probe.0.wait();
    });
    cmd.env("LEAKHOUND_SOCKET_DIR", dir.path());
    let (out, took) = run_bounded(cmd, Duration::from_secs(30), None);
    killer.join().unwrap();
    let all = text(&out);
    assert!(took < Duration::from_secs(8), "took {took:?}: {all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["ended"], "target_exited", "{all}");
    assert!(
        summary["exit_message"]
            .as_str()
            .unwrap()
            .contains("probe gone"),
        "{all}"
    );
    assert!(all.matches("Connection refused").count() <= 1, "{all}");
}
