#!/usr/bin/env python3
"""What the Python probe and `leakhound watch` cost a real HTTP service under load.

Two services, each started afresh per round and mode:

* fastapi: FastAPI on uvicorn with uvloop and httptools (what `uvicorn[standard]` runs);
* aiohttp: an aiohttp.web application on asyncio's own loop.

Both answer `GET /items/N` with a small JSON body after one `await`. A separate client process
(raw sockets on uvloop, no HTTP library: it must not be the bottleneck) keeps `--clients`
keep-alive connections busy for `--seconds` after a one-second warm-up, so every sample finds
that many connections and request tasks alive.

Modes, interleaved round by round (A B C A B C ...) so machine noise hits them alike:
  plain          no probe;
  probe          the probe loaded through the environment, as `leakhound run` loads it;
  probe+watch    the same, with `leakhound watch PID --interval 1s` running throughout;
  baseline, baseline+watch   the same with another probe (--baseline-hook).
With --load-held N, N more requests wait throughout (a long poll each: tasks and sockets alive).

Per run: throughput (requests / wall seconds of the load), the server's CPU per request
(utime + stime from /proc/PID/stat over the same window, / requests), and the CPU of the
probe's own threads (every thread but the main one, from schedstat) per second. Medians of the
rounds, with their ratio to plain; the probe threads' extra CPU per second when watched is
what one `watch` sample costs the server.

Then the snapshot cost: the service under the same load plus `--held` requests that wait (a
long poll: a task and a socket alive for each), sampled like `watch` (one snapshot a second on
one connection); the CPU of the probe's connection thread around each snapshot (it builds the
snapshot and its JSON), the mean of `--samples` (a costly snapshot is sent again for a while
instead of being rebuilt: the mean is what 1 Hz sampling costs), and the reply's size; beside
another probe
(`--baseline-hook`, e.g. an older checkout's) when given.

Usage: python benches/python_service.py [--rounds 5] [--seconds 8] [--clients 20]
       [--services fastapi,aiohttp] [--held 0,1000] [--baseline-hook DIR] [--leakhound PATH]
Needs fastapi, uvicorn[standard], aiohttp (`pip install -e "probes/python[test]"`) and a
built leakhound (LEAKHOUND_BIN, else target/release, else target/debug). Not run by
scripts/test.sh. Every wait is bounded.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOOK = os.path.join(ROOT, "probes", "python", "src", "leakhound_probe", "_hook")
TICK = os.sysconf("SC_CLK_TCK")

FASTAPI = """
import asyncio, socket, sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()

@app.get("/items/{n}")
async def item(n: int):
    await asyncio.sleep(0)
    return {"n": n, "name": "item-%d" % n, "ok": True}

never = asyncio.Event()

@app.get("/hold")
async def hold():  # a request that waits (a long poll): a task and a socket alive per client
    await never.wait()

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning",
                        access_log=False)
uvicorn.Server(config).run(sockets=[sock])
"""

AIOHTTP = """
import asyncio, socket, sys
from aiohttp import web

async def item(request):
    await asyncio.sleep(0)
    n = int(request.match_info["n"])
    return web.json_response({"n": n, "name": "item-%d" % n, "ok": True})

never = asyncio.Event()

async def hold(request):
    await never.wait()

app = web.Application()
app.router.add_get("/items/{n}", item)
app.router.add_get("/hold", hold)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(app, sock=sock, access_log=None, print=None)
"""

# One line of JSON on stdout: requests done in the measured window, its wall time, errors.
CLIENT = """
import asyncio, json, sys, time
try:
    import uvloop
except ImportError:
    uvloop = None

async def client(port, i, stop_at, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = i
    try:
        while time.monotonic() < stop_at:
            writer.write(b"GET /items/%d HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n" % n)
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                counts[0] += 1
            else:
                counts[1] += 1
            n += 1
    finally:
        writer.close()

async def held(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hold HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n")
    await reader.read(1)
    writer.close()

async def main(port, clients, warmup, seconds, holding=0):
    counts = [0, 0]
    start = time.monotonic()
    parked = [asyncio.ensure_future(held(port)) for _ in range(holding)]
    stop_at = start + warmup + seconds
    tasks = [asyncio.ensure_future(client(port, i, stop_at, counts)) for i in range(clients)]
    await asyncio.sleep(warmup)
    sys.stdout.write("go\\n")
    sys.stdout.flush()
    begun, at_begin = time.monotonic(), counts[0]
    await asyncio.wait_for(asyncio.gather(*tasks), warmup + seconds + 30)
    ended = time.monotonic()
    for task in parked:
        task.cancel()
    print(json.dumps({"requests": counts[0] - at_begin, "wall": ended - begun,
                      "errors": counts[1]}), flush=True)

run = uvloop.run if uvloop is not None else asyncio.run
run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]),
         int(sys.argv[5]) if len(sys.argv) > 5 else 0))
