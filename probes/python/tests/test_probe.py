"""How the probe loads (by hand, by environment, in children) and what it records."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import HOOK, RUN_ONCE, SRC, Client, plain_env, probe_env, snapshot_of


def probe_module(name):
    """A module of this checkout's probe, imported into the test process."""
    import importlib

    sys.path.insert(0, SRC)
    try:
        return importlib.import_module("leakhound_probe." + name)
    finally:
        sys.path.remove(SRC)


def run_python(tmp_path, source, env=None, args=(), timeout=30):
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=timeout)


def test_install_by_hand_is_idempotent_and_close_removes_the_socket(tmp_path):
    env = plain_env(PYTHONPATH=SRC)
    done = run_python(tmp_path, """
        import os, leakhound_probe
        a = leakhound_probe.install(socket_dir=%r)
        b = leakhound_probe.install()
        assert a.socket_path == b.socket_path, (a.socket_path, b.socket_path)
        assert os.path.exists(a.socket_path)
        data = a.snapshot()
        assert data["runtime"] == "python"
        a.close()
        assert not os.path.exists(a.socket_path)
        print("ok")
        """ % str(tmp_path / "s"), env=env)
    assert done.stdout.strip() == "ok", done.stderr


def test_environment_loads_it_for_scripts_and_modules_and_chains_sitecustomize(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['OTHER_SITE'] = 'ran'\n")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent("""
        import os, sys
        print(os.environ.get("OTHER_SITE"), "leakhound_probe._runtime" in sys.modules,
              os.path.exists(os.path.join(os.environ["LEAKHOUND_SOCKET_DIR"], "%d.sock" % os.getpid())))
        """))
    env = probe_env(tmp_path / "s")
    env["PYTHONPATH"] = os.pathsep.join([HOOK, str(other)])
    done = subprocess.run([sys.executable, "-m", "pkg"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["ran", "True", "True"], done.stderr
    # Without the opt-in, the hook does nothing but chain.
    env["LEAKHOUND_PROBE"] = "0"
    done = subprocess.run([sys.executable, "-m", "pkg"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["ran", "False", "False"], done.stderr


def test_bytecode_is_cached_in_leakhounds_own_folder_only(tmp_path):
    """Under PYTHONDONTWRITEBYTECODE, a probe copy in leakhound's cache folder
    (python-probe-*) caches its bytecode, so the next Python process skips compiling it; a
    copy in a source tree is left as the user asked."""
    import shutil

    package = os.path.join(SRC, "leakhound_probe")
    for folder, cached in (("python-probe-0.0.0-test", True), ("src", False)):
        copy = tmp_path / folder / "leakhound_probe"
        shutil.copytree(package, str(copy), ignore=shutil.ignore_patterns("__pycache__"))
        env = probe_env(tmp_path / "s", PYTHONDONTWRITEBYTECODE="1")
        env["PYTHONPATH"] = str(copy / "_hook")
        done = subprocess.run([sys.executable, "-c", "import sys; print('leakhound_probe._runtime' in sys.modules)"],
                              env=env, capture_output=True, text=True, timeout=30)
        assert done.stdout.strip() == "True", done.stderr
        compiled = sorted(p.name.split(".")[0] for p in (copy / "__pycache__").glob("*.pyc")) \
            if (copy / "__pycache__").exists() else []
        if cached:
            assert {"_probe", "_runtime", "_server", "_patches"} <= set(compiled), compiled
        else:
            assert compiled == [], compiled


def test_forked_and_spawned_children_get_their_own_probe(tmp_path):
    socket_dir = tmp_path / "s"
    done = run_python(tmp_path, """
        import json, multiprocessing, os, socket, sys, time

        def hello_of(pid):
            path = os.path.join(os.environ["LEAKHOUND_SOCKET_DIR"], "%d.sock" % pid)
            for _ in range(200):
                if os.path.exists(path):
                    break
                time.sleep(0.02)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(path)
            line = s.makefile().readline()
            s.close()
            return json.loads(line)["pid"]

        def child(queue):
            queue.put((os.getpid(), hello_of(os.getpid())))

        if __name__ == "__main__":
            out = {}
            for method in ("fork", "spawn"):
                ctx = multiprocessing.get_context(method)
                queue = ctx.Queue()
                p = ctx.Process(target=child, args=(queue,), name="kid-" + method)
                p.start()
                out[method] = queue.get(timeout=20)
                p.join()
            print(json.dumps(out))
        """, env=probe_env(socket_dir))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for method in ("fork", "spawn"):
        pid, said = out[method]
        assert pid == said, (method, out)


def test_multiprocessing_children_and_semaphore_waiters_are_reported(program):
    app = program(
        """
        import asyncio, multiprocessing, time

        async def user(sem):
            async with sem:
                await asyncio.sleep(3600)

        async def main():
            sem = asyncio.Semaphore(2)
            for _ in range(5):
                asyncio.create_task(user(sem))
            await asyncio.sleep(3600)

        if __name__ == "__main__":
            p = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,), name="sleeper")
            p.start()
            asyncio.run(main())
        """
    )
    def ready():
        data = snapshot_of(app.socket)
        return data["children"] and any(p["kind"] == "semaphore" and p["saturated_ms"] > 0
                                        for p in data["pools"])
    app.wait_for(ready, "children and a starving semaphore")
    data = snapshot_of(app.socket)
    child = data["children"][0]
    assert child["name"] == "sleeper" and child["alive"] and child["pid"] > 0
    sem = [p for p in data["pools"] if p["kind"] == "semaphore"][0]
    assert (sem["max_workers"], sem["busy_workers"], sem["queued"]) == (2, 2, 3)
    os.kill(child["pid"], 9)


def test_log_lines_carry_thread_and_task_ids(tmp_path):
    source = """
        import asyncio, logging, threading
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        log = logging.getLogger("app")

        async def handle():
            log.info("in task")

        async def main():
            await asyncio.create_task(handle(), name="req-7")

        log.info("at start")
        asyncio.run(main())
        print(threading.get_native_id())
        """
    done = run_python(tmp_path, source, env=probe_env(tmp_path / "s"))
    tid = done.stdout.strip()
    lines = done.stderr.strip().splitlines()
    assert lines == ["INFO tid=%s task=- at start" % tid, "INFO tid=%s task=req-7 in task" % tid], done.stderr
    done = run_python(tmp_path, source, env=probe_env(tmp_path / "s", LEAKHOUND_LOG_IDS=0))
    assert done.stderr.strip().splitlines() == ["INFO at start", "INFO in task"]


def test_shutdown_reports_executors_never_shut_down(tmp_path):
    socket_dir = tmp_path / "s"
    done = run_python(tmp_path, """
        import time
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgotten")
        pool.submit(time.sleep, 0.3)
        pool.submit(time.sleep, 0.3)
        """, env=probe_env(socket_dir))
    assert done.returncode == 0, done.stderr
    finals = list(socket_dir.glob("*.final.json"))
    assert len(finals) == 1
    events = json.loads(finals[0].read_text())["data"]["events"]
    alive = [e for e in events if e["kind"] == "alive_at_shutdown"]
    assert [e["subject"] for e in alive] == ["executor forgotten"], events
    assert "1 queued" in alive[0]["message"]
    assert alive[0]["site"][-1].endswith("prog.py:4 in <module>")  # line 1 is blank
    # A clean exit removes the socket.
    assert not list(socket_dir.glob("*.sock"))


def test_a_multiprocessing_pool_never_closed_is_named_where_it_was_made(tmp_path):
    """Not only its anonymous pipes: the pool itself, with the line that made it."""
    socket_dir = tmp_path / "s"
    done = run_python(tmp_path, """
        import multiprocessing

        def square(x):
            return x * x

        if __name__ == "__main__":
            POOL = multiprocessing.Pool(2)  # never closed
            print(sum(POOL.map(square, range(10))))
            with multiprocessing.Pool(1) as tidy:  # closed by `with`
                tidy.map(square, range(3))
        """, env=probe_env(socket_dir))
    assert done.returncode == 0 and done.stdout.strip() == "285", done.stderr
    # (Pool workers end without exit hooks; only the program itself writes a final report.)
    events = [e for path in socket_dir.glob("*.final.json")
              for e in json.loads(path.read_text())["data"]["events"]]
    pools = [e for e in events if e["subject"].startswith("pool ")]
    assert [e["subject"] for e in pools] == ["pool multiprocessing.Pool"], events
    assert pools[0]["kind"] == "alive_at_shutdown"
    assert pools[0]["site"][-1].endswith("prog.py:8 in <module>"), pools[0]  # line 1 is blank
    assert "2 worker process(es)" in pools[0]["message"], pools[0]


def test_probe_never_breaks_the_host_when_it_cannot_listen(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    done = run_python(tmp_path, """
        import asyncio
        async def main():
            await asyncio.sleep(0.1)
            return 42
        print(asyncio.run(main()))
        """, env=probe_env(blocker))
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr


def test_hello_names_the_pid(program):
    app = program("import time\ntime.sleep(30)\n")
    client = Client(app.socket)
    assert client.hello["pid"] == app.pid and "tasks" in client.hello["capabilities"]
    client.close()


def test_resource_warnings_recorded_without_changing_what_the_user_sees(tmp_path):
    source = """
        import socket, subprocess
        s = socket.socket()
        del s
        KEEP = subprocess.Popen(["true"])  # warned about at exit, after the probe closed
        """
    quiet = run_python(tmp_path, source, env=probe_env(tmp_path / "s"))
    assert "ResourceWarning" not in quiet.stderr, quiet.stderr
    events = json.loads(next((tmp_path / "s").glob("*.final.json")).read_text())["data"]["events"]
    assert [e["subject"] for e in events if e["kind"] == "unclosed_resource"][:1] == ["socket"]
    shown = subprocess.run([sys.executable, "-W", "always::ResourceWarning", str(tmp_path / "prog.py")],
                           capture_output=True, text=True, env=probe_env(tmp_path / "s2"), timeout=30)
    assert "ResourceWarning: unclosed <socket.socket" in shown.stderr, shown.stderr


def test_resource_warnings_the_programs_own_filters_hide_stay_hidden(tmp_path):
    """The probe lets every ResourceWarning reach it, then shows only what the program's own
    filters would have: one filtered by module *name*, and a repeat that `default` shows once,
    stay hidden, exactly as without the probe."""
    (tmp_path / "chatty.py").write_text(textwrap.dedent("""
        import socket

        def make():
            s = socket.socket()
            del s  # warned here, in module chatty, which the program silences
        """))
    source = """
        import socket, warnings
        import chatty

        warnings.filterwarnings("ignore", category=ResourceWarning, module="chatty")
        chatty.make()
        for _ in range(3):
            s = socket.socket()
            del s  # the same text at the same line: `default` shows it once
        """
    (tmp_path / "prog.py").write_text(textwrap.dedent(source))
    plain = subprocess.run([sys.executable, "-W", "default::ResourceWarning", "prog.py"],
                           capture_output=True, text=True, cwd=str(tmp_path), timeout=30,
                           env=plain_env())
    probed = subprocess.run([sys.executable, "-W", "default::ResourceWarning", "prog.py"],
                            capture_output=True, text=True, cwd=str(tmp_path), timeout=30,
                            env=probe_env(tmp_path / "s"))
    def warned(stderr):
        import re

        # (The probe's own listener takes a descriptor: the socket's number differs.)
        return [re.sub(r"fd=\d+", "fd=N", line) for line in stderr.splitlines()
                if "ResourceWarning: unclosed" in line]

    shown = warned(plain.stderr)
    assert len(shown) == 1 and "prog.py:9" in shown[0], plain.stderr
    assert warned(probed.stderr) == shown, probed.stderr
    # The probe saw all four.
    events = json.loads(next((tmp_path / "s").glob("*.final.json")).read_text())["data"]["events"]
    sockets = [e for e in events if e["kind"] == "unclosed_resource" and e["subject"] == "socket"]
    assert sum(e["count"] for e in sockets) == 4, events
    assert {e["site"][-1].split(" in ")[0].rsplit("/", 1)[-1] for e in sockets} == {
        "chatty.py:5", "prog.py:8"}, sockets


def test_a_task_created_before_the_loop_runs_is_listed_through_the_socket(program):
    """A task made with loop.create_task before run_until_complete, seen by a collector over
    the socket (the first request also loads what the server needs on its own thread)."""
    prog = program("""
        import asyncio

        async def wait_forever():
            # Made in the task: before 3.10 an Event made outside binds the policy's loop.
            await asyncio.Event().wait()

        async def work():
            await asyncio.sleep(30)

        loop = asyncio.new_event_loop()
        loop.create_task(wait_forever(), name="waits-forever")
        loop.run_until_complete(work())
        """)
    names = []
    for _ in range(100):
        names = [t["name"] for t in snapshot_of(prog.socket)["tasks"]]
        if names:
            break
        time.sleep(0.05)
    assert "waits-forever" in names, names


def test_task_creation_sites_and_stacks_on_request(program):
    app = program(
        """
        import asyncio

        async def child():
            await asyncio.sleep(60)

        async def main():
            asyncio.create_task(child(), name="spawned")  # creation site
            await asyncio.sleep(60)

        asyncio.run(main())
        """,
        env={"LEAKHOUND_TASK_SITES": "1"},
    )
    def spawned():
        return [t for t in snapshot_of(app.socket)["tasks"] if t["id"] == "spawned"]
    app.wait_for(spawned, "the spawned task")
    task = spawned()[0]
    assert task["spawn_location"] == app.site("create_task(child()") + " in main"
    assert task["await_chain"][0] == app.site("await asyncio.sleep(60)") + " in child"
    assert task["waiting_on"] is None and task["state"] == "idle"
    plain = snapshot_of(app.socket)
    assert all(t["stack"] == [] for t in plain["threads"])
    main = [t for t in snapshot_of(app.socket, stacks=True)["threads"] if t["name"] == "MainThread"]
    assert main[0]["native_id"] == app.pid
    assert any(frame.endswith(RUN_ONCE) for frame in main[0]["stack"]), main


def test_process_pool_is_reported(program):
    app = program(
        """
        import time
        from concurrent.futures import ProcessPoolExecutor

        if __name__ == "__main__":
            with ProcessPoolExecutor(max_workers=1) as pool:
                futures = [pool.submit(time.sleep, 1) for _ in range(3)]
                time.sleep(30)
        """
    )
    def pool():
        rows = [p for p in snapshot_of(app.socket)["pools"] if p["kind"] == "process_pool"]
        return rows if rows and rows[0]["busy_workers"] == 1 else None
    app.wait_for(pool, "a busy process pool")
    row = pool()[0]
    assert (row["max_workers"], row["live_workers"]) == (1, 1)
    assert row["queued"] >= 1 and row["open"]
    assert row["created_at"] == app.site("ProcessPoolExecutor(max_workers=1)") + " in <module>"


def test_final_grace_keeps_answering_until_a_collector_looked(tmp_path):
    import threading
    import time

    socket_dir = tmp_path / "s"
    path = tmp_path / "prog.py"
    path.write_text("import time\ntime.sleep(0.3)\n")
    proc = subprocess.Popen([sys.executable, str(path)], env=probe_env(socket_dir, LEAKHOUND_FINAL_GRACE_MS=20000),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = socket_dir / ("%d.sock" % proc.pid)
    final = socket_dir / ("%d.final.json" % proc.pid)
    deadline = time.monotonic() + 10
    while not final.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert final.exists()
    time.sleep(0.5)
    assert proc.poll() is None, "exited without the grace"
    data = snapshot_of(sock)  # the last look; the probe then lets the process go
    assert data["runtime"] == "python"
    started = time.monotonic()
    proc.wait(timeout=10)
    assert time.monotonic() - started < 5
    assert not sock.exists()


def test_event_ring_is_bounded_and_counts_drops(tmp_path):
    env = plain_env(PYTHONPATH=SRC)
    done = run_python(tmp_path, """
        import json, warnings, leakhound_probe
        warnings.simplefilter("ignore")
        h = leakhound_probe.install(socket_dir=%r, max_events=16)
        for i in range(40):
            namespace = {}
            exec("async def job_%%d(): pass" %% i, namespace)
            namespace["job_%%d" %% i]()  # never awaited, a distinct coroutine each time
        for _ in range(5):
            namespace["job_39"]()  # repeats at one site coalesce (a new site is a new event)
        data = h.snapshot()
        print(json.dumps([len(data["events"]), data["dropped"]["events"], data["events"][-1]["count"]]))
        """ % str(tmp_path / "s"), env=env)
    assert json.loads(done.stdout) == [16, 25, 5], done.stderr


def test_install_from_inside_a_running_loop_adopts_it(tmp_path):
    env = plain_env(PYTHONPATH=SRC)
    done = run_python(tmp_path, """
        import asyncio, json, time, leakhound_probe

        async def main():
            h = leakhound_probe.install(socket_dir=%r)
            await asyncio.sleep(0.2)
            time.sleep(0.3)  # a stall the adopted loop must show
            await asyncio.sleep(0.1)
            return h, h.snapshot()["loops"]

        loop = asyncio.new_event_loop()
        h, loops = loop.run_until_complete(main())
        time.sleep(0.5)  # the loop has stopped: no heartbeat, and no stall either
        after = h.snapshot()["loops"]
        print(json.dumps([len(loops), loops[0]["lag"]["max_ms"] >= 200, len(after[0]["stalls"]), after[0]["running"]]))
        """ % str(tmp_path / "s"), env=env)
    assert json.loads(done.stdout) == [1, True, 1, False], done.stderr


def test_uvloop_imported_before_the_probe_is_found_through_its_tasks(tmp_path):
    """uvloop binds asyncio's running-loop setter when imported: a probe installed by hand
    after that is not told when its loop starts; the watchdog finds it through its tasks,
    and its stalls carry the program's line."""
    pytest.importorskip("uvloop")
    env = plain_env(PYTHONPATH=SRC)
    done = run_python(tmp_path, """
        import asyncio, json, time, uvloop, leakhound_probe

        h = leakhound_probe.install(server=False)

        async def main():
            for _ in range(12):
                await asyncio.sleep(0.05)
                time.sleep(0.3)  # blocks the loop
            return h.snapshot()["loops"]

        loops = uvloop.run(main())
        print(json.dumps([loops[0]["stalls"][-1]["stack"][-1], loops[0]["lag"]["max_ms"]]))
        """, env=env)
    assert done.returncode == 0, done.stderr
    line, worst = json.loads(done.stdout)
    assert line == "%s:9 in main" % (tmp_path / "prog.py"), line  # line 1 is blank
    assert worst >= 200


