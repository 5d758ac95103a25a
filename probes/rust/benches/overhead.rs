//! What leakhound-probe costs a tokio program, beside console-subscriber, in one run.
//!
//! `cargo bench -p leakhound-probe --bench overhead` (add `-- --quick` for a short run,
//! `-- --rounds N` for N runs per setup instead of 7, `-- --setups bare,attribute` for some
//! setups only; `bare` is always run, the others are compared with it).
//! Two workloads, each under ten setups, each setup in its own process (console-subscriber
//! installs a global subscriber; task hooks are per runtime):
//! - `spawn`: a million short tasks (1,000 batches of 1,000 spawned and awaited, from a task);
//! - `echo`: a TCP echo server on loopback, 64 clients × 1,000 round trips of 128 bytes.
//!
//! Setups: `bare` (plain runtime), `hooks` (four empty task hooks: the floor of any
//! hook-based task registry), `probe` (leakhound_probe::runtime() + init()), `attribute`
//! (`#[leakhound_probe::main]`: hooks, probe, its log subscriber; task dumps off,
//! `LEAKHOUND_TASKDUMP=0`), `dumps` (the attribute as it comes, task dumps on), `named` (the attribute,
//! every task spawned with `leakhound_probe::spawn_named`: names and counted wakers),
//! `builder-name` (the attribute with `LEAKHOUND_TASK_NAMES=1`, every task spawned with plain
//! `tokio::task::Builder::name`: with tokio's `tracing` feature, on here because
//! console-subscriber needs it, each task gets tokio's `runtime.spawn` span, which the probe's
//! subscriber reads the name from; the other setups run with `LEAKHOUND_TASK_NAMES=0`),
//! `names-layer` (the same with plain `tokio::spawn`: what reading names costs the tasks
//! that have none), `own-names-layer` (as `names-layer`, but the program sets its own
//! subscriber first, an fmt layer with ids and `leakhound_probe::task_names()`),
//! `console` (console-subscriber layer, default retention, runtime built after it).
//! Task dumps (the probe's default `taskdump` feature) are compiled in; compare with
//! `--no-default-features` for the probe without them.
//!
//! Each (workload, setup) runs 7 times, interleaved; the median and best wall and CPU times
//! are reported with the ratio of medians to bare (the machine this runs on is shared: the
//! median is the steadier figure under load, the best the one on a quiet machine), the
//! paired CPU cost (the median of each round's ratio to bare, with a 95% interval), the RSS
//! of the process after the first tenth of `spawn` and after the workload (flat memory means
//! the two agree) and its peak (VmHWM). A setup passing 2 GiB RSS is stopped and its time
//! scaled from its rate so far.

use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A setup whose RSS passes this is stopped (console-subscriber keeps every finished task
/// for an hour: a million tasks would need tens of GiB). Its rate so far is reported.
const RSS_LIMIT_KB: u64 = 2 << 20;
static DONE: AtomicUsize = AtomicUsize::new(0);
/// How the workloads spawn: [`TOKIO_SPAWN`], or through `leakhound_probe::spawn_named`
/// (`named`), or `tokio::task::Builder::name` (`builder-name`).
static SPAWN_WITH: AtomicU8 = AtomicU8::new(TOKIO_SPAWN);
const TOKIO_SPAWN: u8 = 0;
const SPAWN_NAMED: u8 = 1;
const BUILDER_NAME: u8 = 2;

const SETUPS: [&str; 10] = [
    "bare",
    "hooks",
    "probe",
    "attribute",
    "dumps",
    "named",
    "builder-name",
    "names-layer",
    "own-names-layer",
    "console",
];
const WORKLOADS: [&str; 2] = ["spawn", "echo"];

/// A `/proc/self/status` size in KiB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb() -> u64 {
    status_kb("VmRSS:")
}

