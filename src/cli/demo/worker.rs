//! `leakhound __demo-worker`: the misbehaving program `leakhound demo` observes. Its tokio
//! runtime carries the Rust probe (`leakhound_probe`), and it does, on purpose, what the
//! rules look for: descriptors growing under a low soft limit, connections it never closes
//! (CLOSE_WAIT), a child it never reaps (zombie), threads that pile up, a task that waits
//! forever, a blocking call in async code, a starved blocking pool and a task never polled.
//! With `--python` it also starts the Python half (demo.py) with the Python probe.

use std::io::Write;
use std::time::Duration;

const PYTHON_DEMO: &str = include_str!("demo.py");

/// Soft RLIMIT_NOFILE the worker sets on itself so fd-exhaustion fires within seconds.
pub const DEMO_FD_LIMIT: u64 = 256;

fn say(what: &str) {
    let tid = rustix::thread::gettid().as_raw_nonzero();
    let task = tokio::task::try_id().map_or("-".to_string(), |id| id.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "INFO rust tid={tid} task={task} {what}");
}

fn parent_gone(parent: u32) -> bool {
    std::os::unix::process::parent_id() != parent
}

pub fn run(python: bool) -> anyhow::Result<u8> {
    let parent = std::os::unix::process::parent_id();
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(DEMO_FD_LIMIT),
            maximum: limit.maximum,
        },
    );
    if python {
        start_python();
    }
    let runtime = leakhound_probe::runtime()
        .worker_threads(2)
        .max_blocking_threads(2)
        .thread_name("demo-worker")
        .build()?;
    // never-awaited (Rust): a task spawned onto a runtime nobody drives is never polled.
    let mut idle = tokio::runtime::Builder::new_current_thread();
    leakhound_probe::hooks(&mut idle);
    let idle = idle.build()?;
    let _never_polled = idle.spawn(async { say("never printed: this task is never polled") });
    runtime.block_on(async move {
        let _probe = leakhound_probe::builder().max_blocking_threads(2).start();
        tokio::spawn(grow_fds());
        tokio::spawn(close_wait());
        tokio::spawn(stuck());
        tokio::spawn(block_the_loop());
        tokio::spawn(starve_blocking_pool());
        std::thread::spawn(leak_threads);
        // A child exits and is never waited for: a zombie.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(child) = std::process::Command::new("true").spawn() {
            say(&format!(
                "started child {} and will never reap it",
                child.id()
            ));
            std::mem::forget(child);
        }
        while !parent_gone(parent) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    drop(idle);
    Ok(0)
}

fn start_python() {
    let dir = std::env::temp_dir().join(format!("leakhound-demo-{}", std::process::id()));
    let script = dir.join("demo_service.py");
    let started = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&script, PYTHON_DEMO))
        .and_then(|_| std::process::Command::new("python3").arg(&script).spawn());
    match started {
        Ok(child) => {
            say(&format!("started the Python part, pid {}", child.id()));
            // Reaped by the thread below so only the deliberate zombie stays unreaped.
            std::thread::spawn(move || {
                let mut child = child;
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
            });
        }
        Err(e) => say(&format!("Python part not started: {e}")),
    }
}

/// fd-exhaustion and leak-growth: opens /dev/null five times a second and keeps it, up to
/// just under the limit (so the demo never actually hits EMFILE).
async fn grow_fds() {
    let mut kept = Vec::new();
    loop {
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
        if open + 8 < DEMO_FD_LIMIT
            && let Ok(f) = std::fs::File::open("/dev/null")
        {
            kept.push(f);
            if kept.len() % 10 == 0 {
                say(&format!("holding {} files open (never closed)", kept.len()));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// close-wait: accepts connections and never closes them after the peer hangs up.
async fn close_wait() {
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut held = Vec::new();
    for n in 0..20 {
        if let Ok(client) = tokio::net::TcpStream::connect(addr).await
            && let Ok((server_side, _)) = listener.accept().await
        {
            drop(client); // the peer closes…
            held.push(server_side); // …and this side never does
            say(&format!(
                "connection {n} closed by the peer, kept open here"
            ));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    std::future::pending::<()>().await;
}

/// stuck-task: waits for a notification nobody sends.
async fn stuck() {
    say("waiting for a shutdown signal that never comes");
    tokio::sync::Notify::new().notified().await;
}

/// loop-blocked: a synchronous sleep on a runtime worker.
async fn block_the_loop() {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        say("blocking a runtime worker for 300ms");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// pool-starvation: more blocking jobs than the 2-thread blocking pool can take.
async fn starve_blocking_pool() {
    loop {
        let jobs: Vec<_> = (0..6)
            .map(|_| tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(2))))
            .collect();
        for j in jobs {
            let _ = j.await;
        }
    }
}

/// leak-growth (threads): a parked thread every 700 ms, 30 at most.
fn leak_threads() {
    for n in 0..30 {
        let _ = std::thread::Builder::new()
            .name(format!("leaky-{n}"))
            .spawn(|| {
                loop {
                    std::thread::park();
                }
            });
        std::thread::sleep(Duration::from_millis(700));
    }
}
