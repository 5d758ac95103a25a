"""A service is a process tree: leakhound pointed at a gunicorn master judges every worker's
probe. Real gunicorn masters with 4 workers (uvicorn's worker class, and aiohttp's asyncio
worker), real HTTP load on 127.0.0.1, judged by `leakhound watch MASTER --json` and
`leakhound snapshot MASTER --json`:

- an endpoint that blocks the loop with time.sleep fires loop-blocked naming the worker's pid
  and the app's line;
- a worker killed with SIGKILL is reported (how it ended, and its replacement), and the
  replacement's probe is read without restarting leakhound;
- the same service without the blocking call fires nothing under load;
- `snapshot MASTER` shows every worker.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import leakhound_bin, probe_env

pytest.importorskip("gunicorn")

APP = '''
import asyncio, os, time

BLOCK = os.environ.get("APP_BLOCK") == "1"


def handle_slow():
    if BLOCK:
        time.sleep(0.3)  # BLOCKS THE LOOP


async def app(scope, receive, send):
    """A plain ASGI app (uvicorn workers)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/slow":
        handle_slow()
    else:
        await asyncio.sleep(0.001)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


try:
    from uvicorn.workers import UvicornWorker

    class AsyncioUvicornWorker(UvicornWorker):
        """uvicorn's worker on the asyncio loop: the probe on this branch does not see uvloop
        loops yet (uvicorn[standard] would pick uvloop)."""
        CONFIG_KWARGS = {"loop": "asyncio", "http": "auto"}
except ImportError:
    pass


