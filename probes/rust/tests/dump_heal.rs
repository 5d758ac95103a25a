//! A task dump taken while a worker runs a stream of short polls must not leave that worker
//! (or the other) stuck: tokio 1.54.1's dump barrier can, and the probe takes a second dump to
//! free it (probes/rust/src/dump.rs, `request`). Its own process: dumps are turned on by env.

use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn a_dump_during_a_stream_of_short_polls_leaves_every_worker_running() {
    // SAFETY: the only test of this binary, before any thread of its own starts; dumps are
    // opt-in (LEAKHOUND_TASKDUMP=1), read once by the probe.
    unsafe { std::env::set_var("LEAKHOUND_TASKDUMP", "1") };
    let dir = tempfile::tempdir().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let sockdir = dir.path().join("socks");
    std::thread::spawn(move || {
        let rt = leakhound_probe::runtime()
            .worker_threads(2)
            .build()
            .unwrap();
        let frozen = rt.block_on(async {
            let _probe = leakhound_probe::builder().socket_dir(&sockdir).start();
            // A stuck candidate: the probe dumps once it has been idle about a second.
            let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
            let stuck = tokio::spawn(async move {
                let _ = rx.await;
            });
            // Meanwhile both workers poll 10 ms slices back to back: each looks for a dump
            // request only every 61 polls, past tokio's 250 ms barrier timeout.
            let spinners: Vec<_> = (0..2)
                .map(|_| {
                    tokio::spawn(async {
                        let end = Instant::now() + Duration::from_millis(2500);
                        while Instant::now() < end {
                            let slice = Instant::now() + Duration::from_millis(10);
                            while Instant::now() < slice {
                                std::hint::spin_loop();
                            }
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for s in spinners {
                s.await.unwrap();
            }
            // Wait out a dump still pending.
            for _ in 0..100 {
                if leakhound_probe::last_dump_cost().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                leakhound_probe::last_dump_cost().is_some(),
                "the probe took no dump"
            );
            // Both workers still poll: give them work and watch their counts move.
            let m = tokio::runtime::Handle::current().metrics();
            let polls = || (0..2).map(|i| m.worker_poll_count(i)).collect::<Vec<_>>();
            let before = polls();
            for _ in 0..100 {
                let batch: Vec<_> = (0..20)
                    .map(|_| tokio::spawn(tokio::task::yield_now()))
                    .collect();
                for t in batch {
                    t.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let after = polls();
            stuck.abort();
            (0..2).filter(|&i| before[i] == after[i]).count()
        });
        drop(rt);
        let _ = done_tx.send(frozen);
    });
    // A worker left stuck keeps block_on (or the runtime's drop) waiting forever.
    let frozen = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the runtime hung after a task dump");
    assert_eq!(frozen, 0, "workers that stopped polling after the dump");
}
