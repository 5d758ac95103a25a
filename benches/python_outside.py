"""Side by side: what the outside view costs a Python service, and how fast it reads stacks.

Run by hand, once (not part of the test suite):

    cargo build --release
    python3 benches/python_outside.py [--leakhound target/release/leakhound] [--py-spy PATH]

1. Throughput: an asyncio loop that never idles (each callback does a little work and
   schedules the next) counts its callbacks in rounds of ROUND_S seconds. Three arms take
   turns, rotated each round (ABC, BCA, CAB, ...): not watched, `leakhound watch PID` (the
   outside loop sampler at its default rate, no probe), and `py-spy record --nonblocking` at
   the same rate. Each watcher runs through the whole bench and is paused with SIGSTOP outside
   its own rounds (its reads never stop the target, so a pause cannot either). Printed per
   arm: the median callbacks/s and its cost against not watched; the same per CPU-second the
   target got (the interference alone, whatever the machine's load left it); the median of
   each round's cost against the not-watched round next to it; the watcher's own CPU.
   (A one-connection echo service was tried first: its ping-pong latency swung 3x between
   rounds on a loaded 2-core machine, watched or not.)
2. One-shot stacks: a Python process with 100 threads, most a few frames deep, read by
   `leakhound snapshot PID --stacks --json` (blocking and --nonblocking) and by `py-spy dump`
   in the same run, interleaved (each run goes through every command once, rotated): wall
   time of the whole command (median of RUNS), and the longest gap two
   ticker threads inside the target (its first thread and its last) saw meanwhile (how long
   the target was stopped, plus the machine's own noise, shown alone first).
   `--before PATH`: another leakhound build's blocking read beside it (same run);
   `--hogs N`: N busy processes at nice 0 meanwhile, to see it on a loaded machine.

Everything runs on this machine; numbers vary with its load (say so when you quote them).
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time

ROUND_S = 2.0
SETTLE_S = 0.3
ROUNDS = 24
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
    # so does the machine's own scheduling noise. Two tickers, the first thread started and
    # the last: a reader that stops threads one by one, in /proc's order, stops the first one
    # longest.
    longest = [0.0]

    def ticker():
        last = time.perf_counter()
        while True:
            time.sleep(0.0002)
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    stop = threading.Event()
    threading.Thread(target=ticker, name="ticker-first", daemon=True).start()
    for i in range(97):
        threading.Thread(target=level, args=(8, stop), name="worker-%d" % i, daemon=True).start()
    threading.Thread(target=ticker, name="ticker-last", daemon=True).start()
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


# Set from the command line: a niceness or real-time scheduling, and a CPU, for the target
# and every watcher.
PLACE = {"nice": None, "cpu": None, "rt": False}


def placed(watcher=False):
    """Runs in each child before exec: `--nice` lifts the target and its watchers above the
    machine's other work alike (they then compete with each other, as on a quiet machine);
    `--cpu` puts them on one core (no spare core: the worst case for the target); `--rt` runs
    them real-time there, a watcher one priority above the target, so the machine's other
    work cannot run on that core and every microsecond a watcher takes is the target's."""
    if PLACE["nice"] is not None:
        os.nice(PLACE["nice"])
    if PLACE["cpu"] is not None:
        os.sched_setaffinity(0, {PLACE["cpu"]})
    if PLACE["rt"]:
        # The target round-robin (its thread that answers the bench must get a turn), each
        # watcher first-in first-out one priority above (it runs the moment it wakes).
        policy = os.SCHED_FIFO if watcher else os.SCHED_RR
        os.sched_setscheduler(0, policy, os.sched_param(2 if watcher else 1))


def watcher_placed():
    placed(watcher=True)


def sampler_cpu_s(pid):
    """CPU seconds of leakhound's loop sampler thread (named leakhound-pysampler), or 0."""
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().startswith("leakhound-pysam"):
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def start(code):
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
        preexec_fn=placed,
    )
    return proc, proc.stdout.readline().strip()


