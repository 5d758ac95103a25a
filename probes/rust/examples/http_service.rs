//! A small HTTP service (axum), written as tokio services are, with the three problems such
//! services really have — or its clean twin, the same service with healthy handlers. For
//! trying leakhound on, and for its end-to-end tests (tests/http_service_e2e.rs).
//!
//! `http_service problems|clean [--runtime HOW] [--port N] [--console PORT]` serves
//! 127.0.0.1:N (0, the default: any free port, printed in the `ready` log line) until killed:
//! - `GET /`: answers `ok`;
//! - `GET /report`: 300 ms of work; `problems` does it with `std::thread::sleep` inside the
//!   async handler (the worker is blocked), `clean` with `tokio::time::sleep`;
//! - `GET /import`: 5 ms of blocking work through `spawn_blocking`;
//! - at start, the task `cache-refresh` waits on a oneshot for the service to say it is ready;
//!   `problems` keeps the sender and never sends (the task is stuck forever), `clean` sends;
//! - at start, a backfill of 4 more `spawn_blocking` jobs than the blocking pool has threads;
//!   `problems` starts them all, each an hour long (the pool is saturated, `/import` waits
//!   behind them), `clean` runs them one at a time, 20 ms each.
//!
//! HOW is how the runtime is made, as a service may have it:
//! - `tokio-main` (default): `#[tokio::main(worker_threads = 2)]` and
//!   `let _probe = leakhound_probe::init();` (tokio's default blocking pool of 512);
//! - `attribute`: `#[leakhound_probe::main(worker_threads = 2, max_blocking_threads = 2)]`,
//!   nothing else;
//! - `hand`: `leakhound_probe::runtime()` (hooks on a hand-built runtime, blocking pool of 2)
//!   and the program's own subscriber with `leakhound_probe::fmt_layer()` and `task_names()`.
//!
//! `--console PORT` (with `--runtime hand`) also serves tokio-console's API on
//! 127.0.0.1:PORT (console-subscriber) and adds a fourth problem, a task that loses its waker,
//! so one app can be read by both the console source and the probe.
//!
//! Every log line carries `tid=` and `task=`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

const USAGE: &str =
    "use problems|clean [--runtime tokio-main|attribute|hand] [--port N] [--console PORT]";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Problems,
    Clean,
}

#[derive(Debug)]
struct Args {
    variant: Variant,
    runtime: String,
    port: u16,
    console: Option<u16>,
}

fn main() {
    let args = parse(std::env::args().skip(1).collect()).unwrap_or_else(|e| {
        eprintln!("http_service: {e}; {USAGE}");
        std::process::exit(2);
    });
    match args.runtime.as_str() {
        "tokio-main" => with_tokio_main(args),
        "attribute" => with_attribute(args),
        _ => hand_built(args),
    }
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut it = args.into_iter();
    let variant = match it.next().as_deref() {
        Some("problems") => Variant::Problems,
        Some("clean") => Variant::Clean,
        Some(other) => return Err(format!("unknown variant '{other}'")),
        None => return Err("no variant".into()),
    };
    let mut parsed = Args {
        variant,
        runtime: "tokio-main".into(),
        port: 0,
        console: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let port = || {
            value
                .parse::<u16>()
                .map_err(|_| format!("{flag}: '{value}' is not a port"))
        };
        match flag.as_str() {
            "--runtime" if ["tokio-main", "attribute", "hand"].contains(&value.as_str()) => {
                parsed.runtime = value
            }
            "--runtime" => return Err(format!("unknown runtime '{value}'")),
            "--port" => parsed.port = port()?,
            "--console" => parsed.console = Some(port()?),
            _ => return Err(format!("unexpected argument '{flag}'")),
        }
    }
    if parsed.console.is_some() && parsed.runtime != "hand" {
        return Err("--console needs --runtime hand (the subscriber is the program's own)".into());
    }
    Ok(parsed)
}

#[tokio::main(worker_threads = 2)]
async fn with_tokio_main(args: Args) {
    let _probe = leakhound_probe::init();
    serve(args, 512).await
}

#[leakhound_probe::main(worker_threads = 2, max_blocking_threads = 2)]
async fn with_attribute(args: Args) {
    serve(args, 2).await
}

