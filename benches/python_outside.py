"""Side by side: what the outside view costs a Python service, and how fast it reads stacks.

Run by hand, once (not part of the test suite):

    cargo build --release
    python3 benches/python_outside.py [--leakhound target/release/leakhound] [--py-spy PATH]

1. Throughput: an asyncio loop that never idles (each callback does a little work and
   schedules the next) counts its callbacks, in rounds of ROUND_S seconds alternating without
   and with `leakhound watch PID` (the loop sampler at its default rate, no probe). Prints
   callbacks/s per round and the median cost. (A one-connection echo service was tried first:
   its ping-pong latency swung 3x between rounds on a loaded 2-core machine, watched or not.)
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
import statistics
import subprocess
import sys
import textwrap
import time

ROUND_S = 3.0
ROUNDS = 8
RUNS = 9

SERVICE = textwrap.dedent(
    """
    import asyncio, sys, threading

    # An event loop that never idles: each callback does a little work and schedules the next,
    # as a busy service would. Its own count of callbacks is the throughput measured; a line
    # on stdin asks for the count since the last ask.
    done = [0]

    def step(loop):
        sum(range(300))
        done[0] += 1
        loop.call_soon(step, loop)

    def asks():
        for _ in sys.stdin:
            print(done[0], flush=True)
            done[0] = 0

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_soon(step, loop)
        print("ready", flush=True)
        threading.Thread(target=asks, daemon=True).start()
        await asyncio.Event().wait()

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


def ask(proc):
    """The target's answer to one line on its stdin."""
    proc.stdin.write("?\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def throughput(leakhound):
    proc, _ = start(SERVICE)
    rows = []
    try:
        time.sleep(1.0)  # warm up
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
                ask(proc)
                time.sleep(ROUND_S)
                rate = ask(proc) / ROUND_S
                if watcher is not None:
                    watcher.kill()
                    watcher.wait()
                rows.append((watched, rate))
                print("  round %d %-12s %9.0f callbacks/s" % (r, "watched" if watched else "not watched", rate))
    finally:
        proc.kill()
        proc.wait()
    base = statistics.median(rate for w, rate in rows if not w)
    watched = statistics.median(rate for w, rate in rows if w)
    print(
        "  median: %.0f callbacks/s not watched, %.0f watched: cost %.2f%%"
        % (base, watched, 100.0 * (base - watched) / base)
    )


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
                ask(proc)
                took, out = timed(cmd)
                gaps.append(ask(proc))
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
        print("1. busy asyncio loop throughput, without and with `leakhound watch` (outside sampler):")
        throughput(args.leakhound)
    print("2. one-shot stacks of a 100-thread process (%d runs each):" % RUNS)
    one_shot(args.leakhound, args.py_spy)


if __name__ == "__main__":
    main()