"""


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def leakhound_bin():
    for path in (os.environ.get("LEAKHOUND_BIN"),
                 os.path.join(ROOT, "target", "release", "leakhound"),
                 os.path.join(ROOT, "target", "debug", "leakhound")):
        if path and os.access(path, os.X_OK):
            return path
    sys.exit("no leakhound binary: build it (cargo build) or set LEAKHOUND_BIN")


def env_for(mode, socket_dir, hook=HOOK):
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("LEAKHOUND_")] + ["PYTHONASYNCIODEBUG"]:
        env.pop(key, None)
    if mode.startswith(("probe", "baseline")):
        env.update(LEAKHOUND_PROBE="1", LEAKHOUND_SOCKET_DIR=socket_dir,
                   PYTHONPATH=os.pathsep.join(p for p in [hook, env.get("PYTHONPATH")] if p))
    return env


def one_run(service, mode, folder, args, binary):
    socket_dir = os.path.join(folder, "sockets")
    hook = args.baseline_hook if mode.startswith("baseline") else HOOK
    server, port = start_server(service, folder, env_for(mode, socket_dir, hook))
    watcher = client = None
    try:
        if mode.endswith("+watch"):
            sock = os.path.join(socket_dir, "%d.sock" % server.pid)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not os.path.exists(sock):
                time.sleep(0.05)
            watcher = subprocess.Popen(
                [binary, "watch", str(server.pid), "--interval", "1s", "--json",
                 "--for", "%ds" % (args.seconds + 30)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env_for("plain", socket_dir))
        client = subprocess.Popen(
            [sys.executable, os.path.join(folder, "client.py"), port, str(args.clients), "1",
             str(args.seconds), str(args.load_held)], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env_for("plain", socket_dir))
        if client.stdout.readline().strip() != "go":
            raise RuntimeError("the client did not start")
        before, threads_before = cpu_ticks(server.pid), thread_cpu_ms(server.pid)
        line = client.stdout.readline()
        after, threads_after = cpu_ticks(server.pid), thread_cpu_ms(server.pid)
        result = json.loads(line)
        client.wait(30)
        if result["errors"] or not result["requests"]:
            raise RuntimeError("%s/%s: %r" % (service, mode, result))
        cpu = (after - before) / TICK
        # The probe's own threads (watchdog, server, connections): every thread but the main
        # one, whose loop serves the requests (neither service starts threads of its own).
        others = sum(ms - threads_before.get(tid, 0.0) for tid, ms in threads_after.items()
                     if tid != server.pid)
        return {
            "rps": result["requests"] / result["wall"],
            "cpu_per_req_ms": cpu * 1000.0 / result["requests"],
            "probe_threads_ms_per_s": others / result["wall"],
            "requests": result["requests"],
        }
    finally:
        for proc in (client, watcher):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        stop(server)


def start_server(service, folder, env):
    """The service, once it accepts connections; and its port."""
    server = subprocess.Popen([sys.executable, os.path.join(folder, "serve_%s.py" % service)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=env)
    port = server.stdout.readline().strip()
    if not port.isdigit():
        stop(server)
        raise RuntimeError("%s did not start" % service)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, port


def stop(server):
    server.send_signal(signal.SIGINT)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def thread_cpu_ms(pid):
    """{tid: CPU ms} of every thread of pid (schedstat: nanoseconds)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e6
        except (OSError, ValueError, IndexError):
            pass
    return out


