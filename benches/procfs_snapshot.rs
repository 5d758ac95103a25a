//! A full /proc snapshot of a big process, side by side with `lsof -p` and `ss -tanp`, and the
//! CPU cost of `watch` sampling it at 1 Hz.
//!
//! Run: `cargo bench --bench procfs_snapshot` (heavy: 10,000 fds, 1,000 threads, 2,000 TCP
//! sockets; not part of the test suite). Prints a table and the ratios.

use leakhound::source::procfs::ProcSource;
use leakhound::source::{SampleOptions, Source};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FDS: usize = 10_000;
const THREADS: usize = 1_000;
const CONNECTIONS: usize = 1_000;
const ROUNDS: usize = 7;
const WATCH_FOR: &str = "20s";

fn main() {
    if std::env::var_os("LH_BENCH_TARGET").is_some() {
        return be_the_target();
    }
    let mut target = Command::new(std::env::current_exe().unwrap())
        .env("LH_BENCH_TARGET", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(target.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("READY"), "target said {ready:?}");
    let pid = target.id();

    let options = SampleOptions {
        fd_list: true,
        stacks: false,
    };
    let probe = ProcSource::new(pid).unwrap().sample(options).unwrap();
    println!(
        "target pid {pid}: {} fds ({} sockets in tables), {} threads",
        probe.fds.open,
        probe.sockets.len(),
        probe.threads.len()
    );
    assert!(probe.fds.open as usize >= FDS && probe.threads.len() > THREADS);
    assert!(probe.sockets.len() > 2 * CONNECTIONS);

    // A fresh source each round: no caches, the full price of a first snapshot.
    let library = median_of(|| {
        let snap = ProcSource::new(pid).unwrap().sample(options).unwrap();
        assert!(snap.fd_list.unwrap().len() >= FDS);
    });
    let floor = median_of(|| kernel_floor(pid));
    let readlinks = median_of(|| readlink_every_fd(pid, probe.fds.open));
    let bin = env!("CARGO_BIN_EXE_leakhound");
    let pid_s = pid.to_string();
    let cli = median_of(|| run_quiet(bin, &["snapshot", &pid_s, "--json", "--fds"]));
    let lsof = median_of(|| run_quiet("lsof", &["-n", "-P", "-p", &pid_s]));
    let ss = median_of(|| run_quiet("ss", &["-tanp"]));

    println!("\n{:<52} {:>10}", "what (median of 7)", "ms");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<52} {:>10.1}",
        "leakhound ProcSource::sample (fds+sockets, library)",
        ms(library)
    );
    println!(
        "{:<52} {:>10.1}",
        "leakhound snapshot PID --json --fds (process)",
        ms(cli)
    );
    println!(
        "{:<52} {:>10.1}",
        "plain /proc reads, one thread, no parsing",
        ms(floor)
    );
    println!(
        "{:<52} {:>10.1}",
        "  of which: one readlink per fd, nothing else",
        ms(readlinks)
    );
    println!("{:<52} {:>10.1}", "lsof -n -P -p PID", ms(lsof));
    println!("{:<52} {:>10.1}", "ss -tanp", ms(ss));
    println!(
        "{:<52} {:>10.1}",
        "lsof -n -P -p PID + ss -tanp",
        ms(lsof + ss)
    );
    println!(
        "ratio lsof / leakhound snapshot (process): {:.1}x   (lsof + ss) / leakhound: {:.1}x",
        lsof.as_secs_f64() / cli.as_secs_f64(),
        (lsof + ss).as_secs_f64() / cli.as_secs_f64()
    );
    // What no /proc reader can go below: the link of every descriptor, one system call each.
    println!(
        "ratio lsof / the readlinks alone: {:.1}x",
        lsof.as_secs_f64() / readlinks.as_secs_f64()
    );

    // watch at 1 Hz: CPU time of the whole leakhound process over its wall time.
    let before = children_cpu();
    let started = Instant::now();
    run_quiet(bin, &["watch", &pid_s, "--json", "--for", WATCH_FOR]);
    let wall = started.elapsed();
    let cpu = children_cpu() - before;
    println!(
        "watch --for {WATCH_FOR} at 1 Hz: {:.0} ms CPU over {:.1} s = {:.2}% of one core (target < 2%)",
        ms(cpu),
        wall.as_secs_f64(),
        cpu.as_secs_f64() * 100.0 / wall.as_secs_f64()
    );

    // Other load on the machine slows every tool alike but blurs the figures: say how much.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average during the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    drop(target.stdin.take());
    let _ = target.wait();
}

/// The straightforward reads, no parsing, one thread: list and readlink every descriptor, read
/// every thread's stat and wchan, read the TCP table.
fn kernel_floor(pid: u32) {
    let fd_dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&fd_dir).unwrap() {
        let _ = std::fs::read_link(entry.unwrap().path());
    }
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = entry.unwrap().path();
        let _ = std::fs::read(task.join("stat"));
        let _ = std::fs::read(task.join("wchan"));
    }
    let _ = std::fs::read(format!("/proc/{pid}/net/tcp"));
}

/// One `readlinkat` per open descriptor (numbers 0, 1, 2, … as the target's are dense), no
/// listing, no parsing: the least any /proc reader does for the fd list and socket inodes.
fn readlink_every_fd(pid: u32, open: u64) {
    let dir = std::fs::File::open(format!("/proc/{pid}/fd")).unwrap();
    let mut buf = [0u8; 4096];
    let (mut found, mut fd, mut name) = (0, 0, String::with_capacity(12));
    while found < open && fd < 2 * open + 64 {
        use std::fmt::Write;
        name.clear();
        let _ = write!(name, "{fd}");
        if rustix::fs::readlinkat_raw(&dir, name.as_str(), &mut buf[..]).is_ok() {
            found += 1;
        }
        fd += 1;
    }
}

fn median_of(mut f: impl FnMut()) -> Duration {
    f(); // warm the page cache and the kernel's dentries
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2]
}

fn run_quiet(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    // leakhound watch exits 1 when something fired; lsof/ss 0.
    assert!(
        status.code().is_some_and(|c| c <= 1),
        "{program} {args:?}: {status}"
    );
}

/// User + system CPU time of all waited-for children so far.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we own.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The big process: raises its descriptor limit, holds 1,000 loopback connections (both
/// ends: 2,000 sockets plus the listener), fills up to 10,000 descriptors with files, and
/// parks 1,000 threads; then waits until stdin closes.
fn be_the_target() {
    let want = (FDS + 1_000) as u64;
    let limit = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(current_hard_limit()),
    };
    // SAFETY: plain setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        panic!(
            "cannot raise RLIMIT_NOFILE to {want}: {}",
            std::io::Error::last_os_error()
        );
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held_sockets = Vec::with_capacity(2 * CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        held_sockets.push(client);
        held_sockets.push(server);
    }
    let mut files = Vec::new();
    while files.len() + held_sockets.len() + 4 < FDS {
        files.push(std::fs::File::open("/dev/null").unwrap());
    }
    let (park_tx, park_rx) = std::sync::mpsc::channel::<()>();
    let park_rx = std::sync::Arc::new(std::sync::Mutex::new(park_rx));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let rx = std::sync::Arc::clone(&park_rx);
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    // Every thread blocks on the mutex or the channel until the end.
                    let _ = rx.lock().unwrap().recv();
                })
                .unwrap()
        })
        .collect();
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    drop(park_tx);
    for t in threads {
        let _ = t.join();
    }
    drop((files, held_sockets, listener));
}

fn current_hard_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_max
}
