"""A process tree whose workers each hold thousands of TCP sockets (issue #11: "tree sampling
under load re-reads the TCP table per worker"), and what `leakhound snapshot MASTER` and
`leakhound watch MASTER` cost on it, for one or more leakhound builds side by side.

    python3 benches/tree_sockets.py --bin target/release/leakhound [--bin OTHER] \\
        [--workers 4] [--sockets 3000] [--rounds 7] [--watch-secs 20]

The master starts W workers (each its own Python process with the probe loaded, so the tree
source samples every one of them); each worker opens a listener and connects to itself until it
holds S sockets (S/2 established pairs, both ends its own). The rounds alternate the builds:
each round times one `snapshot MASTER --json` per build (wall time, the tree's every member
read), then, once per build, `watch MASTER --json` runs for --watch-secs and its CPU time is
read from /proc. Medians are printed. Run on a quiet machine; it prints the load average.
"""

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK = os.path.join(os.path.dirname(HERE), "probes", "python", "src", "leakhound_probe", "_hook")


def worker(n_sockets):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n_sockets + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    held = []
    for _ in range(n_sockets // 2):
        c = socket.create_connection(listener.getsockname())
        s, _ = listener.accept()
        held += [c, s]
    print("READY", flush=True)
    while True:
        time.sleep(3600)


def master(workers, n_sockets, socket_dir):
    env = dict(os.environ, LEAKHOUND_PROBE="1", LEAKHOUND_SOCKET_DIR=socket_dir,
               PYTHONPATH=HOOK)
    kids = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                              str(n_sockets)], stdout=subprocess.PIPE, env=env)
            for _ in range(workers)]
    for k in kids:
        assert k.stdout.readline().strip() == b"READY"
    # Wait for every worker's probe socket.
    for k in kids:
        path = os.path.join(socket_dir, f"{k.pid}.sock")
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)
    print("READY", " ".join(str(k.pid) for k in kids), flush=True)

    def stop(*_):
        for k in kids:
            k.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_snapshot(binary, pid):
    start = time.perf_counter()
    out = subprocess.run([binary, "snapshot", str(pid), "--json"], capture_output=True)
    took = time.perf_counter() - start
    # Exit 1 means a rule fired; anything else is a failure of the run.
    assert out.returncode in (0, 1), out.stderr.decode()
    return took, out.stdout


def watch_cpu(binary, pid, secs):
    proc = subprocess.Popen([binary, "watch", str(pid), "--json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(3)  # the first samples (and the probe connections) out of the window
    t0, c0 = time.perf_counter(), cpu_secs(proc.pid)
    time.sleep(secs)
    used = (cpu_secs(proc.pid) - c0) / (time.perf_counter() - t0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    return used


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--master":
        master(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--sockets", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--watch-secs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as socket_dir:
        os.chmod(socket_dir, 0o700)
        m = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--master",
                              str(args.workers), str(args.sockets), socket_dir],
                             stdout=subprocess.PIPE)
        try:
            line = m.stdout.readline().split()
            assert line and line[0] == b"READY", line
            kids = {int(p) for p in line[1:]}
            with open("/proc/net/tcp") as f:
                rows = sum(1 for _ in f) - 1
            print(f"tree: master {m.pid}, {args.workers} workers x {args.sockets} sockets; "
                  f"/proc/net/tcp has {rows} rows")
            times = {b: [] for b in args.bin}
            for _ in range(args.rounds):
                for b in args.bin:
                    took, out = time_snapshot(b, m.pid)
                    times[b].append(took)
                    seen = {w.get("pid") for w in json.loads(out).get("workers", [])}
                    assert seen >= kids, f"{b}: workers {seen} of {kids}"
            for b in args.bin:
                print(f"snapshot MASTER --json, {b}: median {statistics.median(times[b]):.3f} s "
                      f"(min {min(times[b]):.3f}, max {max(times[b]):.3f}, "
                      f"{args.rounds} rounds)")
            if args.watch_secs > 0:
                for b in args.bin:
                    used = watch_cpu(b, m.pid, args.watch_secs)
                    print(f"watch MASTER at 1 Hz, {b}: {100 * used:.1f}% of one core "
                          f"over {args.watch_secs} s")
            with open("/proc/loadavg") as f:
                print("load average", " ".join(f.read().split()[:3]))
        finally:
            m.terminate()
            m.wait()


if __name__ == "__main__":
    main()
