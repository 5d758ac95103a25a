//! The probe's socket server, spoken to with a small client of the leakhound/1 protocol.

use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{Client, task};

#[test]
fn serves_tasks_lag_and_metrics_with_safe_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let sockdir = dir.path().join("socks");
    let rt = leakhound_probe::runtime()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let probe = leakhound_probe::builder().socket_dir(&sockdir).start();
        let path = probe.socket_path().expect("socket created").to_path_buf();
        assert_eq!(path, sockdir.join(format!("{}.sock", std::process::id())));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sockdir), 0o700);
        assert_eq!(mode(&path), 0o600);

        // A task stuck on a channel nobody feeds, and one that finished.
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stuck = tokio::spawn(async move {
            let _ = rx.await;
        });
        // Lives past a clock tick, so the finished ring keeps it.
        let done = tokio::spawn(tokio::time::sleep(Duration::from_millis(20)));
        let done_id = done.id().to_string();
        done.await.unwrap();
        // Keep one worker busy for a little over a second: the busy ratio must show it.
        let spin = tokio::spawn(async {
            let end = Instant::now() + Duration::from_millis(1300);
            while Instant::now() < end {
                let slice = Instant::now() + Duration::from_millis(10);
                while Instant::now() < slice {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
        spin.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        let data = tokio::task::spawn_blocking(move || {
            let (mut c, hello) = Client::connect(&path);
            assert_eq!(hello["protocol"], "leakhound/1");
            assert_eq!(hello["runtime"], "tokio");
            assert_eq!(hello["pid"], json!(std::process::id()));
            assert_eq!(c.request("ping")["type"], "pong");
            let err = c.request("frobnicate");
            assert_eq!(err["type"], "error");
            assert!(err["error"].as_str().unwrap().contains("frobnicate"));
            // A malformed line gets an error and the connection stays usable.
            c.writer.write_all(b"{not json\n").unwrap();
            assert_eq!(c.read()["type"], "error");
            c.request("snapshot")["data"].clone()
        })
        .await
        .unwrap();

        assert_eq!(data["runtime"], "tokio");
        let stuck_task = task(&data, &stuck.id().to_string());
        assert_eq!(stuck_task["state"], "idle");
        // Polled once; a task dump (taken once it looks stuck) has tokio poll it again,
        // which is not progress: hidden while the dump is in flight, undone once it came.
        assert_eq!(stuck_task["polls"], 1, "{stuck_task}");
        assert!(
            stuck_task["since_progress_ms"].as_u64().unwrap() >= 200,
            "{stuck_task}"
        );
        assert!(
            stuck_task["spawn_location"]
                .as_str()
                .unwrap()
                .contains("tests/server.rs")
        );
        assert_eq!(task(&data, &done_id)["state"], "done");
        let lp = &data["loops"][0];
        assert!(lp["lag"]["samples"].as_u64().unwrap() >= 2, "{lp}");
        assert_eq!(lp["runtime"]["workers"], 2);
        let busy = lp["runtime"]["busy_ratio"].as_f64().unwrap();
        assert!(
            busy > 0.1 && busy <= 1.0,
            "one of two workers spun for 1.3 s: {busy}"
        );
        assert!(lp["runtime"]["alive_tasks"].as_u64().unwrap() >= 1);
        assert!(lp["runtime"]["blocking_threads"].is_u64(), "{lp}");
        // The probe's own ticker is not reported as a user task.
        assert!(
            data["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| !t["spawn_location"].as_str().unwrap().contains("lag.rs"))
        );
        let missing = data["missing"].as_array().unwrap();
        assert!(
            missing
                .iter()
                .any(|m| m.as_str().unwrap().starts_with("lost-waker"))
        );
        stuck.abort();
        drop(probe);
        assert!(
            !sockdir
                .join(format!("{}.sock", std::process::id()))
                .exists()
        );
    });
}

#[test]
fn answers_while_the_runtime_is_blocked_and_names_the_blocking_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    leakhound_probe::hooks(&mut b);
    let rt = b.build().unwrap();
    let probe = rt.block_on(async {
        leakhound_probe::builder()
            .socket_dir(dir.path().join("socks"))
            .lag_interval(Duration::from_millis(10))
            .start()
    });
    let path = probe.socket_path().unwrap().to_path_buf();
    let blocker = rt.spawn(async {
        std::thread::sleep(Duration::from_millis(1500));
    });
    let blocker_id = blocker.id().to_string();
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        let (mut c, _) = Client::connect(&path);
        let started = Instant::now();
        let data = c.request("snapshot")["data"].clone();
        (data, started.elapsed())
    });
    rt.block_on(async {
        // Drives the blocker: the only thread of this runtime sleeps inside it.
        blocker.await.unwrap();
    });
    let (data, _) = client.join().unwrap();
    let t = task(&data, &blocker_id);
    assert_eq!(t["state"], "running", "{t}");
    let stalls = data["loops"][0]["stalls"].as_array().unwrap();
    assert!(
        stalls.iter().any(
            |s| s["task"] == blocker_id.as_str() && s["duration_ms"].as_f64().unwrap() >= 100.0
        ),
        "{stalls:?}"
    );
    assert!(
        stalls.iter().any(|s| s["task"].is_null()),
        "the ticker saw the runtime blocked: {stalls:?}"
    );
    drop(probe);
}

