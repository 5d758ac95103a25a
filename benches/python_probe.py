#!/usr/bin/env python3
"""What the Python probe costs an asyncio program, side by side with asyncio debug mode.

Two workloads, each run in a fresh interpreter per mode, modes interleaved round by round so
machine noise hits them alike; the median of the rounds is reported, with the ratio to plain.
Throughput is per CPU second of the measured process (all its threads, the probe's included),
so other load on a shared machine does not blur the comparison:

* tasks: many short tasks (create, one await, finish), gathered in batches;
* echo:  an asyncio echo server; a second process (no probe) drives it over loopback with
         a fixed number of connections and messages;
* open:  files opened and closed, sockets made and closed, in a loop: what noting each one's
         creation site (so an unclosed one is reported at the program's line) costs. Run in
         modes plain, probe, and probe-nosites (LEAKHOUND_RESOURCE_WARNINGS=0: no sites).

Modes: plain; probe (loaded through the environment, as `leakhound run` does); probe+sampled
(the same, with a collector taking a snapshot every second, as `leakhound watch` does); and
asyncio debug mode (PYTHONASYNCIODEBUG=1), the built-in alternative.

Usage: python3 benches/python_probe.py [--rounds 5] [--tasks 20000] [--messages 20000]
       [--opens 20000] [--workloads tasks,echo,open]
Not run by scripts/test.sh. Every load loop is bounded in count and time.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK = os.path.join(os.path.dirname(HERE), "probes", "python", "src", "leakhound_probe", "_hook")

TASKS = """
import asyncio, json, sys, time

async def job(i):
    await asyncio.sleep(0)
    return i

async def main(total, batch):
    start = time.process_time()  # every thread of the process: the probe's cost included
    done = 0
    while done < total:
        await asyncio.gather(*(asyncio.create_task(job(i)) for i in range(batch)))
        done += batch
    return total / (time.process_time() - start)

print(json.dumps({"rate": asyncio.run(main(int(sys.argv[1]), 500))}))
"""

SERVER = """
import asyncio, sys

async def echo(reader, writer):
    try:
        while True:
            data = await reader.read(4096)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.wait_for(asyncio.get_running_loop().create_future(), 120)

try:
    asyncio.run(main())
except asyncio.TimeoutError:
    pass
"""

OPEN = """
import json, os, socket, sys, time

def main(total, path):
    start = time.process_time()
    for _ in range(total):
        with open(path, "rb") as f:
            f.read(1)
        socket.socket().close()
    return total / (time.process_time() - start)

print(json.dumps({"rate": main(int(sys.argv[1]), sys.argv[0])}))
"""

LOAD = """
import asyncio, json, sys, time

MESSAGE = b"x" * 63 + b"\\n"

async def client(port, count):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(MESSAGE)
        await writer.drain()
        await reader.readexactly(len(MESSAGE))
    writer.close()
    await writer.wait_closed()

