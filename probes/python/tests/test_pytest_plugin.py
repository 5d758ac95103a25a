"""The pytest plugin, run on small suites with pytester: every leak blamed on the test that
made it, every clean twin passing."""

import pytest

pytest_plugins = ["pytester"]

PLUGIN = ["-p", "leakhound_probe.pytest_plugin", "-p", "no:cacheprovider"]


@pytest.fixture(autouse=True)
def nested_runs_outside_leakhound(monkeypatch):
    """These suites' leaks are on purpose. When this suite itself runs under `leakhound check`,
    the nested pytest runs must not inherit its probe and socket folder (they would switch to
    warn mode and hand their planted leaks to the outer check)."""
    import os

    monkeypatch.delenv("LEAKHOUND_PROBE", raising=False)
    monkeypatch.delenv("LEAKHOUND_SOCKET_DIR", raising=False)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    kept = [p for p in paths if p and not p.rstrip("/").endswith(os.path.join("leakhound_probe", "_hook"))]
    if kept:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(kept))
    else:
        monkeypatch.delenv("PYTHONPATH", raising=False)

INI = """
[pytest]
leakhound_settle = 0.1
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

LEAKS = '''
import asyncio, gc, socket, subprocess, threading, time

KEEP = []

def test_thread_leak():
    threading.Thread(target=time.sleep, args=(3,), name="bg-leak", daemon=True).start()

def test_thread_clean():
    t = threading.Thread(target=time.sleep, args=(0.01,), name="bg-clean")
    t.start()
    t.join()

def test_fd_leak(tmp_path):
    KEEP.append(open(tmp_path / "leak.txt", "w"))

def test_fd_clean(tmp_path):
    with open(tmp_path / "clean.txt", "w") as f:
        f.write("x")

def test_socket_leak():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    KEEP.append(s)

def test_socket_clean():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))

def test_child_leak():
    KEEP.append(subprocess.Popen(["sleep", "3"]))

def test_child_clean():
    subprocess.run(["true"], check=True)

def test_zombie_leak():
    p = subprocess.Popen(["true"])
    KEEP.append(p)
    for _ in range(200):
        with open("/proc/%d/stat" % p.pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.005)

def test_zombie_clean():
    p = subprocess.Popen(["true"])
    p.wait()

async def forever():
    await asyncio.Event().wait()

async def test_task_leak():
    KEEP.append(asyncio.create_task(forever(), name="stuck-one"))
    await asyncio.sleep(0)

async def test_task_clean():
    t = asyncio.create_task(forever(), name="cancelled-one")
    await asyncio.sleep(0)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        pass

async def work():
    return 1

def test_never_awaited_leak():
    work()
    gc.collect()

async def test_never_awaited_clean():
    assert await work() == 1

def test_executor_leak():
    from concurrent.futures import ThreadPoolExecutor
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool")
    ex.submit(time.sleep, 2)
    KEEP.append(ex)

def test_executor_clean():
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool2") as ex:
        ex.submit(time.sleep, 0.01).result()
'''


def outcomes(result):
    """{test name: "passed" | "error" | "failed"} from a -rA run."""
    out = {}
    for line in result.outlines:
        for word in ("PASSED", "ERROR", "FAILED"):
            prefix = word + " "
            if line.startswith(prefix) and "::" in line:
                name = line[len(prefix):].split("::")[-1].split(" ")[0]
                # A test that passes its call but errors at teardown is listed twice.
                if out.get(name) != "error":
                    out[name] = word.lower()
    return out


def test_every_leak_blamed_and_every_twin_clean(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_corpus=LEAKS)
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    got = outcomes(result)
    text = result.stdout.str()
    for kind in ("thread", "fd", "socket", "child", "zombie", "task", "never_awaited", "executor"):
        assert got.get("test_%s_leak" % kind) == "error", (kind, got, text)
        assert got.get("test_%s_clean" % kind) == "passed", (kind, got, text)
    # The right rule for each, with where it was created.
    for rule, test in [
        ("thread-leak", "test_thread_leak"),
        ("unclosed-resource", "test_fd_leak"),
        ("unclosed-resource", "test_socket_leak"),
        ("orphan-child", "test_child_leak"),
        ("zombie-child", "test_zombie_leak"),
        ("stuck-task", "test_task_leak"),
        ("never-awaited", "test_never_awaited_leak"),
        ("thread-leak", "test_executor_leak"),
    ]:
        section = text.split("ERROR at teardown of " + test, 1)
        assert len(section) == 2, (test, text)
        body = section[1].split("\n_", 1)[0]
        assert "[%s]" % rule in body, (rule, test, body)
        assert "test_corpus.py:" in body, (test, body)  # the creation site


def test_blames_the_creator_when_a_later_test_collects_it(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(
        test_late='''
        import asyncio, socket

        HELD = []

        async def job():
            pass

        def test_creates_coroutine():
            HELD.append(job())          # never awaited; freed only by the next test

        def test_creates_socket():
            HELD.append(socket.socket())

        def test_innocent_frees_them():
            HELD.clear()
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    got = outcomes(result)
    text = result.stdout.str()
    assert got["test_innocent_frees_them"] == "passed", text
    assert got["test_creates_socket"] == "error", text
    # The coroutine's warning fired during the innocent test, after its creator finished:
    # it is charged to the creator in the summary, and the run fails.
    assert "test_late.py::test_creates_coroutine (found after it finished)" in text, text
    assert "[never-awaited]" in text
    assert result.ret != 0


def test_a_task_collected_while_pending_is_blamed_on_its_test(pytester):
    """asyncio holds tasks weakly: an unreferenced task awaiting an event only it holds is
    freed by the next collection, before the test ends, and is no longer pending by then."""
    pytester.makeini(INI)
    pytester.makepyfile(
        test_dropped='''
        import asyncio, gc

        async def wait_for_order(event):
            await event.wait()

        async def test_drops_task():
            asyncio.get_running_loop().create_task(wait_for_order(asyncio.Event()), name="order-9")
            await asyncio.sleep(0.01)
            gc.collect()  # any collection would do

        async def test_keeps_task():
            event = asyncio.Event()
            task = asyncio.get_running_loop().create_task(wait_for_order(event))
            await asyncio.sleep(0.01)
            gc.collect()
            event.set()
            await task
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    text = result.stdout.str()
    got = outcomes(result)
    assert got == {"test_drops_task": "error", "test_keeps_task": "passed"}, text
    summary = text.split("= leakhound =")[-1]
    assert "[stuck-task] task 'order-9' (wait_for_order) was garbage-collected" in summary, text
    assert "test_dropped.py:7 in test_drops_task" in summary, text


def test_a_pending_task_swept_at_loop_close_is_found_even_if_collected_before_the_check(
        pytester):
    """asyncio.run / pytest-asyncio cancel what is pending when the loop closes; the plugin
    notes those tasks, and must still hold them when it checks after the teardown. A garbage
    collection in between (any allocation may start one: under load, a probe thread's) used to
    free them first, and the leak went unseen."""
    pytester.makeini(INI)
    pytester.makeconftest(
        '''
        import gc, pytest

        @pytest.hookimpl(trylast=True)
        def pytest_runtest_teardown(item):
            gc.collect()  # after the fixtures' teardown (the loop is closed), before the check
        '''
    )
    pytester.makepyfile(
        test_swept='''
        import asyncio

        async def forever(event):
            await event.wait()

        async def test_leaves_a_task_pending():
            asyncio.create_task(forever(asyncio.Event()), name="left-pending")
            await asyncio.sleep(0)
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    text = result.stdout.str()
    assert outcomes(result) == {"test_leaves_a_task_pending": "error"}, text
    assert "[stuck-task] task 'left-pending' (forever)" in text, text


def test_a_pending_task_on_a_uvloop_loop_is_blamed_on_its_test(pytester):
    """uvloop's Loop has its own create_task: the plugin used to see only tasks made through
    BaseEventLoop, so a task left pending on a uvloop loop was nobody's."""
    pytest.importorskip("uvloop")
    pytester.makeini(INI)
    pytester.makepyfile(
        test_uv='''
        import asyncio, uvloop

        KEEP = []

        async def forever():
            await asyncio.Event().wait()

        def test_swept_when_uvloop_run_closes_its_loop():
            async def main():
                KEEP.append(asyncio.create_task(forever(), name="uv-swept"))
                await asyncio.sleep(0)
            uvloop.run(main())

        def test_still_pending_on_a_loop_left_open():
            loop = uvloop.new_event_loop()
            async def main():
                KEEP.append(asyncio.create_task(forever(), name="uv-pending"))
                await asyncio.sleep(0)
            loop.run_until_complete(main())
            KEEP.append(loop)

        def test_cancelled_and_awaited():
            async def main():
                task = asyncio.create_task(forever(), name="uv-clean")
                await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            uvloop.run(main())
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    text = result.stdout.str()
    got = outcomes(result)
    assert got == {"test_swept_when_uvloop_run_closes_its_loop": "error",
                   "test_still_pending_on_a_loop_left_open": "error",
                   "test_cancelled_and_awaited": "passed"}, text
    summary = text.split("= leakhound =")[-1]
    assert "[stuck-task] task 'uv-swept' (forever) was still pending when its event loop " \
           "was closed" in summary, text
    assert "[stuck-task] task 'uv-pending' (forever) is still pending after the test" \
           in summary, text
    assert "uv-clean" not in summary, text


def test_a_thread_started_by_an_earlier_tests_thread_is_blamed_on_that_test(pytester):
    """A thread the earlier test left running starts another one while a later test runs: the
    new thread is the earlier test's doing (its creator thread's owner), not the later one's."""
    pytester.makeini(INI)
    pytester.makepyfile(
        test_spawner='''
        import threading, pytest

        go, started, stop = threading.Event(), threading.Event(), threading.Event()

        def spawner():
            go.wait(10)
            threading.Thread(target=stop.wait, args=(10,), name="spawned-late").start()
            started.set()

        @pytest.mark.leakhound(expect=["thread=spawner"])
        def test_starts_a_spawner():
            threading.Thread(target=spawner, name="spawner", daemon=True).start()

        def test_innocent():
            go.set()
            assert started.wait(10)

        def test_last():
            stop.set()
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    text = result.stdout.str()
    got = outcomes(result)
    assert got["test_innocent"] == "passed", text
    assert "test_spawner.py::test_starts_a_spawner (found after it finished)" in text, text
    assert "spawned-late" in text.split("= leakhound =")[-1], text


def test_multiprocessing_helpers_are_neither_blamed_nor_waited_for(pytester):
    """The first `spawn` process starts multiprocessing's resource tracker, which lives as
    long as the interpreter. It is not the test's leak, and the settle time (here far longer
    than the run needs) is not spent waiting for it to end."""
    pytester.makeini("[pytest]\nleakhound_settle = 20\n")
    pytester.makepyfile(
        test_spawn='''
        import multiprocessing

        def test_spawns_and_joins():
            p = multiprocessing.get_context("spawn").Process(target=print)
            p.start()
            p.join(20)
            assert p.exitcode == 0
            from multiprocessing import resource_tracker
            assert resource_tracker._resource_tracker._pid is not None  # it is running
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA", "--durations=0", "--durations-min=0")
    text = result.stdout.str()
    assert outcomes(result) == {"test_spawns_and_joins": "passed"}, text
    teardown = [line for line in result.outlines if " teardown " in line and "test_spawns" in line]
    # Durations under 5 ms are not listed; a listed one must be far from the 20 s settle.
    assert all(float(line.split("s", 1)[0]) < 10 for line in teardown), teardown
    assert "orphan-child" not in text, text


def test_marker_ignores_and_expects(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(
        test_marked='''
        import threading, time, pytest

        def leak(name):
            threading.Thread(target=time.sleep, args=(2,), name=name, daemon=True).start()

        @pytest.mark.leakhound(ignore=["thread-leak"])
        def test_ignored():
            leak("ignored-1")

        @pytest.mark.leakhound(expect=["thread=expected-*"])
        def test_expected():
            leak("expected-1")

        @pytest.mark.leakhound(expect=["thread=expected-*"])
        def test_expected_but_clean():
            pass

        @pytest.mark.leakhound(ignore=["thread=other-*"])
        def test_ignore_that_does_not_match():
            leak("unmatched-1")
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    got = outcomes(result)
    text = result.stdout.str()
    assert got["test_ignored"] == "passed", text
    assert got["test_expected"] == "passed", text
    assert got["test_expected_but_clean"] == "error", text
    assert "expected leak(s) not found: thread=expected-*" in text
    assert got["test_ignore_that_does_not_match"] == "error", text


def test_warn_mode_reports_without_failing(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(
        test_warn='''
        import threading, time
        def test_leaks():
            threading.Thread(target=time.sleep, args=(2,), name="w-1", daemon=True).start()
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "--leakhound-mode=warn")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*leakhound*", "test_warn.py::test_leaks", "*[[]thread-leak[]]*w-1*"])


def test_pytest_asyncio_loops_and_scoped_fixtures_are_not_blamed(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(
        test_aio='''
        import asyncio, threading, socket, time, pytest, pytest_asyncio

        @pytest.fixture(scope="module")
        def server_thread():
            stop = threading.Event()
            t = threading.Thread(target=stop.wait, name="module-server")
            t.start()
            s = socket.socket()
            yield s
            s.close()
            stop.set()
            t.join()

        @pytest_asyncio.fixture
        async def echo_server():
            async def handle(r, w):
                w.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            yield server
            server.close()
            await server.wait_closed()

        async def test_uses_loop(echo_server):
            await asyncio.sleep(0.01)
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.01)

        def test_uses_module_fixture(server_thread):
            pass

        def test_again(server_thread):
            pass

        async def test_gather():
            await asyncio.gather(*(asyncio.sleep(0.001) for _ in range(20)))
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=4)


def test_a_scoped_fixture_that_leaks_is_blamed_not_its_tests(pytester):
    """What a module- or session-scoped fixture leaves behind after its teardown is charged to
    the fixture when the session ends; a scoped fixture that cleans up is charged nothing."""
    pytester.makeini(INI)
    pytester.makeconftest(
        '''
        import threading, pytest

        @pytest.fixture(scope="session")
        def leaky_server(tmp_path_factory):
            stop = threading.Event()
            t = threading.Thread(target=stop.wait, name="session-server", daemon=True)
            t.start()
            log = open(tmp_path_factory.mktemp("l") / "server.log", "w")
            yield log
            # forgets stop.set(), t.join() and log.close()

        @pytest.fixture(scope="module")
        def tidy_server():
            stop = threading.Event()
            t = threading.Thread(target=stop.wait, name="module-server")
            t.start()
            yield
            stop.set()
            t.join()
        '''
    )
    pytester.makepyfile(
        test_fixtures='''
        def test_one(leaky_server, tidy_server):
            pass

        def test_two(leaky_server, tidy_server):
            pass
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-rA")
    text = result.stdout.str()
    assert outcomes(result) == {"test_one": "passed", "test_two": "passed"}, text
    summary = text.split("= leakhound =")[-1].split("short test summary")[0]
    owner = "conftest.py::leaky_server (session-scoped fixture)"
    assert owner in summary, text
    # Both leaks under the fixture: its thread, and its file (closed by garbage collection
    # after the fixture's teardown let go of it).
    blamed = summary.split(owner)[1].split("leak(s) in")[0]
    assert "[thread-leak] thread 'session-server'" in blamed, text
    assert "[unclosed-resource]" in blamed and "server.log" in blamed, text
    assert "test_one" not in summary and "test_two" not in summary, text
    assert "tidy_server" not in text and "module-server" not in text, text
    assert result.ret != 0  # fail mode: the session fails


def test_probe_sockets_opened_during_a_scoped_fixture_are_not_its_leak(pytester, monkeypatch,
                                                                       tmp_path):
    """Under `leakhound check` the collector connects to the probe whenever it samples; a
    connection accepted while a session fixture was being set up is the probe's (any Unix
    socket bound in leakhound's socket folder is), not the fixture's."""
    folder = tmp_path / "lh"
    folder.mkdir()
    monkeypatch.setenv("LEAKHOUND_SOCKET_DIR", str(folder))
    pytester.makeini(INI)
    pytester.makeconftest(
        '''
        import os, socket, pytest

        KEEP = []

        @pytest.fixture(scope="session")
        def service():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(os.path.join(os.environ["LEAKHOUND_SOCKET_DIR"], "1.sock"))
            KEEP.append(s)  # the stand-in for the probe's connection: open to the end
            yield
        '''
    )
    pytester.makepyfile(test_service="def test_one(service):\n    pass\n")
    result = pytester.runpytest_subprocess(*PLUGIN, "--leakhound-mode=fail", "-rA")
    text = result.stdout.str()
    assert outcomes(result) == {"test_one": "passed"}, text
    assert "session-scoped fixture" not in text, text
    assert result.ret == 0, text


def test_not_enabled_unless_asked(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_off='''
        import threading, time
        def test_leaks():
            threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        '''
    )
    # Without -p or --leakhound (the entry point, when installed, loads it disabled).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    assert "thread-leak" not in result.stdout.str()
    assert "== leakhound ==" not in result.stdout.str()


def test_entry_point_and_flag(pytester):
    from importlib.metadata import entry_points

    found = entry_points()
    # A dict of groups before Python 3.10, selectable by group after.
    found = found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])
    if not [e for e in found if e.value == "leakhound_probe.pytest_plugin"]:
        pytest.skip("leakhound-probe is not pip-installed here (scripts/test.sh installs it)")
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_flag='''
        import threading, time
        def test_leaks():
            threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        '''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--leakhound")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*[[]thread-leak[]]*"])


def test_bad_marker_entry_is_a_clear_error(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(
        test_bad='''
        import pytest
        @pytest.mark.leakhound(ignore=["colour=red"])
        def test_x():
            pass
        '''
    )
    result = pytester.runpytest_subprocess(*PLUGIN)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown kind 'colour'*"])
