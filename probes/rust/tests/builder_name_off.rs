//! Reading `Builder` names is opt-in: under `#[leakhound_probe::main]` as it comes, a task
//! named with `tokio::task::Builder::name` is listed without its name, everything else as
//! usual, and `missing[]` says how to ask for names. Its own process: the attribute installs
//! the global subscriber.

mod common;

use std::future::pending;
use std::time::Duration;

#[leakhound_probe::main(worker_threads = 2)]
async fn service() {
    let path = common::default_socket();
    let named = tokio::task::Builder::new()
        .name("x")
        .spawn(pending::<()>())
        .unwrap();
    let helper = leakhound_probe::spawn_named("y", pending::<()>());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let data = tokio::task::spawn_blocking(move || common::snapshot(&path))
        .await
        .unwrap();
    let x = common::task(&data, &named.id().to_string());
    assert_eq!(x["name"], "", "{x}");
    assert_eq!(x["state"], "idle", "{x}");
    assert_eq!(common::task(&data, &helper.id().to_string())["name"], "y");
    let said = common::missing_about(&data, "task names");
    assert!(
        said.len() == 1 && said[0].contains("LEAKHOUND_TASK_NAMES=1"),
        "{said:?}"
    );
    named.abort();
    helper.abort();
}

#[test]
fn builder_names_are_left_alone_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this process, set before the probe starts any thread.
    unsafe {
        std::env::set_var("LEAKHOUND_SOCKET_DIR", dir.path().join("socks"));
        std::env::remove_var("LEAKHOUND_TASK_NAMES");
    }
    service();
}