def test_an_earlier_never_awaited_hook_still_runs(tmp_path):
    env = plain_env(PYTHONPATH=SRC)
    done = run_python(tmp_path, """
        import warnings
        seen = []
        original = warnings._warn_unawaited_coroutine
        def theirs(coro):
            seen.append(coro.__qualname__)
            return original(coro)
        warnings._warn_unawaited_coroutine = theirs
        import leakhound_probe
        h = leakhound_probe.install(socket_dir=%r)
        async def job():
            pass
        job()
        print(seen, [e["subject"] for e in h.snapshot()["events"]])
        """ % str(tmp_path / "s"), env=env)
    assert done.stdout.strip() == "['job'] ['job']", done.stderr
    # Warned once, from their hook, as it would be without the probe.
    assert done.stderr.count("RuntimeWarning: coroutine 'job' was never awaited") == 1, done.stderr
    assert "prog.py:7: RuntimeWarning" in done.stderr


def test_log_ids_respect_other_styles_and_custom_formatters(tmp_path):
    source = """
        import json, logging, sys

        class JsonFormatter(logging.Formatter):
            def format(self, record):
                return json.dumps({"msg": record.getMessage(), "tid": record.tid, "task": record.task})

        brace = logging.StreamHandler(sys.stdout)
        brace.setFormatter(logging.Formatter("{levelname}: {message}", style="{"))
        structured = logging.StreamHandler(sys.stdout)
        structured.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.addHandler(brace)
        root.addHandler(structured)
        root.setLevel(logging.INFO)
        logging.info("hello")
        """
    done = run_python(tmp_path, source, env=probe_env(tmp_path / "s"))
    brace_line, json_line = done.stdout.strip().splitlines()
    record = json.loads(json_line)
    assert record["msg"] == "hello" and record["task"] == "-" and record["tid"] > 0
    assert brace_line == "INFO: tid=%d task=- hello" % record["tid"], done.stderr


