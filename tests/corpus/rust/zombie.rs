//! Corpus: a child that exits and is never waited for: a zombie while the program runs,
//! left to whoever inherits it when the program ends.
//! With `clean`, the twin: the child is waited for.
use std::process::Command;
use std::time::Duration;

// The leak is the point of this program.
#[allow(clippy::zombie_processes)]
fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    let mut child = Command::new("true").spawn().expect("spawn true");
    if clean {
        child.wait().expect("wait");
    }
    std::thread::sleep(Duration::from_millis(1_000));
}