fn hand_built(args: Args) {
    let console = args.console.map(|port| {
        console_subscriber::ConsoleLayer::builder()
            .server_addr(([127, 0, 0, 1], port))
            .publish_interval(Duration::from_millis(200))
            .retention(Duration::from_secs(5))
            .spawn()
    });
    tracing_subscriber::registry()
        .with(console)
        // INFO: tokio's own TRACE events (its `tracing` feature is on here) stay out.
        .with(leakhound_probe::fmt_layer().with_filter(LevelFilter::INFO))
        .with(leakhound_probe::task_names())
        .init();
    // Built after the subscriber, so the console sees every task (console issue #185).
    let rt = leakhound_probe::runtime()
        .worker_threads(2)
        .max_blocking_threads(2)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _probe = leakhound_probe::builder().max_blocking_threads(2).start();
        serve(args, 2).await
    });
}

/// The handlers' view of the service.
struct App {
    variant: Variant,
}

/// Starts the background work (and its problems), then serves HTTP until killed.
/// `max_blocking` is the runtime's blocking-pool size.
async fn serve(args: Args, max_blocking: usize) {
    let variant = args.variant;
    // The cache refresher waits until the service says it is ready. The bug in `problems`:
    // the sender is kept (in `ready`, below) but nothing ever sends on it.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    // spawn_named's name reaches the probe under any runtime; Builder::name's with task_names().
    leakhound_probe::spawn_named("cache-refresh", async move {
        tracing::info!("cache-refresh: waiting for the service to be ready");
        if ready_rx.await.is_err() {
            return;
        }
        tracing::info!("cache-refresh: running");
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
        }
    });
    let ready = match variant {
        Variant::Problems => Some(ready_tx),
        Variant::Clean => {
            let _ = ready_tx.send(());
            None
        }
    };
    // The backfill: more blocking jobs than the pool has threads, started one per poll (a
    // poll that spawned them all would hold its worker while the pool starts its threads).
    // `problems` fires them all off, hour-long; `clean` runs its short ones one at a time.
    let backfill = tokio::spawn(async move {
        let job = match variant {
            Variant::Problems => Duration::from_secs(3600),
            Variant::Clean => Duration::from_millis(20),
        };
        for n in 0..max_blocking + 4 {
            let done = tokio::task::spawn_blocking(move || {
                if n < 2 {
                    tracing::info!(job = n, "backfill job running");
                }
                std::thread::sleep(job);
            });
            match variant {
                Variant::Problems => tokio::task::yield_now().await,
                Variant::Clean => {
                    let _ = done.await;
                }
            }
        }
    });
    if variant == Variant::Problems {
        // Serve once every job is handed to the pool, so each request meets the full pool.
        let _ = backfill.await;
    }
    if args.console.is_some() {
        // A future that keeps no waker: once it returns Pending nothing can wake it again.
        let lost = tokio::task::Builder::new()
            .name("lost-waker")
            .spawn(std::future::poll_fn(|_| Poll::<()>::Pending))
            .expect("spawn lost-waker");
        tracing::info!("lost-waker: spawned=task:{}", lost.id());
    }
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/report", get(report))
        .route("/import", get(import))
        .with_state(Arc::new(App { variant }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .unwrap_or_else(|e| {
            eprintln!(
                "http_service: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            std::process::exit(2);
        });
    let addr = listener.local_addr().expect("bound address");
    tracing::info!(%addr, ?variant, runtime = %args.runtime, pid = std::process::id(), "http_service ready");
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("http_service: serve: {e}");
    }
    drop(ready);
}

/// 300 ms of work: in `problems` a blocking sleep inside async code, which holds the worker.
async fn report(State(app): State<Arc<App>>) -> &'static str {
    tracing::info!("report: building");
    match app.variant {
        Variant::Problems => std::thread::sleep(Duration::from_millis(300)),
        Variant::Clean => tokio::time::sleep(Duration::from_millis(300)).await,
    }
    "report"
}

/// 5 ms of blocking work on the blocking pool; it waits behind a saturated pool.
async fn import() -> &'static str {
    match tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5))).await {
        Ok(()) => "imported",
        Err(_) => "import failed",
    }
}
