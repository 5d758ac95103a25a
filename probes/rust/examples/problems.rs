//! A tokio service with one problem on a switch, for trying leakhound (and for its tests).
//!
//! `problems MODE` runs until killed; MODE is one of
//! - `clean`: workers fed by a producer every 100 ms; nothing wrong;
//! - `stuck`: a task awaits a channel nobody ever sends on;
//! - `never-polled`: a task spawned on a runtime nobody drives, so it is never polled;
//! - `blocking`: a task calls `std::thread::sleep` (a blocking call inside async code);
//! - `pool`: six `spawn_blocking` jobs on a blocking pool of two threads;
//! - `semaphore`: one task holds the only permit forever, three wait for it.
//!
//! Every log line carries `tid=` and `task=` (leakhound-probe's `WithIds` formatter).
//! `leakhound watch PID` shows the matching finding; `LEAKHOUND_SOCKET_DIR` says where the
//! probe listens.

use std::time::Duration;
use tracing_subscriber::prelude::*;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "clean".into());
    let known = [
        "clean",
        "stuck",
        "never-polled",
        "blocking",
        "pool",
        "semaphore",
    ];
    if !known.contains(&mode.as_str()) {
        eprintln!(
            "problems: unknown mode '{mode}': use one of {}",
            known.join(", ")
        );
        std::process::exit(2);
    }
    tracing_subscriber::registry()
        // INFO: tokio's own TRACE events (its `tracing` feature is on here) stay out.
        .with(
            leakhound_probe::fmt_layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .init();
    let max_blocking = if mode == "pool" { 2 } else { 512 };
    let rt = leakhound_probe::runtime()
        .worker_threads(2)
        .max_blocking_threads(max_blocking)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _probe = leakhound_probe::builder()
            .max_blocking_threads(max_blocking)
            .start();
        // Kept alive for the program's life: dropping them would end the problems.
        let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        match mode.as_str() {
            "clean" => {}
            "stuck" => {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                keep.push(Box::new(tx));
                tokio::spawn(async move {
                    tracing::info!("stuck task: waiting for a message that never comes");
                    let _ = rx.await;
                });
            }
            "never-polled" => {
                // A runtime built and spawned onto but never driven (no block_on, no worker).
                let mut b = tokio::runtime::Builder::new_current_thread();
                leakhound_probe::hooks(&mut b);
                let idle = b.build().expect("runtime");
                let h = idle.spawn(async { tracing::info!("never printed") });
                tracing::info!("spawned=task:{} on a runtime nobody drives", h.id());
                keep.push(Box::new(h));
                keep.push(Box::new(idle));
            }
            "blocking" => {
                tokio::spawn(async {
                    loop {
                        tracing::info!("blocking task: std::thread::sleep inside async code");
                        std::thread::sleep(Duration::from_millis(600));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            }
            "pool" => {
                for job in 0..6 {
                    tokio::task::spawn_blocking(move || {
                        tracing::info!(job, "blocking job running");
                        std::thread::sleep(Duration::from_secs(3600));
                    });
                }
            }
            "semaphore" => {
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
            _ => unreachable!("checked above"),
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
    });
}
