"""What abusive collectors cost a probed Python program, and whether a newcomer gets in.

    python probes/python/bench/collector_abuse.py

1. Lock-out: 4 silent connections and 4 dripping a byte every 300 ms take every slot; then
   a new collector connects: how long until it has its hello and a snapshot (or what it got).
2. Flood: one collector sends snapshot requests back to back for 3 s; the host's asyncio
   loop speed (iterations/s, with 3,000 idle tasks) during the flood against just before.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK = os.path.join(os.path.dirname(HERE), "src", "leakhound_probe", "_hook")

HOST = r"""
import asyncio, sys, time

async def idle():
    await asyncio.sleep(3600)

async def main():
    tasks = [asyncio.create_task(idle()) for _ in range(3000)]
    n, mark = 0, time.monotonic()
    while True:
        await asyncio.sleep(0)
        n += 1
        now = time.monotonic()
        if now - mark >= 0.5:
            print("%.3f %d" % (now, n), flush=True)
            n, mark = 0, now

asyncio.run(main())
"""


def connect(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_line(s, buffer=b""):
    while b"\n" not in buffer:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise EOFError("closed")
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    return json.loads(line), rest


def lockout(path):
    silent = [connect(path) for _ in range(4)]
    drippers = [connect(path) for _ in range(4)]
    stop = threading.Event()

    def drip(s):
        try:
            while not stop.is_set():
                s.sendall(b"{")
                stop.wait(0.3)
        except OSError:
            pass

    threads = [threading.Thread(target=drip, args=(s,)) for s in drippers]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        s = connect(path)
        hello, rest = read_line(s)
        if hello.get("type") != "hello":
            result = "refused: %s" % hello.get("error")
        else:
            s.sendall(b'{"type":"snapshot","id":1}\n')
            reply, _ = read_line(s, rest)
            result = "%s after %.0f ms" % (reply["type"], (time.monotonic() - started) * 1000)
        s.close()
    except (OSError, EOFError) as err:
        result = "no answer (%s) after %.0f ms" % (err, (time.monotonic() - started) * 1000)
    stop.set()
    for t in threads:
        t.join()
    for s in silent + drippers:
        s.close()
    return result


def loop_rate(lines, since, until):
    """Iterations per second over the host's reports with a timestamp in [since, until]."""
    picked = [(t, n) for t, n in lines if since <= t <= until]
    if len(picked) < 2:
        return float("nan")
    return sum(n for _, n in picked[1:]) / (picked[-1][0] - picked[0][0])


def flood(path, proc_lines):
    time.sleep(2.0)
    base_from = time.monotonic()
    time.sleep(3.0)
    base_to = time.monotonic()
    s = connect(path, timeout=30)
    read_line(s)
    stop = time.monotonic() + 3.0
    served = limited = 0
    buffer = b""

    def send_all():
        i = 0
        try:
            while time.monotonic() < stop:
                s.sendall(b'{"type":"snapshot","id":%d}\n' % i)
                i += 1
        except OSError:
            pass

    sender = threading.Thread(target=send_all)
    sender.start()
    flood_from = time.monotonic()
    try:
        while time.monotonic() < stop:
            reply, buffer = read_line(s, buffer)
            if reply["type"] == "snapshot":
                served += 1
            else:
                limited += 1
    except (OSError, EOFError):
        pass
    flood_to = time.monotonic()
    s.close()
    sender.join()
    time.sleep(0.6)
    base = loop_rate(proc_lines, base_from, base_to)
    during = loop_rate(proc_lines, flood_from, flood_to)
    return base, during, served, limited


def main():
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        script = os.path.join(tmp, "host.py")
        with open(script, "w") as f:
            f.write(HOST)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(LEAKHOUND_PROBE="1", PYTHONPATH=HOOK, LEAKHOUND_SOCKET_DIR=tmp)
        proc = subprocess.Popen([sys.executable, script], env=env, stdout=subprocess.PIPE,
                                text=True)
        lines = []

        def collect():
            for line in proc.stdout:
                t, n = line.split()
                lines.append((float(t), int(n)))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        path = os.path.join(tmp, "%d.sock" % proc.pid)
        while not os.path.exists(path):
            time.sleep(0.05)
        try:
            print("newcomer with 4 silent + 4 dripping collectors: %s" % lockout(path))
            base, during, served, limited = flood(path, lines)
            print("snapshot flood, 3 s: %d snapshots and %d 'rate limited' replies; host loop "
                  "%.0f it/s before, %.0f it/s during (%.0f%%)"
                  % (served, limited, base, during, 100.0 * during / base))
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