async def main(port, connections, total):
    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(client(port, total // connections) for _ in range(connections))), 60)
    return total / (time.perf_counter() - start)

print(json.dumps({"rate": asyncio.run(main(int(sys.argv[1]), 20, int(sys.argv[2])))}))
"""


def cpu_seconds(pid):
    """CPU time of every thread of a process, in nanosecond resolution (schedstat).
    Threads that already ended are not counted: the measured ones live through the load."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def env_for(mode, socket_dir):
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("LEAKHOUND_PROBE", None)
    env.pop("LEAKHOUND_RESOURCE_WARNINGS", None)
    if mode.startswith("probe"):
        env.update(LEAKHOUND_PROBE="1", LEAKHOUND_SOCKET_DIR=socket_dir,
                   PYTHONPATH=os.pathsep.join(p for p in [HOOK, env.get("PYTHONPATH")] if p))
        if mode == "probe-nosites":
            env["LEAKHOUND_RESOURCE_WARNINGS"] = "0"
    elif mode == "debug":
        env["PYTHONASYNCIODEBUG"] = "1"
    return env


class Sampler:
    """A collector taking one snapshot a second from a probe, as `leakhound watch` would."""

    def __init__(self, path):
        self.path = path
        self.stop = threading.Event()
        self.taken = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            if os.path.exists(self.path):
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.settimeout(5)
                        s.connect(self.path)
                        f = s.makefile("rwb")
                        f.readline()
                        f.write(b'{"type":"snapshot","id":1}\n')
                        f.flush()
                        f.readline()
                        self.taken += 1
                except OSError:
                    pass
            self.stop.wait(1.0)

    def close(self):
        self.stop.set()
        self.thread.join(10)


def run_tasks(mode, socket_dir, folder, total, name="tasks.py"):
    script = os.path.join(folder, name)
    # stderr dropped: debug mode prints a "slow callback" line per long step.
    proc = subprocess.Popen([sys.executable, script, str(total)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env_for(mode, socket_dir))
    sampler = Sampler(os.path.join(socket_dir, "%d.sock" % proc.pid)) if mode == "probe+sampled" else None
    out, _ = proc.communicate(timeout=120)
    if sampler:
        sampler.close()
    return json.loads(out)["rate"]


def run_echo(mode, socket_dir, folder, messages):
    server = subprocess.Popen([sys.executable, os.path.join(folder, "server.py")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=env_for(mode, socket_dir))
    sampler = None
    try:
        port = server.stdout.readline().strip()
        if mode == "probe+sampled":
            sampler = Sampler(os.path.join(socket_dir, "%d.sock" % server.pid))
        before = cpu_seconds(server.pid)
        load = subprocess.run([sys.executable, os.path.join(folder, "load.py"), port, str(messages)],
                              capture_output=True, text=True, env=env_for("plain", socket_dir),
                              timeout=120)
        json.loads(load.stdout)  # the load finished
        return messages / max(1e-9, cpu_seconds(server.pid) - before)
    finally:
        if sampler:
            sampler.close()
        server.kill()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--opens", type=int, default=20000)
    parser.add_argument("--workloads", default="tasks,echo,open",
                        help="comma-separated: tasks, echo, open")
    args = parser.parse_args()
    chosen = set(args.workloads.split(","))
    modes = ["plain", "probe", "probe+sampled", "debug"]
    open_modes = ["plain", "probe", "probe-nosites"]
    with tempfile.TemporaryDirectory(prefix="leakhound-bench-") as folder:
        socket_dir = os.path.join(folder, "sockets")
        for name, body in (("tasks.py", TASKS), ("server.py", SERVER), ("load.py", LOAD),
                           ("open.py", OPEN)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(textwrap.dedent(body))
        results = {(w, m): [] for w in ("tasks", "echo") for m in modes}
        results.update({("open", m): [] for m in open_modes})
        for round_no in range(args.rounds):
            for mode in modes:
                if "tasks" in chosen:
                    results[("tasks", mode)].append(
                        run_tasks(mode, socket_dir, folder, args.tasks))
                if "echo" in chosen:
                    results[("echo", mode)].append(
                        run_echo(mode, socket_dir, folder, args.messages))
            for mode in open_modes if "open" in chosen else ():
                results[("open", mode)].append(
                    run_tasks(mode, socket_dir, folder, args.opens, name="open.py"))
            sys.stderr.write("round %d/%d done\n" % (round_no + 1, args.rounds))
    print("python %s, %d rounds, median throughput per CPU second (ratio to plain)"
          % (sys.version.split()[0], args.rounds))
    for workload, unit, names in (("tasks", "tasks/cpu-s", modes), ("echo", "msgs/cpu-s", modes),
                                  ("open", "opens/cpu-s", open_modes)):
        if workload not in chosen:
            continue
        plain = statistics.median(results[(workload, "plain")])
        cells = []
        for mode in names:
            rate = statistics.median(results[(workload, mode)])
            cells.append("%s %.0f %s (%.3f)" % (mode, rate, unit, rate / plain))
        print("%-6s %s" % (workload, " | ".join(cells)))


if __name__ == "__main__":
    main()