#[test]
fn hostile_collectors_cannot_hurt_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let rt = leakhound_probe::runtime()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let probe = leakhound_probe::builder()
            .socket_dir(dir.path().join("socks"))
            .start();
        let path = probe.socket_path().unwrap().to_path_buf();
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            // A request line over the 1 MiB cap: refused with an error, connection closed.
            let (mut c, _) = Client::connect(&p);
            let big = vec![b'x'; 2 << 20];
            let _ = c.writer.write_all(&big);
            let reply = c.read();
            assert_eq!(reply["type"], "error", "{reply}");
            assert!(reply["error"].as_str().unwrap().contains("over"), "{reply}");
            let mut rest = String::new();
            assert_eq!(
                c.reader.read_line(&mut rest).unwrap_or(0),
                0,
                "closed after"
            );
            // Collectors that connect and never read or write, past the connection limit.
            let idle: Vec<UnixStream> = (0..20)
                .filter_map(|_| UnixStream::connect(&p).ok())
                .collect();
            std::thread::sleep(Duration::from_millis(200));
            drop(idle);
            // A half line and a vanished collector.
            let mut s = UnixStream::connect(&p).unwrap();
            let _ = s.write_all(b"{\"type\":\"snap");
            drop(s);
        })
        .await
        .unwrap();
        // The runtime kept running all along, and the probe still answers.
        let ticks = tokio::spawn(async {
            let mut n = 0;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                n += 1;
            }
            n
        });
        assert_eq!(ticks.await.unwrap(), 5);
        let data = tokio::task::spawn_blocking(move || {
            let answered = std::time::Instant::now();
            loop {
                // Idle connections above may still hold slots for a moment after closing.
                let (mut c, _) = Client::connect(&path);
                if let Ok(()) = c.writer.write_all(b"{\"type\":\"ping\",\"id\":1}\n") {
                    let mut line = String::new();
                    if c.reader.read_line(&mut line).unwrap_or(0) > 0 {
                        return line;
                    }
                }
                assert!(
                    answered.elapsed() < Duration::from_secs(5),
                    "probe stopped answering"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap();
        assert!(data.contains("pong"), "{data}");
        drop(probe);
    });
}

/// Runs `body` with a probe started in `dir` on a small runtime of its own; the body runs on
/// a blocking thread (it does blocking socket I/O) and gets the probe's socket path, which
/// must be in `dir` when that is a private folder.
fn with_probe(dir: &Path, body: impl FnOnce(&Path) + Send + 'static) {
    let rt = leakhound_probe::runtime()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let probe = leakhound_probe::builder().socket_dir(dir).start();
        let path = probe
            .socket_path()
            .expect("the probe listens")
            .to_path_buf();
        let private = std::fs::symlink_metadata(dir).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.mode() & 0o077 == 0 && m.uid() == rustix::process::getuid().as_raw()
        });
        if private {
            assert_eq!(path.parent(), Some(dir), "a private folder was refused");
        }
        tokio::task::spawn_blocking(move || body(&path))
            .await
            .unwrap();
        drop(probe);
    });
}

