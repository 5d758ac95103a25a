"""Real services on the stacks Python services run: FastAPI on uvicorn (which picks uvloop, as
`uvicorn[standard]` installs it) and aiohttp, loaded with the probe the way `leakhound run`
loads it (the environment, no code change), under real HTTP load on 127.0.0.1, judged by
`leakhound watch PID --json`. Each leaking twin fires its rule at the app's own line; the
healthy services fire nothing for 20 s under load."""

import asyncio
import json
import os
import socket
import threading
import time

import pytest

from conftest import findings_of, snapshot_of, watch

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("uvloop")
pytest.importorskip("fastapi")
pytest.importorskip("aiohttp")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(program, source, port, name="app.py"):
    """Starts the app and waits until it accepts connections."""
    app = program(source, env={"PORT": port}, name=name)

    def listening():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    app.wait_for(listening, "the app listening on port %d" % port, timeout=30)
    return app


class Load:
    """`clients` concurrent HTTP clients requesting `paths` in turn, each pausing `pause` s
    between requests, until stopped or `limit` requests in all (bounded either way)."""

    def __init__(self, port, paths, clients=20, pause=0.0, limit=20000, seconds=60):
        self.base = "http://127.0.0.1:%d" % port
        self.paths, self.clients, self.pause, self.limit = paths, clients, pause, limit
        self.seconds = seconds
        self.done = 0
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True)

    async def main(self):
        deadline = time.monotonic() + self.seconds
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as client:

            async def one(i):
                n = i
                while not self.stop.is_set() and self.done < self.limit \
                        and time.monotonic() < deadline:
                    try:
                        reply = await client.get(self.paths[n % len(self.paths)])
                        if reply.status_code != 200:
                            self.errors.append(reply.status_code)
                    except httpx.HTTPError as err:
                        self.errors.append(repr(err))
                    self.done += 1
                    n += 1
                    if self.pause:
                        await asyncio.sleep(self.pause)

            await asyncio.gather(*(one(i) for i in range(self.clients)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


FASTAPI_BLOCKING = """
import asyncio, os, time
import uvicorn
from fastapi import FastAPI

app = FastAPI()

@app.get("/slow")
async def slow():
    time.sleep(0.3)  # blocks the event loop
    return {"loop": type(asyncio.get_running_loop()).__module__}

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
"""


def test_uvloop_blocked_by_time_sleep_in_a_fastapi_endpoint(program):
    port = free_port()
    app = serve(program, FASTAPI_BLOCKING, port)
    assert httpx.get("http://127.0.0.1:%d/slow" % port, timeout=30).json() == {"loop": "uvloop"}
    with Load(port, ["/slow"], clients=20, limit=400) as load:
        summary = watch(app.pid, 4)
    assert load.done > 0 and not load.errors, load.errors[:5]
    found = findings_of(summary, "loop-blocked")
    assert len(found) == 1, summary
    evidence = found[0]["evidence"]
    line = app.site("time.sleep(0.3)") + " in slow"
    assert evidence["own_frame"] == line, evidence
    assert evidence["blocking_frame"] == line, evidence
    assert evidence["stall_ms"] >= 250, evidence
    assert "blocked at " + line in found[0]["message"]


AIOHTTP_UNCLOSED = """
import os
import aiohttp
from aiohttp import web

PORT = int(os.environ["PORT"])

async def ok(request):
    return web.Response(text="ok")

async def fetch(request):
    session = aiohttp.ClientSession()  # never closed
    async with session.get("http://127.0.0.1:%d/ok" % PORT) as reply:
        text = await reply.text()
    return web.Response(text="fetched " + text)

app = web.Application()
app.add_routes([web.get("/ok", ok), web.get("/fetch", fetch)])
web.run_app(app, host="127.0.0.1", port=PORT, print=None)
"""


def test_unclosed_aiohttp_session_is_reported_at_the_apps_line(program):
    port = free_port()
    app = serve(program, AIOHTTP_UNCLOSED, port)
    with Load(port, ["/fetch"], clients=4, limit=40) as load:
        load.thread.join(60)
    assert load.done >= 40 and not load.errors, load.errors[:5]
    summary = watch(app.pid, 1)
    found = {f["evidence"]["resource"]: f for f in findings_of(summary, "unclosed-resource")}
    line = app.site("aiohttp.ClientSession()") + " in fetch"
    assert "client session" in found, summary
    assert found["client session"]["evidence"]["site"][-1] == line, found["client session"]
    assert found["client session"]["evidence"]["count"] >= 30
    assert "created at " + line in found["client session"]["evidence"]["example"]
    # Its connector was made by the session, at the same line of the app.
    for f in found.values():
        assert f["evidence"]["site"][-1] == line, f


FASTAPI_HEALTHY = """
import asyncio, os, time
from concurrent.futures import ThreadPoolExecutor
import uvicorn
from fastapi import FastAPI

app = FastAPI()
POOL = ThreadPoolExecutor(32, thread_name_prefix="work")

@app.get("/async")
async def in_loop():
    await asyncio.sleep(0.005)
    return {"ok": 1}

@app.get("/sync")
def in_threadpool():  # Starlette runs it on anyio's worker threads
    time.sleep(0.005)
    return {"ok": 2}

@app.get("/executor")
async def in_executors():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, time.sleep, 0.005)  # the loop's default executor
    await loop.run_in_executor(POOL, time.sleep, 0.005)
    return {"ok": 3}

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
"""

AIOHTTP_HEALTHY = """
import asyncio, os
import aiohttp
from aiohttp import web

PORT = int(os.environ["PORT"])

async def ok(request):
    await asyncio.sleep(0.005)
    return web.json_response({"ok": 1})

async def fetch(request):
    async with request.app["client"].get("http://127.0.0.1:%d/ok" % PORT) as reply:
        return web.json_response(await reply.json())

async def client(app):
    async with aiohttp.ClientSession() as session:
        app["client"] = session
        yield

app = web.Application()
app.cleanup_ctx.append(client)
app.add_routes([web.get("/ok", ok), web.get("/fetch", fetch)])
web.run_app(app, host="127.0.0.1", port=PORT, print=None)
"""


def test_healthy_uvicorn_and_aiohttp_services_under_load_fire_nothing(program):
    """Uvicorn's lifespan task waits on its queue the whole time; anyio's worker threads, the
    loop's default executor and a 32-thread pool warm up under load: none of it is a leak."""
    port_a, port_b = free_port(), free_port()
    fast = serve(program, FASTAPI_HEALTHY, port_a)
    aio = serve(program, AIOHTTP_HEALTHY, port_b, name="aio_app.py")
    results = {}
    paths = {port_a: ["/async", "/sync", "/executor"], port_b: ["/ok", "/fetch"]}
    # The first request of each route does one-off work (FastAPI reads the endpoint's source
    # once, ~150 ms on a busy machine): a real stall, of start-up, not of the service.
    for port, routes in paths.items():
        for path in routes:
            assert httpx.get("http://127.0.0.1:%d%s" % (port, path), timeout=30).status_code == 200
    loads = [Load(port, routes, clients=20, pause=0.05) for port, routes in paths.items()]

    def judge(name, pid):
        # Default thresholds but one, the loop's: on a shared 2-core test machine a full
        # garbage collection or the OS not running the process makes a healthy loop ~150 ms
        # late now and then (measured: the stacks are the collector's). The trend rules run
        # at their defaults: connections and threads traded in waves under load are churn.
        results[name] = watch(pid, 20, "loop-blocked.lag=400ms")

    watchers = [threading.Thread(target=judge, args=("uvicorn", fast.pid), daemon=True),
                threading.Thread(target=judge, args=("aiohttp", aio.pid), daemon=True)]
    with loads[0], loads[1]:
        # Judged once the clients are connected: a start-up ramp of 20 connections is for
        # the trend rules to tell from a leak (the lead's part of issue 11), not for this test.
        deadline = time.monotonic() + 30
        while min(load.done for load in loads) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        for w in watchers:
            w.start()
        for w in watchers:
            w.join(60)
    for load in loads:
        assert load.done > 200 and not load.errors, (load.done, load.errors[:5])
    assert results["uvicorn"]["findings"] == [], json.dumps(results["uvicorn"]["findings"], indent=1)
    assert results["aiohttp"]["findings"] == [], json.dumps(results["aiohttp"]["findings"], indent=1)
    # The probe did see them: uvicorn's uvloop loop and its lifespan task, anyio's workers.
    view = snapshot_of(fast.socket)
    assert view["loops"], view
    lifespan = [t for t in view["tasks"] if t["kind"] == "LifespanOn.main"]
    assert lifespan and lifespan[0]["parked"] == "framework", view["tasks"]
    pooled = [t for t in view["threads"] if t.get("pool")]
    assert any(t["name"].startswith("work") for t in pooled), view["threads"]
    assert any(t["name"] == "AnyIO worker thread" for t in pooled), view["threads"]


GUNICORN = """
import asyncio, os, sys, time
from fastapi import FastAPI

app = FastAPI()

@app.get("/slow")
async def slow():
    time.sleep(0.3)  # blocks the worker's event loop
    return {"loop": type(asyncio.get_running_loop()).__module__, "pid": os.getpid()}

if __name__ == "__main__":
    from gunicorn.app.wsgiapp import run
    sys.argv = ["gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
                "-b", "127.0.0.1:%s" % os.environ["PORT"], "--log-level", "warning", "app:app"]
    run()
"""


def test_gunicorn_uvicorn_workers_each_see_their_uvloop_blocked(program):
    """Each pre-forked worker (gunicorn's stock UvicornWorker, on uvloop) has its own probe,
    and it sees its loop blocked at the app's line. (Gathering them under the master is the
    CLI's part of issue 11.)"""
    pytest.importorskip("gunicorn")
    port = free_port()
    master = serve(program, GUNICORN, port)
    with Load(port, ["/slow"], clients=8, limit=40) as load:
        load.thread.join(60)
    assert load.done >= 40 and not load.errors, load.errors[:5]
    with open("/proc/%d/task/%d/children" % (master.pid, master.pid)) as children:
        workers = [int(p) for p in children.read().split()]
    assert len(workers) == 2, workers
    line = master.site("time.sleep(0.3)") + " in slow"
    # Every worker's (uvloop) loop is seen; which worker accepts which connection is the
    # kernel's choice, so one of them may have served no /slow at all: the stall at the app's
    # line must be seen, in the workers that took those requests.
    blocked = []
    for pid in workers:
        view = snapshot_of(master.socket_dir / ("%d.sock" % pid))
        assert view["loops"], view["missing"]
        stacks = [s["stack"][-1] for s in view["loops"][0]["stalls"] if s["stack"]]
        if line in stacks:
            blocked.append(pid)
    assert blocked, (line, workers)


def test_aiohttp_keep_alive_handler_waiting_for_the_next_request_is_the_frameworks(program):
    """A kept-alive connection between requests: aiohttp's per-connection handler task waits
    for the next request by design (for its keep-alive timeout, 75 s by default)."""
    port = free_port()
    app = serve(program, AIOHTTP_HEALTHY, port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200"), "no reply"
        handlers = []
        for _ in range(50):  # until the probe's progress look has seen it
            tasks = snapshot_of(app.socket)["tasks"]
            handlers = [t for t in tasks if t["kind"] == "RequestHandler.start"]
            if handlers:
                break
            time.sleep(0.1)
    assert handlers and all(t["parked"] == "framework" for t in handlers), tasks
