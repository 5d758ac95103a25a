//! A tokio service with one problem on a switch, for trying leakhound (and for its tests).
//!
//! `problems MODE [--runtime HOW]` runs until killed; MODE is one of
//! - `clean`: workers fed by a producer every 100 ms; nothing wrong;
//! - `stuck`: a task (named `waits-for-config`) awaits a channel nobody ever sends on;
//! - `lost-waker`: a task (named `drops-its-waker`) is pending and keeps no waker;
//! - `never-polled`: a task spawned on a runtime nobody drives, so it is never polled;
//! - `blocking`: a task calls `std::thread::sleep` (a blocking call inside async code);
//! - `pool`: four more `spawn_blocking` jobs than the blocking pool has threads;
//! - `semaphore`: one task holds the only permit forever, three wait for it;
//! - `all`: `stuck`, `blocking` and `pool` at once.
//!
//! HOW is how the runtime is made:
//! - `hand` (default): `leakhound_probe::runtime()` (hooks on a hand-built runtime), two
//!   workers, a blocking pool of 2, the program's own subscriber with `WithIds`;
//! - `attribute`: `#[leakhound_probe::main(worker_threads = 2, max_blocking_threads = 2)]`,
//!   nothing else: the probe starts itself and installs the log subscriber;
//! - `tokio-main`: `#[tokio::main(worker_threads = 2)]` and `leakhound_probe::init()`, as a
//!   tokio service is usually written (no task hooks; tokio's default pool of 512).
//!
//! Every log line carries `tid=` and `task=`. `leakhound watch PID` shows the matching
//! finding; `LEAKHOUND_SOCKET_DIR` says where the probe listens.

use std::time::Duration;
use tracing_subscriber::prelude::*;

const MODES: [&str; 8] = [
    "clean",
    "stuck",
    "lost-waker",
    "never-polled",
    "blocking",
    "pool",
    "semaphore",
    "all",
];
const RUNTIMES: [&str; 3] = ["hand", "attribute", "tokio-main"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_else(|| "clean".into());
    let how = match args.get(1).map(String::as_str) {
        None => "hand".to_string(),
        Some("--runtime") => args.get(2).cloned().unwrap_or_default(),
        Some(other) => {
            eprintln!("problems: unexpected argument '{other}': use MODE [--runtime HOW]");
            std::process::exit(2);
        }
    };
    if !MODES.contains(&mode.as_str()) {
        eprintln!(
            "problems: unknown mode '{mode}': use one of {}",
            MODES.join(", ")
        );
        std::process::exit(2);
    }
    match how.as_str() {
        "hand" => hand_built(mode),
        "attribute" => with_attribute(mode),
        "tokio-main" => with_tokio_main(mode),
        _ => {
            eprintln!(
                "problems: unknown runtime '{how}': use one of {}",
                RUNTIMES.join(", ")
            );
            std::process::exit(2);
        }
    }
}

fn hand_built(mode: String) {
    tracing_subscriber::registry()
        // INFO: tokio's own TRACE events (its `tracing` feature is on here) stay out.
        .with(
            leakhound_probe::fmt_layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .init();
    let rt = leakhound_probe::runtime()
        .worker_threads(2)
        .max_blocking_threads(2)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _probe = leakhound_probe::builder().max_blocking_threads(2).start();
        serve(mode, 2).await
    });
}

#[leakhound_probe::main(worker_threads = 2, max_blocking_threads = 2)]
async fn with_attribute(mode: String) {
    serve(mode, 2).await
}

#[tokio::main(worker_threads = 2)]
async fn with_tokio_main(mode: String) {
    let _probe = leakhound_probe::init();
    serve(mode, 512).await
}

/// Starts the problems of `mode` and the healthy background work, then runs forever.
/// `max_blocking` is the runtime's blocking-pool size.
async fn serve(mode: String, max_blocking: usize) {
    // Kept alive for the program's life: dropping them would end the problems.
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let all = mode == "all";
    if mode == "stuck" || all {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        keep.push(Box::new(tx));
        // Named the way the probe can see: spawn_named is Builder::name plus telling the probe.
        leakhound_probe::spawn_named("waits-for-config", async move {
            tracing::info!("stuck task: waiting for a message that never comes");
            let _ = rx.await;
        });
    }
    if mode == "lost-waker" {
        // Pending and keeps no waker: nothing can ever wake it. The probe counts the wakers
        // of tasks spawned through leakhound_probe::spawn / spawn_named.
        leakhound_probe::spawn_named(
            "drops-its-waker",
            std::future::poll_fn(|_cx| {
                tracing::info!("lost-waker task: pending without keeping its waker");
                std::task::Poll::<()>::Pending
            }),
        );
    }
    if mode == "never-polled" {
        // A runtime built and spawned onto but never driven (no block_on, no worker).
        let mut b = tokio::runtime::Builder::new_current_thread();
        leakhound_probe::hooks(&mut b);
        let idle = b.build().expect("runtime");
        let h = idle.spawn(async { tracing::info!("never printed") });
        tracing::info!("spawned=task:{} on a runtime nobody drives", h.id());
        keep.push(Box::new(h));
        keep.push(Box::new(idle));
    }
    if mode == "blocking" || all {
        tokio::spawn(async {
            loop {
                tracing::info!("blocking task: std::thread::sleep inside async code");
                std::thread::sleep(Duration::from_millis(600));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    if mode == "pool" || all {
        for job in 0..max_blocking + 4 {
            tokio::task::spawn_blocking(move || {
                if job < 4 {
                    tracing::info!(job, "blocking job running");
                }
                std::thread::sleep(Duration::from_secs(3600));
            });
        }
    }
    if mode == "semaphore" {
        let sem = leakhound_probe::TrackedSemaphore::new("db-connections", 1);
        let holder = sem.clone();
        tokio::spawn(async move {
            let _permit = holder.acquire().await;
            tracing::info!("holding the only permit forever");
            std::future::pending::<()>().await;
        });
        for i in 0..3 {
            let sem = sem.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tracing::info!(waiter = i, "waiting for a permit");
                let _permit = sem.acquire().await;
            });
        }
    }
    // Healthy background work in every mode: a producer and two consumers.
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(16);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    for worker in 0..2 {
        let rx = rx.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), async {
                    rx.lock().await.recv().await
                })
                .await;
                if let Ok(Some(n)) = next
                    && n % 20 == 0
                {
                    tracing::info!(worker, n, "handled");
                }
            }
        });
    }
    tokio::spawn(async move {
        for n in 0.. {
            if tx.send(n).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tracing::info!(mode = %mode, pid = std::process::id(), "problems ready");
    std::future::pending::<()>().await;
    drop(keep);
}