#[test]
fn an_untrusted_folder_is_refused_and_the_probe_falls_back() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let victim = root.path().join("victim");
    let planted = root.path().join("planted");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let mut attacks = vec![(victim.clone(), "not private"), (planted, "symbolic link")];
    let other = root.path().join("other");
    if rustix::process::getuid().is_root() {
        std::fs::create_dir(&other).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        attacks.push((other.clone(), "belongs to uid 65534"));
    }
    for (dir, why) in attacks {
        let fallback = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = fallback.clone();
        with_probe(&dir, move |path| {
            let folder = path.parent().unwrap();
            let name = folder.file_name().unwrap().to_string_lossy().into_owned();
            let prefix = format!("leakhound-{}-", rustix::process::getuid().as_raw());
            assert!(
                folder.parent() == Some(Path::new("/tmp")) && name.starts_with(&prefix),
                "{path:?}"
            );
            let meta = std::fs::symlink_metadata(folder).unwrap();
            assert!(meta.is_dir() && meta.mode() & 0o777 == 0o700);
            assert_eq!(meta.uid(), rustix::process::getuid().as_raw());
            let (mut c, hello) = Client::connect(path);
            let note = hello["note"].as_str().unwrap_or_default();
            assert!(
                note.contains(why) && note.contains(&*path.to_string_lossy()),
                "{hello}"
            );
            assert_eq!(c.request("ping")["type"], "pong");
            *seen.lock().unwrap() = Some(folder.to_path_buf());
        });
        // Nothing was made or changed in the refused folder; the fallback went with the probe.
        let sockets = std::fs::read_dir(&victim).unwrap().count()
            + std::fs::read_dir(&other).map(|d| d.count()).unwrap_or(0);
        assert_eq!(sockets, 0, "a socket in the refused folder");
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
        let fallback = fallback.lock().unwrap().take().unwrap();
        assert!(!fallback.exists(), "{fallback:?} left behind");
    }
}

#[test]
fn sockets_of_gone_processes_are_swept_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let leave_socket = |pid: u32| {
        let path = dir.path().join(format!("{pid}.sock"));
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        path
    };
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let gone = leave_socket(dead);
    // A live process that may have made its socket: kept.
    let live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let kept = leave_socket(live.id());
    // A live process that started after its file was made: the pid was reused.
    let reused = leave_socket(std::os::unix::process::parent_id());
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    set_mtime(&reused, old);
    // Not a socket: not the probe's to judge.
    let plain = dir.path().join(format!("{dead}1.sock"));
    std::fs::write(&plain, b"").unwrap();
    with_probe(dir.path(), |_| {});
    assert!(!gone.exists() && !reused.exists());
    assert!(kept.exists() && plain.exists());
    let mut live = live;
    let _ = live.kill();
    let _ = live.wait();
}

fn set_mtime(path: &Path, when: std::time::SystemTime) {
    let secs = when
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn slow_and_silent_collectors_do_not_lock_others_out() {
    let dir = tempfile::tempdir().unwrap();
    with_probe(&dir.path().join("socks"), |path| {
        // Every slot taken: half by collectors that never say anything, half by ones
        // dripping a byte at a time.
        let silent: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(path).unwrap()).collect();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drippers: Vec<_> = (0..4)
            .map(|_| {
                let (c, _) = Client::connect(path);
                let done = done.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut w = c.writer;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        if w.write_all(b"{").is_err() {
                            return Some(started.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    None
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let (mut c, hello) = Client::connect(path);
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(c.request("snapshot")["type"], "snapshot");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(c);
        // A dripping collector is cut off once its line has taken the whole-line deadline.
        std::thread::sleep(Duration::from_secs(3));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let cut: Vec<_> = drippers.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(cut.iter().all(Option::is_some), "{cut:?}");
        drop(silent);
    });
}

#[test]
fn a_deeply_nested_request_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    with_probe(&dir.path().join("socks"), |path| {
        let (mut c, _) = Client::connect(path);
        let mut line = vec![b'['; 100_000];
        line.extend(std::iter::repeat_n(b']', 100_000));
        line.push(b'\n');
        c.writer.write_all(&line).unwrap();
        let reply = c.read();
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("recursion"),
            "{reply}"
        );
        assert_eq!(c.request("ping")["type"], "pong");
    });
}

#[test]
fn a_snapshot_flood_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    with_probe(&dir.path().join("socks"), |path| {
        let (mut c, _) = Client::connect(path);
        let started = Instant::now();
        let n = 60;
        let flood: Vec<u8> = (0..n)
            .flat_map(|i| format!("{{\"type\":\"snapshot\",\"id\":{i}}}\n").into_bytes())
            .collect();
        c.writer.write_all(&flood).unwrap();
        let replies: Vec<Value> = (0..n).map(|_| c.read()).collect();
        let elapsed = started.elapsed().as_secs_f64();
        let ids: Vec<_> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, (0..n).collect::<Vec<_>>());
        let served = replies.iter().filter(|r| r["type"] == "snapshot").count();
        let limited: Vec<_> = replies.iter().filter(|r| r["type"] == "error").collect();
        assert_eq!(served + limited.len(), n as usize);
        // A burst of 10, then 10 a second.
        assert!(
            served >= 10 && served as f64 <= 10.0 + 10.0 * elapsed + 1.0,
            "{served} in {elapsed} s"
        );
        assert!(
            limited
                .iter()
                .all(|r| r["error"].as_str().unwrap().contains("rate limited"))
        );
    });
}

