//! Test fixture: a tokio service instrumented with console-subscriber (as services that use
//! tokio-console are), with a few problems leakhound must find through the console endpoint.
//!
//! `console_app PORT` serves console-api on 127.0.0.1:PORT and runs until killed:
//! - a task whose future never keeps a waker (lost waker: nothing can ever wake it),
//! - a task stuck on a oneshot whose sender is kept but never used,
//! - a semaphore with one permit held forever and two tasks waiting for it.
//!
//! Log lines carry `tid=` and `task=` through leakhound-probe's formatter, beside the
//! console layer.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tracing_subscriber::prelude::*;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: console_app PORT");
    let console = console_subscriber::ConsoleLayer::builder()
        .server_addr(([127, 0, 0, 1], port))
        .publish_interval(Duration::from_millis(200))
        .retention(Duration::from_secs(5))
        .spawn();
    tracing_subscriber::registry()
        .with(console)
        .with(
            tracing_subscriber::fmt::layer()
                .map_event_format(leakhound_probe::WithIds)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .init();
    // Built after the subscriber so the console sees every task (console issue #185).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::task::Builder::new()
            .name("lost-waker")
            .spawn(std::future::poll_fn(|_| Poll::<()>::Pending))
            .expect("spawn");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::task::Builder::new()
            .name("stuck-on-channel")
            .spawn(async move {
                tracing::info!("waiting for a message that never comes");
                let _ = rx.await;
            })
            .expect("spawn");
        let sem = Arc::new(tokio::sync::Semaphore::new(1));
        let held = sem.clone().acquire_owned().await.expect("permit");
        for i in 0..2 {
            let sem = sem.clone();
            tokio::task::Builder::new()
                .name(&format!("waiter-{i}"))
                .spawn(async move {
                    let _p = sem.acquire().await;
                })
                .expect("spawn");
        }
        tracing::info!(port, "console_app ready");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let _ = (&tx, &held);
        }
    });
}