def test_what_is_still_open_at_exit_is_reported_with_its_owner(tmp_path):
    """Globals are closed by the interpreter's teardown, after /proc or a ResourceWarning
    could show them: the probe's exit hook reports them. Installed by hand after logging was
    imported, so logging's own exit hook (which closes its handlers' files) runs after ours."""
    sockets = tmp_path / "s"
    env = plain_env(PYTHONPATH=SRC)
    done = run_python(tmp_path, """
        import asyncio, logging, os, socket, sys
        handler = logging.FileHandler(os.path.join(sys.argv[1], "app.log"))
        logging.getLogger().addHandler(handler)
        import leakhound_probe
        leakhound_probe.install(socket_dir=sys.argv[2])

        AUDIT = open(os.path.join(sys.argv[1], "audit.log"), "a")
        SERVER = socket.socket()
        SERVER.bind(("127.0.0.1", 0))
        SERVER.listen()
        LOOP = asyncio.new_event_loop()
        with open(os.path.join(sys.argv[1], "tidy.txt"), "w") as tidy:
            tidy.write("closed by with")
        logging.getLogger().warning("logged")
        print(os.getpid())
        """, env=env, args=(str(tmp_path), str(sockets)))
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip())
    report = json.loads((sockets / ("%d.final.json" % pid)).read_text())
    found = {(e["subject"], e["site"][-1]): e["message"]
             for e in report["data"]["events"] if e["kind"] == "unclosed_resource"}
    assert set(found) == {
        ("file", "module global __main__.AUDIT (still open at exit)"),
        ("socket", "module global __main__.SERVER (still open at exit)"),
        ("event loop", "module global __main__.LOOP (still open at exit)"),
    }, found
    file_message = found[("file", "module global __main__.AUDIT (still open at exit)")]
    assert "audit.log" in file_message and "mode 'a'" in file_message, file_message
    socket_message = found[("socket", "module global __main__.SERVER (still open at exit)")]
    assert socket_message.startswith("stream socket 127.0.0.1:"), socket_message


