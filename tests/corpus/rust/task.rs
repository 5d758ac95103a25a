//! Corpus: a tokio task that waits for a message nobody sends, still pending when the program
//! ends (the Rust probe reports it; `check` is told where it listens). With `clean`, the twin:
//! the message is sent, the task finishes.
use std::time::Duration;

fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    std::thread::sleep(Duration::from_millis(300));
    // Task hooks are set when the runtime is built: the probe's builder has them.
    let runtime = leakhound_probe::runtime().build().expect("runtime");
    runtime.block_on(async move {
        let _probe = leakhound_probe::init();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = tokio::spawn(async move {
            let _ = rx.await;
        });
        if clean {
            tx.send(()).expect("send");
            waiter.await.expect("join");
        } else {
            std::mem::forget(tx); // the sender is never used and never dropped
        }
        // The rest of the program: busy, but not with the waiting task.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
