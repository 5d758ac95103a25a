//! A task named with plain `tokio::task::Builder::name` shows that name in the probe's task
//! list under `#[leakhound_probe::main(task_names = true)]` (its subscriber learns names from
//! tokio's `runtime.spawn` span; this workspace builds tokio with `tracing` and
//! `tokio_unstable`). Its own process: the attribute installs the global subscriber.

mod common;

use std::future::pending;
use std::time::Duration;
use tokio::task::Builder;

#[leakhound_probe::main(worker_threads = 2, task_names = true)]
async fn service() {
    let path = common::default_socket();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let named = Builder::new()
        .name("x")
        .spawn(async move {
            let _ = rx.await;
        })
        .unwrap();
    let unnamed = tokio::spawn(pending::<()>());
    let helper = leakhound_probe::spawn_named("y", pending::<()>());
    let short = Builder::new()
        .name("short-lived")
        .spawn(tokio::time::sleep(Duration::from_millis(20)))
        .unwrap();
    let short_id = short.id().to_string();
    short.await.unwrap();
    // A blocking task's name has no spawn hook to go to, and must not stick to the next task.
    Builder::new()
        .name("a-blocking-one")
        .spawn_blocking(|| ())
        .unwrap()
        .await
        .unwrap();
    let after_blocking = tokio::spawn(pending::<()>());
    // A named spawn on a runtime without the probe's hooks leaves its name on that thread;
    // the next task spawned there (onto the hooked runtime, unnamed) must not take it.
    let handle = tokio::runtime::Handle::current();
    let elsewhere = tokio::task::spawn_blocking(move || {
        let plain = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        plain.block_on(async {
            Builder::new()
                .name("on-a-plain-runtime")
                .spawn(async {})
                .unwrap()
                .await
                .unwrap()
        });
        handle.spawn(pending::<()>())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let data = tokio::task::spawn_blocking(move || common::snapshot(&path))
        .await
        .unwrap();
    let name = |id: &str| common::task(&data, id)["name"].clone();
    assert_eq!(name(&named.id().to_string()), "x", "{}", data["tasks"]);
    assert_eq!(name(&helper.id().to_string()), "y");
    assert_eq!(name(&unnamed.id().to_string()), "");
    assert_eq!(name(&after_blocking.id().to_string()), "");
    assert_eq!(name(&elsewhere.id().to_string()), "");
    let short = common::task(&data, &short_id);
    assert_eq!(
        (short["state"].as_str(), short["name"].as_str()),
        (Some("done"), Some("short-lived"))
    );
    // Named the way the probe sees, and still a plain task: its waker is not counted.
    let x = common::task(&data, &named.id().to_string());
    assert_eq!(x["lost_waker"], false, "{x}");
    assert!(
        x["spawn_location"]
            .as_str()
            .unwrap()
            .contains("tests/builder_name.rs"),
        "{x}"
    );
    assert_eq!(
        common::missing_about(&data, "task names"),
        Vec::<String>::new()
    );
    drop(tx);
    named.await.unwrap();
    for h in [unnamed, helper, after_blocking, elsewhere] {
        h.abort();
    }
}

#[test]
fn a_builder_name_reaches_the_task_list_under_the_attribute() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this process, set before the probe starts any thread.
    unsafe { std::env::set_var("LEAKHOUND_SOCKET_DIR", dir.path().join("socks")) };
    service();
}
