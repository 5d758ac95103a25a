//! LeakGuard fails on each kind of leak and passes on clean code. One test function runs the
//! scenarios in turn: the guard counts process-wide threads, so parallel tests would be seen.

use leakhound_probe::LeakGuard;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

/// The panic message of `f`, or `None` when it did not panic.
fn panic_text(f: impl FnOnce()) -> Option<String> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn guard() -> LeakGuard {
    LeakGuard::new().settle(Duration::from_millis(300))
}

#[test]
fn leakguard_catches_each_leak_and_passes_clean_code() {
    // Clean: a joined thread, a closed file, a waited child.
    let g = guard();
    std::thread::spawn(|| ()).join().unwrap();
    drop(std::fs::File::open("/proc/self/status").unwrap());
    std::process::Command::new("true").status().unwrap();
    g.assert_clean();

    // A thread that outlives the guard (parked until we release it).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let g = guard();
    let t = std::thread::Builder::new()
        .name("leaky-worker".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .unwrap();
    let text = panic_text(|| g.assert_clean()).expect("a leaked thread must fail");
    assert!(
        text.contains("threads: 1 new") && text.contains("leaky-worker"),
        "{text}"
    );
    // … unless ignored by name.
    let g = guard().ignore_thread("leaky");
    g.assert_clean();
    drop(tx);
    t.join().unwrap();

    // A descriptor left open.
    let g = guard();
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let text = panic_text(|| g.assert_clean()).expect("a leaked fd must fail");
    assert!(
        text.contains("fds: 1 new") && text.contains("/proc/"),
        "{text}"
    );
    guard().ignore_fd("/proc/").assert_clean();
    drop(file);

    // A child never waited for.
    let g = guard();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let text = panic_text(|| g.assert_clean()).expect("a leaked child must fail");
    assert!(
        text.contains("child processes: 1 new") && text.contains(&format!("pid={}", child.id())),
        "{text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // A tokio task still alive, named by its spawn location.
    let rt = leakhound_probe::runtime()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let g = guard();
        let done = tokio::spawn(async {});
        done.await.unwrap();
        g.assert_clean();

        let g = guard();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let leaked = tokio::spawn(async move {
            let _ = rx.await;
        });
        let text = panic_text(|| g.assert_clean()).expect("a leaked task must fail");
        assert!(
            text.contains("tokio tasks: 1 still alive")
                && text.contains(&format!("task={}", leaked.id()))
                && text.contains("tests/leakguard.rs"),
            "{text}"
        );
        guard()
            .ignore_task_location("tests/leakguard.rs")
            .assert_clean();
        drop(tx);
        leaked.await.unwrap();
    });
}
