"""Side by side: what the outside view costs a Python service, and how fast it reads stacks.

Run by hand, once (not part of the test suite):

    cargo build --release
    python3 benches/python_outside.py [--leakhound target/release/leakhound] [--py-spy PATH]

1. Throughput: an asyncio echo service on 127.0.0.1 answers a client as fast as it can, in
   rounds of ROUND_S seconds alternating without and with `leakhound watch PID` (the loop
   sampler at its default rate, no probe). Prints requests/s per round and the median cost.
2. One-shot stacks: a Python process with 100 threads, most a few frames deep, read by
   `leakhound snapshot PID --stacks --json` (blocking and --nonblocking) and by `py-spy dump`
   in the same run: wall time of the whole command (median of RUNS), and the longest gap a
   ticker thread inside the target saw meanwhile (how long the target was stopped, plus the
   machine's own noise, shown alone first).

Everything runs on this machine; numbers vary with its load (say so when you quote them).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time

ROUND_S = 5.0
ROUNDS = 4
RUNS = 9

ECHO_SERVICE = textwrap.dedent(
    """
    import asyncio

    async def handle(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)

THREADS_100 = textwrap.dedent(
    """
    import sys, threading, time

    def level(n, stop):
        if n == 0:
            stop.wait()
        else:
            level(n - 1, stop)

    # The longest gap between two ticks 0.2 ms apart: a stop by a reader shows up here, and
    # so does the machine's own scheduling noise.
    longest = [0.0]

    def ticker():
        last = time.perf_counter()
        while True:
            time.sleep(0.0002)
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    stop = threading.Event()
    for i in range(98):
        threading.Thread(target=level, args=(8, stop), name="worker-%d" % i, daemon=True).start()
    threading.Thread(target=ticker, name="ticker", daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        print("%.2f" % (longest[0] * 1000), flush=True)
        longest[0] = 0.0
    """
)


def clean_env():
    env = dict(os.environ)
    for key in ("LEAKHOUND_PROBE", "PYTHONPATH"):
        env.pop(key, None)
    return env


def start(code):
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    return proc, proc.stdout.readline().strip()


def echo_round(port, seconds):
    """Requests per second answered to one client over one connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    reader = sock.makefile("rb")
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            sock.sendall(b"ping\n")
            reader.readline()
        done += 100
    sock.close()
    return done / seconds


def throughput(leakhound):
    proc, port = start(ECHO_SERVICE)
    port = int(port)
    rows = []
    try:
        echo_round(port, 1.0)  # warm up
        for r in range(ROUNDS):
            for watched in (False, True):
                watcher = None
                if watched:
                    watcher = subprocess.Popen(
                        [leakhound, "watch", str(proc.pid), "--json", "--for", "%ds" % (ROUND_S + 3)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.5)  # the sampler starts with the first sample
                rate = echo_round(port, ROUND_S)
                if watcher is not None:
                    watcher.kill()
                    watcher.wait()
                rows.append((watched, rate))
                print("  round %d %-12s %9.0f req/s" % (r, "watched" if watched else "not watched", rate))
    finally:
        proc.kill()
        proc.wait()
    base = statistics.median(rate for w, rate in rows if not w)
    watched = statistics.median(rate for w, rate in rows if w)
    print(
        "  median: %.0f req/s not watched, %.0f watched: cost %.2f%%"
        % (base, watched, 100.0 * (base - watched) / base)
    )


def longest_gap(proc):
    """The longest gap the target's ticker saw since the last call, in ms."""
    proc.stdin.write("?\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def timed(cmd):
    start_at = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - start_at
    if out.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(cmd), out.stderr.strip()))
    return took, out.stdout


def one_shot(leakhound, py_spy):
    proc, _ = start(THREADS_100)
    try:
        time.sleep(0.5)
        pid = str(proc.pid)
        cases = [
            ("nothing (the machine's own noise)", ["sleep", "0.05"]),
            ("leakhound snapshot --stacks", [leakhound, "snapshot", pid, "--stacks", "--json"]),
            (
                "leakhound snapshot --stacks --nonblocking",
                [leakhound, "snapshot", pid, "--stacks", "--nonblocking", "--json"],
            ),
        ]
        if py_spy:
            cases.append(("py-spy dump", [py_spy, "dump", "--pid", pid]))
            cases.append(("py-spy dump --nonblocking", [py_spy, "dump", "--nonblocking", "--pid", pid]))
        for name, cmd in cases:
            times, gaps, note = [], [], None
            for _ in range(RUNS):
                longest_gap(proc)
                took, out = timed(cmd)
                gaps.append(longest_gap(proc))
                times.append(took)
                if out.startswith("{"):
                    doc = json.loads(out)
                    stacks = sum(1 for t in doc["threads"] if t.get("py_stack"))
                    note = "%d python stacks; %s" % (
                        stacks,
                        next(n for n in doc["notes"] if n.startswith("python stacks")),
                    )
            print(
                "  %-42s wall median %6.1f ms (min %.1f, max %.1f); target's longest gap median %.1f ms"
                % (
                    name,
                    1000 * statistics.median(times),
                    1000 * min(times),
                    1000 * max(times),
                    statistics.median(gaps),
                )
            )
            if note:
                print("      last run: %s" % note)
    finally:
        proc.kill()
        proc.wait()


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser()
    parser.add_argument("--leakhound", default=os.path.join(here, "target", "release", "leakhound"))
    parser.add_argument("--py-spy", default=shutil.which("py-spy"))
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print("python %s, leakhound %s, py-spy %s" % (sys.version.split()[0], args.leakhound, args.py_spy))
    if not args.skip_throughput:
        print("1. asyncio echo throughput, without and with `leakhound watch` (outside sampler):")
        throughput(args.leakhound)
    print("2. one-shot stacks of a 100-thread process (%d runs each):" % RUNS)
    one_shot(args.leakhound, args.py_spy)


if __name__ == "__main__":
    main()