def test_a_huge_heap_is_not_listed_at_exit_but_module_globals_still_are(tmp_path, monkeypatch):
    """Above the block limit the exit scan skips gc.get_objects() (its list would cost the
    exiting program memory) and looks at module globals only."""
    import types

    _open_at_exit = probe_module("_open_at_exit")
    monkeypatch.setattr(_open_at_exit, "MAX_BLOCKS_FOR_GC_SCAN", 0)
    module = types.ModuleType("leaky_globals")
    held = open(tmp_path / "held.txt", "w")
    module.HELD = held
    monkeypatch.setitem(sys.modules, "leaky_globals", module)
    unowned = [open(tmp_path / "unowned.txt", "w")]  # not a module global: not seen
    try:
        found = _open_at_exit.scan(str(tmp_path))
        sites = [site[-1] for _, _, site in found]
        assert "module global leaky_globals.HELD (still open at exit)" in sites, found
        assert not any("unowned.txt" in message for _, message, _ in found), found
    finally:
        held.close()
        unowned[0].close()


def test_the_exit_scan_survives_types_that_crash_abc_checks(tmp_path):
    """On Python 3.9 issubclass(unicodedata.UCD, io.IOBase) is a segmentation fault: the exit
    scan of module globals (a program that imported unicodedata, as idna does) crashed the
    exiting program. Run in a process of its own, so a crash fails this test alone."""
    done = run_python(tmp_path, """
        import json, sys, unicodedata
        from leakhound_probe import _open_at_exit

        _open_at_exit.MAX_BLOCKS_FOR_GC_SCAN = 0  # module globals: unicodedata.ucd_3_2_0
        held = open("held.txt", "w")
        found = _open_at_exit.scan(%r)
        print(json.dumps([site[-1] for _, _, site in found]))
        """ % str(tmp_path), env=plain_env(PYTHONPATH=SRC))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "module global __main__.held (still open at exit)" in json.loads(done.stdout), done.stdout


