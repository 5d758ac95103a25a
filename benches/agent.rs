//! What `leakhound agent` costs watching 50 processes at 1 Hz with a scraper: CPU % of one core
//! over a steady window (and which of the agent's threads spent it), RSS and peak RSS, and the
//! latency of a `/metrics` scrape (p50/p99).
//!
//! Run by hand, not in CI: `cargo bench --bench agent` (`LH_BENCH_SECS`, default 60, sets the
//! measured window; `LH_BENCH_TARGETS`, default 50, the number of processes;
//! `LH_BENCH_BIN=path/to/leakhound` measures another build, e.g. an older commit's, with the
//! same harness). The targets are real Python processes, each holding a few files, a listening
//! socket and a thread, so every sample reads descriptors, sockets and threads.
//!
//! During the CPU window the agent is scraped every 5 s, as a Prometheus would; after it, 200
//! scrapes 50 ms apart give the latency percentiles (their cost is not in the CPU figure).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = r#"
import socket, threading, time, os
files = [open(os.devnull) for _ in range(8)]
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
print("READY", flush=True)
time.sleep(3600)
"#;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based over the whole line).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds by thread name (`leakhound-collector`, `leakhound-pysampler`, …), from each
/// thread's `schedstat` (nanoseconds: the per-thread `stat` counts whole clock ticks, and fifty
/// collectors using a few milliseconds each would all read as zero).
fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let (Ok(comm), Ok(sched)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *by.entry(comm.trim().to_string()).or_insert(0.0) += ns as f64 / 1e9;
    }
    by
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn scrape(port: u16) -> (Duration, usize) {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    (
        start.elapsed(),
        body.lines().filter(|l| !l.starts_with('#')).count(),
    )
}

fn main() {
    let secs = env_or("LH_BENCH_SECS", 60);
    let n = env_or("LH_BENCH_TARGETS", 50);
    let targets: Vec<Killed> = (0..n)
        .map(|_| {
            let mut c = Command::new("python3")
                .args(["-c", TARGET])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let mut line = String::new();
            BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "READY");
            Killed(c)
        })
        .collect();
    let mut args = vec!["agent".to_string(), "--listen".into(), "127.0.0.1:0".into()];
    for t in &targets {
        args.push("--pid".into());
        args.push(t.0.id().to_string());
    }
    let bin =
        std::env::var("LH_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_leakhound").into());
    let mut agent = Command::new(&bin)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("leakhound agent");
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port: u16 = first
        .trim()
        .rsplit_once(':')
        .and_then(|(_, p)| p.strip_suffix("/metrics"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = out.read_to_string(&mut sink);
    });
    let agent = Killed(agent);
    let pid = agent.0.id();

    // Warm up: every target sampled a few times, the histories filling.
    std::thread::sleep(Duration::from_secs(5));
    let tck = rustix::param::clock_ticks_per_second() as f64;
    let t0 = cpu_ticks(pid);
    let threads0 = cpu_by_thread(pid);
    let started = Instant::now();
    let mut series = 0;
    // A scrape every 5 s, as a typical Prometheus would.
    while started.elapsed() < Duration::from_secs(secs) {
        series = scrape(port).1;
        std::thread::sleep(Duration::from_secs(5));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - t0) as f64 / tck;
    let threads: Vec<String> = cpu_by_thread(pid)
        .into_iter()
        .map(|(name, s)| {
            let spent = s - threads0.get(&name).copied().unwrap_or(0.0);
            format!("{name} {:.2}%", 100.0 * spent / wall)
        })
        .collect();
    let rss = status_kib(pid, "VmRSS:");
    let mut latencies: Vec<Duration> = (0..200)
        .map(|_| {
            let took = scrape(port).0;
            std::thread::sleep(Duration::from_millis(50));
            took
        })
        .collect();
    let hwm = status_kib(pid, "VmHWM:");
    latencies.sort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "agent, {n} targets at 1 Hz, {wall:.0} s: CPU {:.2}% of one core ({}); RSS {:.1} MiB \
         (peak {:.1} MiB); scrape ({series} series) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         over {} scrapes; load average {}",
        100.0 * cpu / wall,
        threads.join(", "),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().unwrap().as_secs_f64() * 1000.0,
        latencies.len(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(agent);
    drop(targets);
}
