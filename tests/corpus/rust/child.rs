//! Corpus: a child process started and left running; it outlives the program.
//! With `clean`, the twin: the child is killed and waited for.
use std::process::Command;
use std::time::Duration;

// The leak is the point of this program.
#[allow(clippy::zombie_processes)]
fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    std::thread::sleep(Duration::from_millis(300));
    if clean {
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}