def test_descriptors_inherited_or_from_before_a_fork_are_not_reported_at_exit(tmp_path):
    """A descriptor the process was given (or, in a forked child, its parent's global) is not
    the process's to close: only what it opened itself is reported."""
    sockets = tmp_path / "s"
    given = open(tmp_path / "given.txt", "w")
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent("""
                import os, sys
                GIVEN = os.fdopen(int(sys.argv[1]), "w")      # inherited: not ours
                PARENTS = open(os.path.join(sys.argv[2], "parent.txt"), "w")
                pid = os.fork()
                if pid == 0:
                    OWN = open(os.path.join(sys.argv[2], "child.txt"), "w")
                    sys.exit(0)                                # runs the child's exit hooks
                os.waitpid(pid, 0)
                print(pid)
                """), str(given.fileno()), str(tmp_path)],
            pass_fds=(given.fileno(),), env=probe_env(sockets), capture_output=True, text=True,
            timeout=30)
    finally:
        given.close()
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.strip())

    def reported(pid):
        report = json.loads((sockets / ("%d.final.json" % pid)).read_text())
        return sorted(e["site"][-1] for e in report["data"]["events"]
                      if e["kind"] == "unclosed_resource")

    assert reported(child) == [
        "module global __main__.OWN (still open at exit)"]
    parent = [p.name for p in sockets.glob("*.final.json") if p.name != "%d.final.json" % child]
    assert len(parent) == 1, parent
    assert reported(int(parent[0].split(".")[0])) == [
        "module global __main__.PARENTS (still open at exit)"]