#[test]
fn spawn_named_gives_names_and_the_probe_sees_a_lost_waker() {
    let dir = tempfile::tempdir().unwrap();
    let rt = leakhound_probe::runtime()
        .worker_threads(2)
        .build()
        .unwrap();
    // A spawn_named on a runtime without the probe's hooks: nobody takes its name, and it
    // must not stick to the next task spawned on this thread.
    let plain = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    plain
        .block_on(async { leakhound_probe::spawn_named("on-a-plain-runtime", async {}).await })
        .unwrap();
    // Outside any runtime tokio panics, as tokio::spawn does; nothing is left behind either.
    assert!(
        std::panic::catch_unwind(|| leakhound_probe::spawn_named("nowhere", async {})).is_err()
    );
    rt.block_on(async {
        let probe = leakhound_probe::builder()
            .socket_dir(dir.path().join("socks"))
            .start();
        let path = probe.socket_path().unwrap().to_path_buf();
        let unnamed = tokio::spawn(std::future::pending::<()>());
        // Waits on a channel: its waker is held by the channel.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = leakhound_probe::spawn_named("db-writer", async move {
            let _ = rx.await;
        });
        // Pending, and drops the waker it was given: nothing can wake it again.
        let lost = leakhound_probe::spawn_named(
            "drops-its-waker",
            std::future::poll_fn(|_cx| std::task::Poll::<()>::Pending),
        );
        // Woken by its timer again and again.
        let ticking = leakhound_probe::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        let short = leakhound_probe::spawn_named("short-lived", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        let short_id = short.id().to_string();
        short.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        let snapshots = tokio::task::spawn_blocking(move || {
            let (mut c, _) = Client::connect(&path);
            (0..5)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    c.request("snapshot")["data"].clone()
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for data in &snapshots {
            let get = |h: &tokio::task::JoinHandle<()>| task(data, &h.id().to_string()).clone();
            let (w, l, t, u) = (get(&waiting), get(&lost), get(&ticking), get(&unnamed));
            assert_eq!(w["name"], "db-writer", "{w}");
            assert_eq!(l["name"], "drops-its-waker", "{l}");
            assert_eq!(t["name"], "", "{t}");
            assert_eq!(u["name"], "", "{u}");
            // Named spawns keep the caller's location, not the helper's.
            assert!(
                l["spawn_location"]
                    .as_str()
                    .unwrap()
                    .contains("tests/server.rs"),
                "{l}"
            );
            assert_eq!(l["lost_waker"], true, "{l}");
            assert_eq!(w["lost_waker"], false, "{w}");
            assert_eq!(t["lost_waker"], false, "{t}");
            // A plain tokio::spawn is not tracked: never reported lost.
            assert_eq!(u["lost_waker"], false, "{u}");
            let s = task(data, &short_id);
            assert_eq!(
                (s["state"].as_str(), s["name"].as_str()),
                (Some("done"), Some("short-lived"))
            );
        }
        // Once its sender goes, the waiting task finishes and leaves the list.
        drop(tx);
        waiting.await.unwrap();
        for h in [lost, ticking, unnamed] {
            h.abort();
        }
        drop(probe);
    });
}
