//! `#[leakhound_probe::main]` and `#[leakhound_probe::test]` as a program uses them. The
//! tests here run in parallel on purpose: the test attribute judges only its own runtime.

use std::time::Duration;

#[leakhound_probe::test]
async fn a_test_that_joins_its_tasks_passes() {
    let h = tokio::spawn(async { 7 });
    assert_eq!(h.await.unwrap(), 7);
    // Another test's runtime leaking at the same time is not ours.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[leakhound_probe::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "tokio tasks: 1 still alive")]
async fn a_test_that_leaves_a_task_running_fails() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakhound_probe::test(leaks = "off")]
async fn leaks_off_lets_a_task_outlive_the_body() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakhound_probe::test]
async fn a_task_still_finishing_when_the_body_returns_is_waited_for() {
    // Current-thread runtime: the guard must let the runtime run while it settles.
    tokio::spawn(tokio::time::sleep(Duration::from_millis(100)));
}

#[leakhound_probe::test]
async fn question_mark_works_in_the_body() -> Result<(), std::num::ParseIntError> {
    let n: u32 = "42".parse()?;
    assert_eq!(n, 42);
    Ok(())
}

#[leakhound_probe::main(flavor = "current_thread")]
async fn current_thread_main(x: u32) -> (u32, tokio::runtime::RuntimeFlavor, bool) {
    (
        x + 1,
        tokio::runtime::Handle::current().runtime_flavor(),
        leakhound_probe::hooks_installed(),
    )
}

#[leakhound_probe::main(worker_threads = 3)]
async fn multi_thread_main() -> usize {
    tokio::runtime::Handle::current().metrics().num_workers()
}

#[test]
fn main_attribute_builds_the_runtime_it_is_asked_for() {
    let (n, flavor, hooked) = current_thread_main(1);
    assert_eq!(n, 2);
    assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
    assert!(hooked, "the attribute installs the task hooks");
    assert_eq!(multi_thread_main(), 3);
}
