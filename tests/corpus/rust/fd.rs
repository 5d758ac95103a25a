//! Corpus: a file opened and never closed (its handle leaked on purpose).
//! With `clean`, the twin: the file is dropped, which closes it.
use std::time::Duration;

fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    std::thread::sleep(Duration::from_millis(300));
    let path = std::env::temp_dir().join(format!("leakhound-corpus-fd-{}", std::process::id()));
    let file = std::fs::File::create(&path).expect("create");
    std::fs::remove_file(&path).expect("remove");
    if clean {
        drop(file);
    } else {
        std::mem::forget(file);
    }
    std::thread::sleep(Duration::from_millis(700));
}