def test_the_exit_scan_walks_the_heap_only_when_something_of_the_programs_is_open(
        tmp_path, monkeypatch):
    _open_at_exit, _util = probe_module("_open_at_exit"), probe_module("_util")
    walked = []
    real = _open_at_exit._candidates
    monkeypatch.setattr(_open_at_exit, "_candidates", lambda: walked.append(1) or real())
    at_start = _util.descriptors()
    assert _open_at_exit.scan(str(tmp_path), at_start) == [] and walked == []
    with open(tmp_path / "opened-since.txt", "w"):
        _open_at_exit.scan(str(tmp_path), at_start)
    assert walked == [1]


def test_only_the_longest_still_tasks_carry_their_whole_await_chain(tmp_path):
    """A snapshot walks each task's chain once; tasks that moved lately are sent with the two
    frames rules and views use (the program's innermost own frame, the innermost frame); the
    FULL_CHAINS longest-still ones, past FULL_CHAIN_AFTER_MS, with the whole chain; and every
    chain is whole when stacks are asked for."""
    done = run_python(tmp_path, """
        import asyncio, json, leakhound_probe
        from leakhound_probe import _probe

        _probe.FULL_CHAINS = 3

        async def inner(event):
            await event.wait()

        async def middle(event):
            await inner(event)

        async def outer(event):
            await middle(event)

        async def main():
            handle = leakhound_probe.install(socket_dir=%r)
            event = asyncio.Event()
            tasks = [asyncio.create_task(outer(event), name="t%%d" %% i) for i in range(5)]
            await asyncio.sleep(0.05)
            _probe.FULL_CHAIN_AFTER_MS = 10 ** 9  # none has been still long enough
            fresh = {t["id"]: t["await_chain"] for t in handle.snapshot()["tasks"]}
            _probe.FULL_CHAIN_AFTER_MS = 0  # all have
            still = {t["id"]: t["await_chain"] for t in handle.snapshot()["tasks"]}
            whole = {t["id"]: t["await_chain"] for t in handle.snapshot(stacks=True)["tasks"]}
            event.set()
            await asyncio.gather(*tasks)
            handle.close()
            print(json.dumps([fresh, still, whole]))

        asyncio.run(main())
        """ % str(tmp_path / "s"), env=plain_env(PYTHONPATH=SRC))
    assert done.returncode == 0, done.stderr
    fresh, still, whole = json.loads(done.stdout)
    names = ["t%d" % i for i in range(5)]

    def functions(chain):  # (qualified names from 3.11 on: `Event.wait`; before, `wait`)
        return [line.rsplit(" in ", 1)[1].rsplit(".", 1)[-1] for line in chain]

    for name in names:
        # The program's innermost own frame (inner), then the innermost (Event.wait).
        assert functions(fresh[name]) == ["inner", "wait"]
        assert functions(whole[name]) == ["outer", "middle", "inner", "wait"]
    assert sorted(len(still[name]) for name in names) == [2, 2, 4, 4, 4]


