//! Corpus: a tokio task spawned and never polled. The program keeps a second, current-thread
//! runtime for "background" work and spawns onto it through its `Handle`. A current-thread
//! runtime runs its tasks only while someone is inside its `block_on`, and nobody ever is, so
//! the task never runs; `Handle::spawn` returned at once, so it looked as if it had worked (a
//! common mistake). The Rust probe reports the task with zero polls. With `clean`, the twin:
//! the background runtime is driven on its own thread, so the task runs and finishes.
use std::time::Duration;

fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    std::thread::sleep(Duration::from_millis(300));
    // Task hooks are set when a runtime is built: both runtimes get the probe's.
    let runtime = leakhound_probe::runtime().build().expect("runtime");
    let mut background = tokio::runtime::Builder::new_current_thread();
    leakhound_probe::hooks(&mut background);
    let background = background.enable_all().build().expect("background runtime");
    let handle = background.handle().clone();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (driver, idle) = if clean {
        let driver = std::thread::Builder::new()
            .name("background-rt".into())
            .spawn(move || {
                background.block_on(async {
                    let _ = stopped.await;
                })
            })
            .expect("spawn");
        (Some(driver), None)
    } else {
        (None, Some(background)) // built, kept, never driven
    };

    runtime.block_on(async move {
        let _probe = leakhound_probe::init();
        let flush = handle.spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        if clean {
            flush.await.expect("flush");
        }
        // The rest of the program, on the main runtime.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let _ = stop.send(());
    if let Some(driver) = driver {
        driver.join().expect("join");
    }
    drop(idle);
}