/// User + system CPU time of this process, seconds: steadier than wall time on a busy host.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(
            &args[i + 1],
            &args[i + 2],
            args.iter().any(|a| a == "--quick"),
        );
        return;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args.get(i + 1).cloned().unwrap_or_default())
    };
    let rounds = match value("--rounds").map(|r| r.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => exit_with("--rounds takes a number of runs"),
    };
    let setups = match value("--setups") {
        None => SETUPS.to_vec(),
        Some(list) => match pick_setups(&list) {
            Ok(s) => s,
            Err(e) => exit_with(&e),
        },
    };
    parent(args.iter().any(|a| a == "--quick"), rounds, &setups);
}

fn exit_with(message: &str) -> ! {
    eprintln!("overhead: {message}");
    std::process::exit(2);
}

/// The setups named in `list` (comma-separated), in the usual order, `bare` always among
/// them (every ratio is to it).
fn pick_setups(list: &str) -> Result<Vec<&'static str>, String> {
    let asked: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = asked.iter().find(|a| !SETUPS.contains(a)) {
        return Err(format!(
            "unknown setup {bad:?} in --setups; known: {}",
            SETUPS.join(",")
        ));
    }
    Ok(SETUPS
        .into_iter()
        .filter(|s| *s == "bare" || asked.contains(s))
        .collect())
}