def test_a_task_that_moved_on_is_walked_again_and_a_still_one_keeps_its_place(tmp_path):
    """A task still waiting on the future it waited on at the last look keeps the chain walked
    then (it has not run since); one that moved on is walked again."""
    done = run_python(tmp_path, """
        import asyncio, json, leakhound_probe

        async def two_steps(first, second):
            await first.wait()  # step one
            await second.wait()  # step two

        async def main():
            handle = leakhound_probe.install(socket_dir=%r)
            first, second = asyncio.Event(), asyncio.Event()
            mover = asyncio.create_task(two_steps(first, second), name="mover")
            still = asyncio.create_task(two_steps(asyncio.Event(), second), name="still")
            await asyncio.sleep(0.05)
            seen = []
            for _ in range(2):
                seen.append({t["id"]: t["await_chain"][0] for t in handle.snapshot()["tasks"]
                             if t["id"] in ("mover", "still")})
                first.set()
                await asyncio.sleep(0.05)
            still.cancel()
            second.set()
            await mover
            handle.close()
            print(json.dumps(seen))

        asyncio.run(main())
        """ % str(tmp_path / "s"), env=plain_env(PYTHONPATH=SRC))
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    source = (tmp_path / "prog.py").read_text().splitlines()
    line = {text: n for n, l in enumerate(source, 1) for text in ("step one", "step two")
            if text in l}
    assert before == {"mover": "%s:%d in two_steps" % (tmp_path / "prog.py", line["step one"]),
                      "still": "%s:%d in two_steps" % (tmp_path / "prog.py", line["step one"])}
    assert after == {"mover": "%s:%d in two_steps" % (tmp_path / "prog.py", line["step two"]),
                     "still": before["still"]}