def snapshot_cost(service, hook, held, folder, args):
    """What one snapshot costs the service, under load with `held` requests waiting: the CPU
    of the probe's connection thread (it builds the snapshot and its JSON) around each request,
    the median of --samples, 1 s apart (as `watch` asks); and the reply's size."""
    socket_dir = os.path.join(folder, "sockets")
    server, port = start_server(service, folder, env_for("probe", socket_dir, hook))
    client = None
    try:
        client = subprocess.Popen(
            [sys.executable, os.path.join(folder, "client.py"), port, str(args.clients), "1",
             str(args.samples + 30), str(held)], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env_for("plain", socket_dir))
        if client.stdout.readline().strip() != "go":
            raise RuntimeError("the client did not start")
        path = os.path.join(socket_dir, "%d.sock" % server.pid)
        costs, sizes, tasks, taken = [], [], 0, set()
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            before = set(thread_cpu_ms(server.pid))
            conn.connect(path)
            replies = conn.makefile("rwb")
            replies.readline()  # hello: the connection's thread runs by now
            mine = [tid for tid in thread_cpu_ms(server.pid) if tid not in before]
            if len(mine) != 1:
                raise RuntimeError("cannot tell the probe's connection thread: %r" % mine)
            for n in range(args.samples):
                time.sleep(1.0)
                cpu = thread_cpu_ms(server.pid)[mine[0]]
                replies.write(b'{"type":"snapshot","id":%d}\n' % n)
                replies.flush()
                line = replies.readline()
                costs.append(thread_cpu_ms(server.pid)[mine[0]] - cpu)
                sizes.append(len(line))
                data = json.loads(line)["data"]
                tasks = len(data["tasks"])
                taken.add(data["now_ms"])
        # The mean, not the median: a snapshot that took long is sent again for a while
        # (_server.SNAPSHOT_DUTY), so at 1 Hz some replies cost nothing; the mean is what
        # sampling at 1 Hz costs the service per sample.
        return statistics.mean(costs), statistics.median(sizes), tasks, len(taken)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        stop(server)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--services", default="fastapi,aiohttp")
    parser.add_argument("--modes", default="plain,probe,probe+watch")
    parser.add_argument("--leakhound", default=None, help="the leakhound binary to watch with")
    parser.add_argument("--load-held", type=int, default=0,
                        help="requests held waiting during the load runs too")
    parser.add_argument("--held", default="0,1000",
                        help="snapshot cost: requests held waiting, comma-separated ('' skips)")
    parser.add_argument("--samples", type=int, default=7, help="snapshot cost: snapshots each")
    parser.add_argument("--baseline-hook", default=None,
                        help="snapshot cost: another probe's _hook folder to compare with "
                             "(e.g. an older checkout's probes/python/src/leakhound_probe/_hook)")
    args = parser.parse_args()
    binary = args.leakhound or leakhound_bin()
    services = args.services.split(",")
    modes = [m for m in args.modes.split(",") if m]
    held = [int(h) for h in args.held.split(",") if h]
    hooks = [("this probe", HOOK)] + ([("baseline", args.baseline_hook)]
                                      if args.baseline_hook else [])
    results = {(s, m): [] for s in services for m in modes}
    costs = {}
    with tempfile.TemporaryDirectory(prefix="leakhound-service-bench-") as folder:
        os.mkdir(os.path.join(folder, "sockets"), 0o700)
        for name, body in (("serve_fastapi.py", FASTAPI), ("serve_aiohttp.py", AIOHTTP),
                           ("client.py", CLIENT)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(textwrap.dedent(body))
        for round_no in range(args.rounds if modes else 0):
            for service in services:
                for mode in modes:
                    row = one_run(service, mode, folder, args, binary)
                    results[(service, mode)].append(row)
                    sys.stderr.write("round %d %-8s %-12s %8.0f req/s %7.3f ms CPU/req, probe "
                                     "threads %.1f ms/s\n" % (
                                         round_no + 1, service, mode, row["rps"],
                                         row["cpu_per_req_ms"], row["probe_threads_ms_per_s"]))
        for service in services:
            for count in held:
                for name, hook in hooks:
                    costs[(service, count, name)] = snapshot_cost(service, hook, count, folder,
                                                                  args)
                    sys.stderr.write("%s held %d %s: %.2f ms, %d bytes, %d tasks, %d built\n"
                                     % (service, count, name, *costs[(service, count, name)]))
    load = os.getloadavg()
    print("python %s, %d rounds of %gs, %d clients, leakhound %s, load average %.1f %.1f %.1f"
          % (sys.version.split()[0], args.rounds, args.seconds, args.clients, binary, *load))
    if modes:
        print("medians; ratio to plain in brackets")
    for service in services if modes else ():
        med = {}
        for mode in modes:
            rows = results[(service, mode)]
            med[mode] = [statistics.median(r[key] for r in rows) for key in
                         ("rps", "cpu_per_req_ms", "probe_threads_ms_per_s", "requests")]
        plain = med.get("plain", next(iter(med.values())))
        cells = ["%s %.0f req/s (%.3f), %.3f ms CPU/req (%.3f)" % (
            mode, rps, rps / plain[0], cpu, cpu / plain[1])
            for mode, (rps, cpu, _, _) in med.items()]
        print("%-8s %s" % (service, " | ".join(cells)))
        for alone in ("probe", "baseline"):
            if alone not in med or alone + "+watch" not in med:
                continue
            probe, watched = med[alone], med[alone + "+watch"]
            print("%-8s %s: watch at 1 Hz vs the probe alone: %+.1f%% CPU per request; the "
                  "probe's threads %.2f ms/s alone, %.2f ms/s watched (%+.2f ms per sample)" % (
                      service, alone, 100.0 * (watched[1] / probe[1] - 1), probe[2],
                      watched[2], watched[2] - probe[2]))
    for (service, count, name), (cost, size, tasks, built) in sorted(costs.items()):
        print("snapshot cost %-8s %5d held, %-10s %6.2f ms CPU a sample  %8d bytes  %5d tasks  "
              "(%d of %d built afresh, the others sent again)" % (
                  service, count, name, cost, size, tasks, built, args.samples))
    print(json.dumps({"%s/%s" % k: v for k, v in results.items()}))


if __name__ == "__main__":
    main()