def ask(proc):
    """The target's answer to one line on its stdin."""
    proc.stdin.write("?\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def cpu_s(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(leakhound, py_spy, also_hz=()):
    """Interleaved rounds: each watcher runs for the whole bench and is paused (SIGSTOP)
    outside its own rounds, so every round is ROUND_S of the same target, and the arms take
    turns (rotated each round) through the machine's changing load. The sampler reads without
    ptrace (never stops the target), so pausing it mid-read cannot stop the target.
    `also_hz`: more leakhound arms, each at that sampler rate (LEAKHOUND_PY_SAMPLE_HZ)."""
    proc, _ = start(SERVICE)
    arms = [("not watched", None)]
    watchers = []
    try:
        for hz in [os.environ.get("LEAKHOUND_PY_SAMPLE_HZ", "20")] + [str(h) for h in also_hz]:
            watch = subprocess.Popen(
                [leakhound, "watch", str(proc.pid), "--json", "--for", "1h"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=watcher_placed,
                env=dict(os.environ, LEAKHOUND_PY_SAMPLE_HZ=hz),
            )
            watchers.append(watch)
            arms.append(("leakhound watch (%s Hz)" % hz, watch))
        if py_spy:
            record = subprocess.Popen(
                [py_spy, "record", "--nonblocking", "-r", "20", "-p", str(proc.pid),
                 "-f", "raw", "-o", os.devnull, "-d", "3600"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=watcher_placed,
            )
            watchers.append(record)
            arms.append(("py-spy record --nonblocking -r 20", record))
        time.sleep(3.0)  # each watcher has found the interpreter and sampled
        for w in watchers:
            os.kill(w.pid, signal.SIGSTOP)
        rows = {name: [] for name, _ in arms}
        for r in range(ROUNDS):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            for name, w in order:
                if w is not None:
                    os.kill(w.pid, signal.SIGCONT)
                time.sleep(SETTLE_S)
                ask(proc)
                cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
                wcpu0 = (cpu_s(w.pid), sampler_cpu_s(w.pid)) if w else (0.0, 0.0)
                time.sleep(ROUND_S)
                done = ask(proc)
                took = time.perf_counter() - t0
                cpu = cpu_s(proc.pid) - cpu0
                wcpu = (cpu_s(w.pid) - wcpu0[0], sampler_cpu_s(w.pid) - wcpu0[1]) if w else (0.0, 0.0)
                if w is not None:
                    os.kill(w.pid, signal.SIGSTOP)
                rows[name].append((done / took, done / max(cpu, 1e-9), 100.0 * wcpu[0] / took,
                                   100.0 * wcpu[1] / took))
            print("  round %2d  " % r + "  ".join(
                "%s %7.0f/s" % (name.split()[0], rows[name][-1][0]) for name, _ in arms))
    finally:
        for w in watchers:
            os.kill(w.pid, signal.SIGCONT)
            w.kill()
            w.wait()
        proc.kill()
        proc.wait()
    base = rows[arms[0][0]]
    print("  %-36s %12s %8s %16s %8s %14s %17s %8s %8s" % (
        "arm", "callbacks/s", "cost", "per target CPU-s", "cost", "paired cost",
        "(95% CI)", "its CPU", "sampler"))
    for name, _ in arms:
        wall = statistics.median(x[0] for x in rows[name])
        per_cpu = statistics.median(x[1] for x in rows[name])
        paired = statistics.median(
            100.0 * (b[0] - x[0]) / b[0] for b, x in zip(base, rows[name]))
        low, high = median_ci([100.0 * (b[0] - x[0]) / b[0] for b, x in zip(base, rows[name])])
        own = statistics.median(x[2] for x in rows[name])
        sampler = statistics.median(x[3] for x in rows[name])
        print("  %-36s %12.0f %7.2f%% %16.0f %7.2f%% %13.2f%% %8.1f..%5.1f%% %7.2f%% %7.2f%%" % (
            name, wall, 100.0 * (statistics.median(x[0] for x in base) - wall)
            / statistics.median(x[0] for x in base),
            per_cpu, 100.0 * (statistics.median(x[1] for x in base) - per_cpu)
            / statistics.median(x[1] for x in base), paired, low, high, own, sampler))


def median_ci(values, resamples=2000):
    """A 95% bootstrap interval of the median of `values` (fixed seed: reruns agree)."""
    rng = random.Random(7)
    medians = sorted(
        statistics.median(rng.choice(values) for _ in values) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def timed(cmd):
    start_at = time.perf_counter()
    # Placed like the target (`--nice`, `--cpu`, `--rt` as a watcher).
    out = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=watcher_placed
    )
    took = time.perf_counter() - start_at
    if out.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(cmd), out.stderr.strip()))
    return took, out.stdout


def one_shot(leakhound, py_spy, before=None, hogs=0):
    proc, _ = start(THREADS_100)
    # The machine's other work, made here: busy processes at nice 0 on any CPU.
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        time.sleep(0.5)
        pid = str(proc.pid)
        cases = [
            ("nothing (the machine's own noise)", ["sleep", "0.05"]),
            ("leakhound snapshot --stacks", [leakhound, "snapshot", pid, "--stacks", "--json"]),
        ]
        if before:
            cases.append(
                ("leakhound --stacks (--before)", [before, "snapshot", pid, "--stacks", "--json"])
            )
        cases += [
            (
                "leakhound snapshot --stacks --nonblocking",
                [leakhound, "snapshot", pid, "--stacks", "--nonblocking", "--json"],
            ),
        ]
        if py_spy:
            cases.append(("py-spy dump", [py_spy, "dump", "--pid", pid]))
            cases.append(("py-spy dump --nonblocking", [py_spy, "dump", "--nonblocking", "--pid", pid]))
        # Interleaved: each run goes through every case once (rotated), so the machine's
        # load changes hit every case alike.
        results = {name: ([], [], None, []) for name, _ in cases}
        for run in range(RUNS):
            k = run % len(cases)
            for name, cmd in cases[k:] + cases[:k]:
                times, gaps, _, phases = results[name]
                ask(proc)
                took, out = timed(cmd)
                gaps.append(ask(proc))
                times.append(took)
                if out.startswith("{"):
                    doc = json.loads(out)
                    stacks = sum(1 for t in doc["threads"] if t.get("py_stack"))
                    said = next(n for n in doc["notes"] if n.startswith("python stacks"))
                    # "... read in R ms after O ms finding the interpreter ..."
                    found = re.search(r"read in ([0-9.]+) ms after ([0-9.]+) ms", said)
                    if found:
                        phases.append((float(found.group(2)), float(found.group(1))))
                    note = "%d python stacks; %s" % (stacks, said)
                    results[name] = (times, gaps, note, phases)
        for name, _ in cases:
            times, gaps, note, phases = results[name]
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
            if phases:
                print(
                    "      its own note, median: finding the interpreter %.1f ms, the read %.1f ms"
                    % (
                        statistics.median(p[0] for p in phases),
                        statistics.median(p[1] for p in phases),
                    )
                )
            if note:
                print("      last run: %s" % note)
    finally:
        for p in busy + [proc]:
            p.kill()
            p.wait()


def main():
    # Stopped from outside (a timeout): still stop the target and watchers (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser()
    parser.add_argument("--leakhound", default=os.path.join(here, "target", "release", "leakhound"))
    parser.add_argument("--py-spy", default=shutil.which("py-spy"))
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-one-shot", action="store_true")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="throughput rounds per arm")
    parser.add_argument("--also-hz", type=int, action="append", default=[],
                        help="another `leakhound watch` arm at this sampler rate (repeatable)")
    parser.add_argument("--runs", type=int, default=RUNS, help="one-shot runs per command")
    parser.add_argument("--nice", type=int, help="niceness of the target and watchers (root: -10)")
    parser.add_argument("--cpu", type=int, help="run the target and watchers on this CPU only")
    parser.add_argument("--before", help="another leakhound binary, read blocking beside (one-shot)")
    parser.add_argument("--hogs", type=int, default=0,
                        help="busy processes at nice 0 during the one-shot runs (a loaded machine)")
    parser.add_argument("--rt", action="store_true",
                        help="with --cpu: SCHED_FIFO, watchers above the target (root)")
    args = parser.parse_args()
    globals().update(ROUNDS=args.rounds, RUNS=args.runs)
    PLACE.update(nice=args.nice, cpu=args.cpu, rt=args.rt)
    if args.rt and args.cpu is None:
        raise SystemExit("--rt needs --cpu: a real-time busy loop must not take every core")
    print("python %s, leakhound %s, py-spy %s, nice %s, cpu %s, rt %s, hogs %d, load average %.1f" % (
        sys.version.split()[0], args.leakhound, args.py_spy, args.nice, args.cpu, args.rt,
        args.hogs, os.getloadavg()[0]))
    if not args.skip_throughput:
        print("1. busy asyncio loop throughput, without and with `leakhound watch` (outside sampler):")
        throughput(args.leakhound, args.py_spy, args.also_hz)
    if not args.skip_one_shot:
        print("2. one-shot stacks of a 100-thread process (%d runs each):" % RUNS)
        one_shot(args.leakhound, args.py_spy, args.before, args.hogs)


if __name__ == "__main__":
    main()