/// One (workload, setup): wall and CPU seconds per run, RSS of the last run.
struct Row {
    workload: &'static str,
    setup: &'static str,
    wall: Vec<f64>,
    cpu: Vec<f64>,
    rss_mid_kb: u64,
    rss_end_kb: u64,
    rss_peak_kb: u64,
    /// Runs in which the probe took a task dump.
    dumps: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Each round runs every setup once, a few seconds apart: the ratio of a setup's CPU to
/// bare's in the same round cancels the load the machine had then, which moves single runs
/// far more than the probe does. The median of those ratios, with its 95% bootstrap
/// interval (resampled with a fixed-seed generator, so a run prints what it computed).
fn paired(setup: &[f64], bare: &[f64]) -> String {
    let ratios: Vec<f64> = setup.iter().zip(bare).map(|(s, b)| s / b).collect();
    if ratios.is_empty() {
        return "n/a".into();
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        // xorshift64*: enough to resample, no dependency.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| {
            median(
                &(0..ratios.len())
                    .map(|_| ratios[next(ratios.len())])
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let pct = |r: f64| (r - 1.0) * 100.0;
    format!(
        "{:+.1}% (95% interval {:+.1}%..{:+.1}%)",
        pct(median(&ratios)),
        pct(medians[50]),
        pct(medians[1949])
    )
}

/// Best of the runs: other load on the machine only ever adds time, so the minimum is the
/// steadiest estimate of a setup's own cost.
fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Where the children's attribute-started probes put their sockets (the parent's pid).
fn attribute_socket_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lh-bench-attr-{}", std::process::id()))
}

fn parent(quick: bool, rounds: Option<usize>, setups: &[&'static str]) {
    let exe = std::env::current_exe().expect("own path");
    let rounds = rounds.unwrap_or(if quick { 1 } else { 7 }).max(1);
    let total = if quick { 100_000 } else { 1_000_000 };
    let mut rows: Vec<Row> = Vec::new();
    for workload in WORKLOADS {
        for &setup in setups {
            rows.push(Row {
                workload,
                setup,
                wall: Vec::new(),
                cpu: Vec::new(),
                rss_mid_kb: 0,
                rss_end_kb: 0,
                rss_peak_kb: 0,
                dumps: 0,
            });
        }
    }
    let mut notes: Vec<String> = Vec::new();
    for round in 0..rounds {
        for w in WORKLOADS {
            // Rotate the order each round so no setup always runs on a warmer machine.
            for k in 0..setups.len() {
                let s = setups[(k + round) % setups.len()];
                let mut cmd = Command::new(&exe);
                cmd.args(["--child", w, s]);
                // Where the attribute's probe puts its socket.
                cmd.env("LEAKHOUND_SOCKET_DIR", attribute_socket_dir());
                // Dumps are on by default: every setup but `dumps` runs without them.
                cmd.env("LEAKHOUND_TASKDUMP", if s == "dumps" { "1" } else { "0" });
                // Reading Builder names is opt-in: only two setups ask for it.
                cmd.env(
                    "LEAKHOUND_TASK_NAMES",
                    if matches!(s, "builder-name" | "names-layer") {
                        "1"
                    } else {
                        "0"
                    },
                );
                if quick {
                    cmd.arg("--quick");
                }
                let out = cmd.output().expect("run child");
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .find(|l| l.starts_with("RESULT"))
                    .unwrap_or_else(|| {
                        panic!("{w}/{s} failed: {}", String::from_utf8_lossy(&out.stderr))
                    });
                let f: Vec<f64> = line
                    .split_whitespace()
                    .skip(1)
                    .map(|x| x.parse().unwrap())
                    .collect();
                let (mut wall, mut cpu, mid, end, done) = (f[0], f[1], f[2], f[3], f[4]);
                let (peak, dumped) = (f[5], f[6]);
                // Stopped at the RSS limit: scale to the whole workload by its rate so far.
                if w == "spawn" && done > 0.0 && (done as usize) < total {
                    notes.push(format!(
                        "{w}/{s} stopped at {:.0} MiB RSS after {done} of {total} tasks ({wall:.2} s); times scaled to {total} tasks",
                        end / 1024.0
                    ));
                    wall *= total as f64 / done;
                    cpu *= total as f64 / done;
                }
                let r = rows
                    .iter_mut()
                    .find(|r| r.workload == w && r.setup == s)
                    .unwrap();
                r.wall.push(wall);
                r.cpu.push(cpu);
                r.rss_mid_kb = mid as u64;
                r.rss_end_kb = end as u64;
                r.rss_peak_kb = r.rss_peak_kb.max(peak as u64);
                r.dumps += usize::from(dumped > 0.0);
            }
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    // One task dump, as the probe takes it for a stuck candidate, at two task counts (when
    // task dumps are among the setups run).
    let dump_counts = if setups.contains(&"dumps") {
        vec![1_000usize, if quick { 10_000 } else { 100_000 }]
    } else {
        Vec::new()
    };
    for n in dump_counts {
        let out = Command::new(&exe)
            .args(["--child", "dump", &n.to_string()])
            .env("LEAKHOUND_SOCKET_DIR", attribute_socket_dir())
            .env("LEAKHOUND_TASKDUMP", "1")
            .output()
            .expect("run child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("DUMP"))
            .unwrap_or("DUMP ? failed");
        println!("task dump with {n} idle tasks (dump s, resolving backtraces s): {line}");
    }
    let _ = std::fs::remove_dir_all(attribute_socket_dir());
    println!(
        "{rounds} runs each, interleaved; load average at the end: {}",
        load_average()
    );
    println!(
        "{:<8} {:<15} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "workload",
        "setup",
        "wall med",
        "best",
        "vs bare",
        "CPU med",
        "best",
        "vs bare",
        "RSS mid",
        "RSS end",
        "RSS peak"
    );
    let mib = |kb: u64| kb as f64 / 1024.0;
    for w in WORKLOADS {
        let get = |s: &str| {
            rows.iter()
                .find(|r| r.workload == w && r.setup == s)
                .unwrap()
        };
        let bare = get("bare");
        let (bw, bc) = (median(&bare.wall), median(&bare.cpu));
        for &s in setups {
            let r = get(s);
            println!(
                "{:<8} {:<15} {:>8.3}s {:>8.3}s {:>7.3}x {:>8.3}s {:>8.3}s {:>7.3}x {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB",
                w,
                s,
                median(&r.wall),
                best(&r.wall),
                median(&r.wall) / bw,
                median(&r.cpu),
                best(&r.cpu),
                median(&r.cpu) / bc,
                mib(r.rss_mid_kb),
                mib(r.rss_end_kb),
                mib(r.rss_peak_kb)
            );
        }
        let pct = |v: f64, base: f64| format!("{:+.1}%", (v / base - 1.0) * 100.0);
        // Every setup run but the bare runtime and the probe's parts (hooks, probe).
        for &s in setups
            .iter()
            .filter(|s| !matches!(**s, "bare" | "hooks" | "probe"))
        {
            let r = get(s);
            println!(
                "{w}: {s} vs bare, medians of {rounds}: wall {}, CPU {}; best: wall {}, CPU {}; paired CPU {}; peak RSS {:+.1} MiB{}",
                pct(median(&r.wall), bw),
                pct(median(&r.cpu), bc),
                pct(best(&r.wall), best(&bare.wall)),
                pct(best(&r.cpu), best(&bare.cpu)),
                paired(&r.cpu, &bare.cpu),
                mib(r.rss_peak_kb) - mib(bare.rss_peak_kb),
                if s == "dumps" {
                    format!(" ({} of {rounds} runs took a task dump)", r.dumps)
                } else {
                    String::new()
                }
            );
        }
    }
}

/// The `attribute` setup: the workload under `#[leakhound_probe::main]`, as it comes.
#[leakhound_probe::main(worker_threads = 2)]
async fn under_attribute(workload: String, quick: bool) -> (f64, u64, u64) {
    run(&workload, quick).await
}

async fn run(workload: &str, quick: bool) -> (f64, u64, u64) {
    match workload {
        // Driven from a task, as a server spawns from its tasks (and not from the
        // block_on thread, whose remote spawns make the run measure worker wake-ups).
        "spawn" => tokio::spawn(spawn_many(if quick { 100_000 } else { 1_000_000 }))
            .await
            .unwrap(),
        "echo" => echo(64, if quick { 200 } else { 1_000 }).await,
        other => panic!("unknown workload {other}"),
    }
}

/// What one task dump costs with `n` idle tasks: the probe takes one by itself once they
/// have been idle about a second. Prints `DUMP n dump_s resolve_s`.
#[leakhound_probe::main(worker_threads = 2)]
async fn dump_cost(n: usize) {
    let mut keep = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        keep.push(tx);
        tokio::spawn(async move {
            let _ = rx.await;
        });
    }
    for _ in 0..300 {
        if let Some((dump, resolve)) = leakhound_probe::last_dump_cost() {
            println!(
                "DUMP {n} {:.4} {:.4}",
                dump.as_secs_f64(),
                resolve.as_secs_f64()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("DUMP {n} none none");
}

fn child(workload: &str, setup: &str, quick: bool) {
    if workload == "dump" {
        dump_cost(setup.parse().expect("task count"));
        return;
    }
    watch_rss();
    match setup {
        "named" => SPAWN_WITH.store(SPAWN_NAMED, Ordering::Relaxed),
        "builder-name" => SPAWN_WITH.store(BUILDER_NAME, Ordering::Relaxed),
        _ => {}
    }
    if matches!(
        setup,
        "attribute" | "dumps" | "named" | "builder-name" | "names-layer" | "own-names-layer"
    ) {
        if setup == "own-names-layer" {
            use tracing_subscriber::prelude::*;
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .map_event_format(leakhound_probe::WithIds)
                        .with_filter(tracing_subscriber::EnvFilter::new("info")),
                )
                .with(leakhound_probe::task_names())
                .init();
        }
        let cpu_start = cpu_secs();
        let (secs, mid, end) = under_attribute(workload.to_string(), quick);
        report(secs, cpu_start, mid, end);
    }
    let rt = match setup {
        "bare" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        "probe" => leakhound_probe::runtime()
            .worker_threads(2)
            .build()
            .unwrap(),
        // The floor of any hook-based registry: tokio calling four empty task hooks.
        "hooks" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_task_spawn(|m| {
                std::hint::black_box(m.id());
            })
            .on_before_task_poll(|m| {
                std::hint::black_box(m.id());
            })
            .on_after_task_poll(|m| {
                std::hint::black_box(m.id());
            })
            .on_task_terminate(|m| {
                std::hint::black_box(m.id());
            })
            .build()
            .unwrap(),
        "console" => {
            use tracing_subscriber::prelude::*;
            let layer = console_subscriber::ConsoleLayer::builder()
                .server_addr(([127, 0, 0, 1], 0))
                .spawn();
            tracing_subscriber::registry().with(layer).init();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        }
        other => panic!("unknown setup {other}"),
    };
    let dir = std::env::temp_dir().join(format!("lh-bench-{}", std::process::id()));
    let cpu_start = cpu_secs();
    let (secs, mid, end) = rt.block_on(async {
        let probe = (setup == "probe").then(|| leakhound_probe::builder().socket_dir(&dir).start());
        let r = run(workload, quick).await;
        drop(probe);
        r
    });
    let _ = std::fs::remove_dir_all(&dir);
    report(secs, cpu_start, mid, end);
}

/// Prints the child's RESULT line and exits (without tearing down console-subscriber's
/// threads).
fn report(secs: f64, cpu_start: f64, mid: u64, end: u64) -> ! {
    println!(
        "RESULT {secs:.4} {:.4} {mid} {end} {} {} {}",
        cpu_secs() - cpu_start,
        DONE.load(Ordering::Relaxed),
        status_kb("VmHWM:"),
        u8::from(leakhound_probe::last_dump_cost().is_some())
    );
    std::process::exit(0);
}

/// Stops the child when its RSS passes the limit, reporting its rate so far.
fn watch_rss() {
    let started = Instant::now();
    let cpu0 = cpu_secs();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let rss = rss_kb();
            if rss > RSS_LIMIT_KB {
                let done = DONE.load(Ordering::Relaxed);
                println!(
                    "RESULT {:.4} {:.4} {rss} {rss} {done} {} 0",
                    started.elapsed().as_secs_f64(),
                    cpu_secs() - cpu0,
                    status_kb("VmHWM:")
                );
                std::process::exit(0);
            }
        }
    });
}

/// `tokio::spawn`, or in the `named` setup `leakhound_probe::spawn_named`, or in
/// `builder-name` `tokio::task::Builder::name` (the one branch is paid by every setup alike).
fn spawn<F>(name: &str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match SPAWN_WITH.load(Ordering::Relaxed) {
        TOKIO_SPAWN => tokio::spawn(future),
        SPAWN_NAMED => leakhound_probe::spawn_named(name, future),
        _ => tokio::task::Builder::new()
            .name(name)
            .spawn(future)
            .expect("Builder::spawn does not fail"),
    }
}

async fn spawn_many(total: usize) -> (f64, u64, u64) {
    let start = Instant::now();
    let mut mid = 0;
    let batches = total / 1_000;
    for b in 0..batches {
        let handles: Vec<_> = (0..1_000u64)
            .map(|i| {
                spawn(
                    "short",
                    async move { std::hint::black_box(i.wrapping_mul(31)) },
                )
            })
            .collect();
        for h in handles {
            std::hint::black_box(h.await.unwrap());
        }
        DONE.fetch_add(1_000, Ordering::Relaxed);
        if b == batches / 10 {
            mid = rss_kb();
        }
    }
    (start.elapsed().as_secs_f64(), mid, rss_kb())
}

async fn echo(clients: usize, round_trips: usize) -> (f64, u64, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            spawn("echo-conn", async move {
                let mut buf = [0u8; 128];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            spawn("echo-client", async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                let msg = [7u8; 128];
                let mut back = [0u8; 128];
                for _ in 0..round_trips {
                    s.write_all(&msg).await.unwrap();
                    s.read_exact(&mut back).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("echo bounded in time")
            .unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    server.abort();
    let rss = rss_kb();
    (secs, rss, rss)
}
