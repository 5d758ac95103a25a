//! A program that sets its own tracing subscriber. Without `leakhound_probe::task_names()` in
//! it a `Builder::name` does not reach the probe, nothing else changes, and `missing[]` says
//! how to add it; with it the name arrives, and the program's log lines are as they were (no
//! tokio span in them). Its own process: the subscriber is global.

mod common;

use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::Builder;
use tracing_subscriber::prelude::*;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fmt_layer<S>(out: Lines) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .map_event_format(leakhound_probe::WithIds)
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_filter(tracing_subscriber::EnvFilter::new("info"))
}

async fn snapshot() -> serde_json::Value {
    let path = common::default_socket();
    tokio::task::spawn_blocking(move || common::snapshot(&path))
        .await
        .unwrap()
}

#[leakhound_probe::main(worker_threads = 2)]
async fn service() {
    let named = Builder::new().name("x").spawn(pending::<()>()).unwrap();
    let helper = leakhound_probe::spawn_named("y", pending::<()>());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let data = snapshot().await;
    let name = |data: &serde_json::Value, id: tokio::task::Id| {
        common::task(data, &id.to_string())["name"].clone()
    };
    // The program's subscriber has no task-name layer: the name stays tokio's.
    assert_eq!(name(&data, named.id()), "", "{}", data["tasks"]);
    assert_eq!(name(&data, helper.id()), "y");
    let said = common::missing_about(&data, "task names");
    assert!(
        said.len() == 1 && said[0].contains("leakhound_probe::task_names()"),
        "{said:?}"
    );

    // The same program with the layer: as a scoped subscriber here (the global one is set),
    // so on a thread of its own, with a current-thread runtime given the probe's hooks.
    let out = Lines::default();
    let with_names = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(fmt_layer(out.clone()))
            .with(leakhound_probe::task_names()),
    );
    let path = common::default_socket();
    let (data, logged) = tokio::task::spawn_blocking(move || {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        let rt = leakhound_probe::hooks(&mut b).build().unwrap();
        tracing::dispatcher::with_default(&with_names, || {
            rt.block_on(async {
                let h = Builder::new()
                    .name("named-here")
                    .spawn(async {
                        tracing::info!("inside a named task");
                        pending::<()>().await
                    })
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let data = common::snapshot(&path);
                h.abort();
                (data, h.id())
            })
        })
    })
    .await
    .unwrap();
    assert_eq!(name(&data, logged), "named-here", "{}", data["tasks"]);
    assert_eq!(
        common::missing_about(&data, "task names"),
        Vec::<String>::new()
    );
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("inside a named task"))
        .unwrap_or_else(|| panic!("no line in {text:?}"));
    assert!(line.contains(&format!("task={logged} ")), "{line}");
    assert!(!line.contains("runtime.spawn"), "{line}");
    for h in [named, helper] {
        h.abort();
    }
}

#[test]
fn a_subscriber_of_the_programs_own_gets_names_with_the_layer_only() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this process, set before any thread reads the environment.
    unsafe { std::env::set_var("LEAKHOUND_SOCKET_DIR", dir.path().join("socks")) };
    tracing_subscriber::registry()
        .with(fmt_layer(Lines::default()))
        .init();
    service();
}
