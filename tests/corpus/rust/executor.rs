//! Corpus: an executor left running. The program keeps its tokio runtime in a global
//! (`static RUNTIME: OnceLock<Runtime>`, the usual way to reach async code from sync code) and
//! gives it a reporter that loops for the program's life. A static is never dropped, so when
//! `main` returns the runtime was never shut down: its worker threads are alive, busy, at the
//! exit. The runtime carries the Rust probe, as an instrumented service's would. With `clean`,
//! the twin: the runtime is owned by `main` and shut down (`shutdown_timeout`) before it returns.
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn build() -> Runtime {
    leakhound_probe::runtime()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

/// Background work that never ends on its own: it stops only with its runtime.
async fn report_forever() {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    std::thread::sleep(Duration::from_millis(300));
    let owned = clean.then(build);
    let runtime = match &owned {
        Some(runtime) => runtime,
        None => RUNTIME.get_or_init(build),
    };
    let probe = leakhound_probe::builder()
        .runtime(runtime.handle().clone())
        .start();
    runtime.spawn(report_forever());
    std::thread::sleep(Duration::from_millis(1_500));
    drop(probe);
    if let Some(runtime) = owned {
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