async def aiohttp_app():
    """The same endpoints for aiohttp's gunicorn worker (aiohttp.GunicornWebWorker)."""
    from aiohttp import web

    async def slow(request):
        handle_slow()
        return web.Response(text="ok")

    async def fast(request):
        await asyncio.sleep(0.001)
        return web.Response(text="ok")

    application = web.Application()
    application.router.add_get("/slow", slow)
    application.router.add_get("/", fast)
    return application
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid):
    """Direct children of `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


class Service:
    """A gunicorn master with 4 workers, each with the probe, on a free port."""

    def __init__(self, tmp_path, worker, app, block):
        (tmp_path / "app.py").write_text(APP)
        self.path = tmp_path / "app.py"
        self.socket_dir = tmp_path / "sockets"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "4", "-k", worker,
             "-b", "127.0.0.1:%d" % self.port, "--graceful-timeout", "2", app],
            cwd=str(tmp_path),
            env=probe_env(self.socket_dir, APP_BLOCK="1" if block else "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        try:
            self.wait_for(lambda: len(self.probed_workers()) == 4, "4 workers with a probe")
            self.wait_for(self.answers, "the service to answer HTTP")
        except BaseException:
            # Not yet in the fixture's list: a start that fails must not leave the tree running.
            if self.proc.poll() is None:
                self.stop()
            raise

    def probed_workers(self):
        return [p for p in children_of(self.pid)
                if (self.socket_dir / ("%d.sock" % p)).exists()]

    def answers(self):
        try:
            return self.get("/") == 200
        except OSError:
            return False

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def wait_for(self, condition, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError("gunicorn exited (%s) before %s:\n%s"
                                     % (self.proc.returncode, what, self.proc.stdout.read()))
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s" % what)

    def site(self, marker):
        for number, text in enumerate(self.path.read_text().splitlines(), 1):
            if marker in text:
                return "%s:%d" % (self.path, number)
        raise AssertionError(marker)

    def stop(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.communicate(timeout=10)


class Load:
    """Bounded HTTP load: `clients` threads, each looping over `paths` until stopped or
    `max_requests` each (never unbounded), on 127.0.0.1 only."""

    def __init__(self, service, paths, clients=8, max_requests=2000):
        self.stop_flag = threading.Event()
        self.ok = 0
        self.failed = 0
        self.lock = threading.Lock()

        def run(offset):
            for i in range(max_requests):
                if self.stop_flag.is_set():
                    return
                try:
                    status = service.get(paths[(i + offset) % len(paths)])
                except OSError:
                    status = None  # a killed worker drops its connections: expected
                with self.lock:
                    if status == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
                        time.sleep(0.05)

        self.threads = [threading.Thread(target=run, args=(n,), daemon=True)
                        for n in range(clients)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=15)


@pytest.fixture
def service(tmp_path):
    started = []

    def start(worker, app, block):
        s = Service(tmp_path, worker, app, block)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def watch_json(pid, seconds, *extra):
    """`leakhound watch PID --json --for Ns`: (finding lines, summary)."""
    done = subprocess.run(
        [leakhound_bin(), "watch", str(pid), "--json", "--for", "%ds" % seconds, *extra],
        capture_output=True, text=True, timeout=seconds + 60)
    assert done.returncode in (0, 1), (done.returncode, done.stderr)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [l for l in lines if l.get("type") == "finding"], lines[-1]


def start_watch(pid, seconds):
    return subprocess.Popen(
        [leakhound_bin(), "watch", str(pid), "--json", "--for", "%ds" % seconds],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_blocked_worker_named(findings, workers, service):
    blocked = [f for f in findings if f["rule"] == "loop-blocked"]
    assert blocked, findings
    for f in blocked:
        pid = f["evidence"]["pid"]
        assert pid in workers, (pid, workers)
        assert f["subject"].startswith("pid:%d loop:" % pid), f["subject"]
    # The app's line, not the framework's, in the evidence of at least one.
    sleep_line = service.site("time.sleep(0.3)")
    frames = [f["evidence"].get("own_frame") or "" for f in blocked]
    assert any(frame.startswith(sleep_line) for frame in frames), (sleep_line, blocked)


def elsewhere(finding, service):
    """A worker's start-up imports (no app frame) as `loop-blocked`: not this test's subject
    (a process tree). Anything else a clean service fires fails the test (uvicorn's lifespan
    task waiting for the shutdown message is the probe's `framework` parked task now)."""
    if finding["rule"] == "loop-blocked":
        return not any(str(service.path) in frame for frame in finding["evidence"]["stack"])
    return False


def test_uvicorn_workers_blocked_loop_and_killed_worker(service):
    s = service("app.AsyncioUvicornWorker", "app:app", block=True)
    workers = s.probed_workers()
    load = Load(s, ["/slow", "/", "/"])
    watch = start_watch(s.pid, 14)
    try:
        time.sleep(6)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        # gunicorn starts a replacement; its probe is up before the watch ends.
        s.wait_for(lambda: len(s.probed_workers()) == 4 and victim not in s.probed_workers(),
                   "a replacement worker with a probe")
        replacement = [p for p in s.probed_workers() if p not in workers]
        out, err = watch.communicate(timeout=60)
    finally:
        load.stop()
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 1, (watch.returncode, err)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    findings = [l for l in lines if l.get("type") == "finding"]
    assert_blocked_worker_named(findings, workers + replacement, s)
    exits = [f for f in findings if f["rule"] == "worker-exit"]
    assert [f["subject"] for f in exits] == ["pid:%d" % victim], exits
    killed = exits[0]
    assert killed["severity"] == "warning"
    assert killed["evidence"]["signal"] == "SIGKILL", killed
    assert killed["evidence"]["replaced_by"] == replacement[0], (killed, replacement)
    assert "replaced by pid %d" % replacement[0] in killed["message"]
    assert load.ok > 0


def test_aiohttp_asyncio_workers_blocked_loop(service):
    pytest.importorskip("aiohttp")
    s = service("aiohttp.GunicornWebWorker", "app:aiohttp_app", block=True)
    workers = s.probed_workers()
    load = Load(s, ["/slow", "/", "/"])
    try:
        findings, summary = watch_json(s.pid, 10)
    finally:
        load.stop()
    assert summary["type"] == "summary"
    assert_blocked_worker_named(findings, workers, s)


def test_clean_service_fires_nothing_under_load_and_snapshot_shows_every_worker(service):
    s = service("app.AsyncioUvicornWorker", "app:app", block=False)
    workers = s.probed_workers()
    load = Load(s, ["/slow", "/"], clients=4)
    try:
        # A shared 2-core machine under HTTP load preempts a healthy loop for 100+ ms now and
        # then (seen: a "stall" at the response's send). The blocking twins are judged at the
        # default 100 ms; this control holds loop-blocked to 500 ms, above scheduler noise.
        # The snapshots judge at the same threshold (they failed on such a stall too).
        findings, summary = watch_json(s.pid, 20, "-T", "loop-blocked.lag=500ms")
        done = subprocess.run([leakhound_bin(), "snapshot", str(s.pid), "--json",
                               "-T", "loop-blocked.lag=500ms"],
                              capture_output=True, text=True, timeout=60)
        text = subprocess.run([leakhound_bin(), "snapshot", str(s.pid),
                               "-T", "loop-blocked.lag=500ms"],
                              capture_output=True, text=True, timeout=60)
    finally:
        load.stop()
    assert load.ok > 100, (load.ok, load.failed)
    assert [f for f in findings if not elsewhere(f, s)] == [], findings
    assert summary["fired"] == len(findings), summary
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    seen = sorted(w["pid"] for w in doc["workers"])
    assert seen == sorted(workers), (seen, workers)
    for w in doc["workers"]:
        assert w["source"] == "procfs+probe(python)", w["source"]
        assert w["probe"]["loops"], "each worker's loop is seen"
    assert text.returncode == 0, text.stderr
    headings = [line.split()[3] for line in text.stdout.splitlines()
                if line.startswith("==== WORKER pid ")]
    assert sorted(map(int, headings)) == sorted(workers), text.stdout[-2000:]
