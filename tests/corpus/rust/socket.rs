//! Corpus: a loopback listener and a connection to it, never closed.
//! With `clean`, the twin: both are dropped before the end.
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let clean = std::env::args().any(|a| a == "clean");
    std::thread::sleep(Duration::from_millis(300));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    if clean {
        drop(client);
        drop(listener);
    } else {
        std::mem::forget(client);
        std::mem::forget(listener);
    }
    std::thread::sleep(Duration::from_millis(700));
}
