//! Corpus: a thread started and never joined, still running when `main` returns.
//! With `clean`, the twin: the thread is joined.
use std::time::Duration;

fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    std::thread::sleep(Duration::from_millis(300));
    let worker = std::thread::Builder::new()
        .name("never-joined".into())
        .spawn(move || std::thread::sleep(Duration::from_millis(if clean { 200 } else { 5_000 })))
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(700));
    if clean {
        worker.join().expect("join");
    }
}
