//! tokio 1.54.1's multi-thread task dump leaving a worker stuck, without the probe: a dump
//! requested while one worker runs a stream of 10 ms polls (it looks for the request every
//! 61 polls, past the 250 ms the other worker waits at the `trace_start` barrier). That
//! worker gives up, its count stays in the barrier, the busy one completes it alone, traces,
//! and waits at `trace_end` forever: this program then hangs in `spin.await` (its task is on
//! the stuck worker). With `HEAL=1` a second dump is taken at once, the runtime nudged while
//! it is pending, and everything runs: what the probe does (`src/dump.rs`, `request`).
//!
//! `cargo run -p leakhound-probe --example taskdump_barrier` (exits 3 if the runtime's drop
//! hangs; a hang before that needs a Ctrl-C).
use std::time::{Duration, Instant};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stuck = rt.block_on(async {
        // One worker spins in 10 ms polls (it checks for a dump request every 61 polls).
        let spin = tokio::spawn(async {
            let end = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < end {
                let slice = Instant::now() + Duration::from_millis(10);
                while Instant::now() < slice {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let h = tokio::runtime::Handle::current();
        let t0 = Instant::now();
        let dump = tokio::time::timeout(Duration::from_secs(5), h.dump()).await;
        println!("dump done={} in {:?}", dump.is_ok(), t0.elapsed());
        if std::env::var("HEAL").is_ok() {
            // Nudge the parked worker while a second dump is pending.
            let hn = h.clone();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let st = stop.clone();
            let nudger = std::thread::spawn(move || {
                while !st.load(std::sync::atomic::Ordering::Relaxed) {
                    hn.spawn(async {});
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let t1 = Instant::now();
            let d2 = tokio::time::timeout(Duration::from_secs(5), h.dump()).await;
            println!("second dump done={} in {:?}", d2.is_ok(), t1.elapsed());
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            nudger.join().unwrap();
        }
        spin.await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = h.metrics();
        let snap = || {
            (0..2)
                .map(|i| (m.worker_park_unpark_count(i), m.worker_poll_count(i)))
                .collect::<Vec<_>>()
        };
        let a = snap();
        // Work for both workers.
        for _ in 0..200 {
            let hs: Vec<_> = (0..10)
                .map(|_| tokio::spawn(async { tokio::task::yield_now().await }))
                .collect();
            for x in hs {
                x.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let b = snap();
        println!("workers (park/unpark, polls) before {a:?} after {b:?}");
        (0..2).filter(|&i| a[i] == b[i]).count()
    });
    println!("frozen workers: {stuck}");
    let t = Instant::now();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        println!("runtime drop still waiting after {:?}: HANG", t.elapsed());
        std::process::exit(3);
    });
    drop(rt);
    println!("runtime dropped in {:?}", t.elapsed());
}
