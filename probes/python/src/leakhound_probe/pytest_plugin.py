"""pytest plugin: blames each leak on the test that created it.

Per test it finds asyncio tasks left pending, threads started and not finished, descriptors
(files, sockets, pipes) opened and not closed, child processes left running or unreaped,
coroutines never awaited, and unclosed resources (ResourceWarning) -- each with where it was
created, when that can be known.

Turning it on (opt-in, so installing leakhound-probe never changes a test run by itself):

* ``pytest -p leakhound_probe.pytest_plugin`` -- loads and enables it;
* ``pytest --leakhound`` or ``leakhound = true`` in the ini file -- when the package is
  installed (its ``pytest11`` entry point loads it, disabled until asked);
* running under ``leakhound check -- pytest ...`` (``LEAKHOUND_SOCKET_DIR`` is set): the
  findings also go to ``$LEAKHOUND_SOCKET_DIR/<pid>.pytest.json``, which ``check`` merges into
  its report so JUnit and SARIF name the guilty test.

Modes: ``--leakhound-mode=fail`` (default) turns a leaking test's teardown into an error;
``warn`` only lists leaks in the summary. Per test: ``@pytest.mark.leakhound(ignore=[...],
expect=[...])``, entries being a rule id (``thread-leak``) or ``KIND=GLOB`` with KIND one of
rule, thread, task, location, fd, child -- the same as ``leakhound check --ignore``.

Blame follows creation, not discovery: threads, sockets, files, tasks and child processes are
tagged with the running test when they are created; a never-awaited coroutine is matched to a
test by its creation frames (``sys.set_coroutine_origin_tracking_depth``); a ResourceWarning is
matched through the descriptor of the object being finalised. So a leak that a later test's
garbage collection reveals is still charged to the test that made it.

Standard library only, besides pytest itself.
"""

import asyncio
import builtins
import fnmatch
import functools
import gc
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
import weakref

import pytest

from . import _util

RULES = (
    "stuck-task",
    "thread-leak",
    "unclosed-resource",
    "orphan-child",
    "zombie-child",
    "never-awaited",
)
KINDS = ("rule", "thread", "task", "location", "fd", "child")
# Threads of leakhound's own probe, and of asyncio's default executor (which the loop shuts
# down when it closes; pytest-asyncio and asyncio.run close their loops).
DEFAULT_THREAD_IGNORES = ("leakhound*", "asyncio_*")
SITE_DEPTH = 8
# Frames of creation kept per coroutine (sys.set_coroutine_origin_tracking_depth): enough to
# reach the test function through one helper. Each frame costs on every coroutine created, so
# no deeper by default (`leakhound_origin_depth` raises it).
ORIGIN_DEPTH = 2
_HERE = os.path.dirname(os.path.abspath(__file__))
# Modules with a `_cancel_all_tasks(loop)` that runners call as their loop closes.
RUNNER_MODULES = ("asyncio.runners", "backports.asyncio.runner.runner", "uvloop")
# pytest's public package and its implementation (`_pytest`), side by side.
_PYTEST_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(pytest.__file__))), name) + os.sep
    for name in ("pytest", "_pytest", "pluggy", "pytest_asyncio")
)


class LeakhoundLeakWarning(UserWarning):
    """A test leaked something (warn mode)."""


def pytest_addoption(parser):
    group = parser.getgroup("leakhound", "leak checks per test (leakhound)")
    group.addoption(
        "--leakhound",
        action="store_true",
        default=None,
        help="check every test for leaked tasks, threads, fds, sockets, children, coroutines",
    )
    group.addoption(
        "--leakhound-mode",
        choices=("fail", "warn"),
        default=None,
        help="fail: a leak errors the test's teardown (default); warn: only report",
    )
    parser.addini("leakhound", "enable leakhound's per-test leak checks", type="bool", default=False)
    parser.addini("leakhound_mode", "fail or warn (default: fail; warn under leakhound check)")
    parser.addini(
        "leakhound_settle",
        "seconds to wait for threads and children to finish after teardown",
        default="0.2",
    )
    parser.addini(
        "leakhound_origin_depth",
        "frames of creation kept per coroutine, to blame a never-awaited one on the test that "
        "created it even when it is collected later (0: blame the running test)",
        default=str(ORIGIN_DEPTH),
    )
    parser.addini(
        "leakhound_ignore",
        "ignore entries (rule id or KIND=GLOB), one per line",
        type="linelist",
        default=[],
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "leakhound(ignore=[...], expect=[...]): ignore leaks matching these entries, or "
        "expect them (the test then fails if it does not leak them)",
    )
    explicit = _named_with_p(config)
    enabled = (
        config.getoption("leakhound")
        or config.getini("leakhound")
        or explicit
        or bool(os.environ.get("LEAKHOUND_SOCKET_DIR"))
    )
    if not enabled:
        return
    # Under `leakhound check` the default is warn: the suite's own result stays its own, and
    # leakhound's verdict (exit 1, JUnit, SARIF) carries the leaks, blamed per test.
    default_mode = "warn" if os.environ.get("LEAKHOUND_SOCKET_DIR") else "fail"
    ini_mode = config.getini("leakhound_mode") or None
    mode = config.getoption("leakhound_mode") or ini_mode or default_mode
    if mode not in ("fail", "warn"):
        raise pytest.UsageError("leakhound_mode = %r: use fail or warn" % mode)
    try:
        settle = float(config.getini("leakhound_settle"))
    except ValueError:
        raise pytest.UsageError(
            "leakhound_settle = %r: give seconds, e.g. 0.5" % config.getini("leakhound_settle")
        )
    try:
        ignores = [Entry.parse(e, "leakhound_ignore") for e in config.getini("leakhound_ignore")]
    except ValueError as err:
        raise pytest.UsageError(str(err))
    try:
        origin_depth = max(0, int(config.getini("leakhound_origin_depth")))
    except ValueError:
        raise pytest.UsageError(
            "leakhound_origin_depth = %r: give a whole number, e.g. 4"
            % config.getini("leakhound_origin_depth")
        )
    checker = Checker(config, mode, settle, ignores, origin_depth)
    config.pluginmanager.register(checker, "leakhound-checker")
    config._leakhound = checker


def _named_with_p(config):
    """True when `-p leakhound_probe.pytest_plugin` was given (command line, PYTEST_ADDOPTS or
    addopts): asking for the plugin by name enables it. The entry point registers it under the
    same name, so -p and the installed package never register it twice."""
    args = list(config.invocation_params.args)
    args += os.environ.get("PYTEST_ADDOPTS", "").split()
    try:
        args += list(config.getini("addopts"))
    except Exception:
        pass
    for i, arg in enumerate(args):
        arg = str(arg)
        if arg == "-p" and i + 1 < len(args) and str(args[i + 1]) == __name__:
            return True
        if arg == "-p" + __name__:
            return True
    return False


def pytest_unconfigure(config):
    checker = getattr(config, "_leakhound", None)
    if checker is not None:
        checker.uninstall()


class Entry:
    """One ignore/expect entry: a rule id, or KIND=GLOB."""

    def __init__(self, kind, pattern, text):
        self.kind, self.pattern, self.text = kind, pattern, text

    @classmethod
    def parse(cls, text, origin):
        text = str(text).strip()
        if "=" in text:
            kind, pattern = (p.strip() for p in text.split("=", 1))
            if kind not in KINDS:
                raise ValueError(
                    "%s: %r: unknown kind %r: use one of %s" % (origin, text, kind, ", ".join(KINDS))
                )
        else:
            kind, pattern = "rule", text
        if not pattern:
            raise ValueError("%s: %r has an empty pattern" % (origin, text))
        return cls(kind, pattern, text)

    def matches(self, leak):
        return any(fnmatch.fnmatchcase(c, self.pattern) for c in leak.candidates(self.kind))


class Leak:
    """One finding, in the shape of leakhound's `Finding` (plus the test it is blamed on)."""

    def __init__(self, rule, subject, message, test, severity="warning", **evidence):
        self.rule, self.subject, self.message = rule, subject, message
        self.test, self.severity = test, severity
        self.evidence = {k: v for k, v in evidence.items() if v not in (None, [], "")}
        self.evidence["test"] = test

    def candidates(self, kind):
        e = self.evidence
        if kind == "rule":
            return [self.rule]
        keys = {
            "thread": ("thread_name",),
            "task": ("task_name", "coroutine"),
            "location": ("site",),
            "fd": ("target",),
            "child": ("cmd",),
        }[kind]
        out = []
        for key in keys:
            value = e.get(key)
            if isinstance(value, list):
                out.extend(str(v) for v in value)
            elif value is not None:
                out.append(str(value))
        return out

    def key(self):
        return (self.rule, self.subject, self.test)

    def as_finding(self):
        return {
            "rule": self.rule,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "evidence": self.evidence,
        }

    def describe(self):
        lines = ["[%s] %s" % (self.rule, self.message)]
        site = self.evidence.get("site")
        if site:
            lines.append("    created at (innermost last):")
            lines.extend("      " + s for s in site[-SITE_DEPTH:])
        return "\n".join(lines)


def _user_site(skip=2):
    """`file:line in func` frames of the caller's stack, innermost last, without the frames of
    this plugin, pytest, pluggy and the standard library's threading/asyncio/socket/subprocess."""
    frames = []
    try:
        frame = sys._getframe(skip)
    except ValueError:
        return frames
    while frame is not None and len(frames) < SITE_DEPTH:
        path = frame.f_code.co_filename
        if not _is_machinery(path):
            frames.append("%s:%d in %s" % (path, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    frames.reverse()
    return frames


_STDLIB = os.path.dirname(os.path.abspath(os.__file__))


def _is_machinery(path):
    path = os.path.abspath(path) if not path.startswith("<") else path
    return (
        path.startswith(_HERE)
        or path.startswith(_PYTEST_DIRS)
        or path.startswith("<")
        or (path.startswith(_STDLIB) and "site-packages" not in path)
    )


def _fd_table():
    """{fd: target} of this process, from /proc (Linux); {} elsewhere."""
    out = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for name in names:
        try:
            out[int(name)] = os.readlink("/proc/self/fd/" + name)
        except (OSError, ValueError):
            pass  # the fd listing itself, or closed meanwhile
    return out


def _child_states(pids):
    """{pid: (state, cmd)} for those of `pids` that are still this process's children."""
    me = os.getpid()
    out = {}
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            continue  # gone and reaped
        comm_end = stat.rfind(")")
        fields = stat[comm_end + 2 :].split()
        if len(fields) < 2 or int(fields[1]) != me:
            continue  # reaped and the pid reused, or re-parented
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = ""
        out[pid] = (fields[0], cmd or "[%s]" % stat[stat.find("(") + 1 : comm_end])
    return out


def _probe_sockets():
    """The probe's own sockets (see _util.unix_sockets_under): leakhound's, never a test's."""
    return _util.unix_sockets_under(os.environ.get("LEAKHOUND_SOCKET_DIR"))


def _defined_in(fixturedef, config):
    """The file that defines a fixture, relative to the rootdir, as a nodeid would name it."""
    code = getattr(getattr(fixturedef, "func", None), "__code__", None)
    if code is None:
        return fixturedef.baseid or "<session>"
    try:
        return os.path.relpath(code.co_filename, str(config.rootpath)).replace(os.sep, "/")
    except ValueError:
        return code.co_filename


def _is_pool_worker(thread):
    """A concurrent.futures thread-pool worker whose executor is still open: it waits for work
    until the executor shuts down. (A worker of an executor already shut down is on its way
    out, and is waited for.)"""
    module = sys.modules.get("concurrent.futures.thread")
    worker = getattr(module, "_worker", None)
    if worker is None or getattr(thread, "_target", None) is not worker:
        return False
    args = getattr(thread, "_args", ())
    executor = args[0]() if args and callable(args[0]) else None
    return executor is not None and not getattr(executor, "_shutdown", True)


def _runtime_helpers():
    """(pids, fds) of helper processes Python's multiprocessing starts once and keeps for the
    interpreter's life by design (the resource tracker, the fork server): the first test that
    needs one starts it, and it is not that test's leak."""
    pids, fds = set(), set()
    for modname, attr, pid_attr, fd_attrs in (
        ("multiprocessing.resource_tracker", "_resource_tracker", "_pid", ("_fd",)),
        ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid",
         ("_forkserver_alive_fd",)),
    ):
        helper = getattr(sys.modules.get(modname), attr, None)
        if helper is None:
            continue
        pid = getattr(helper, pid_attr, None)
        if isinstance(pid, int):
            pids.add(pid)
        for name in fd_attrs:
            fd = getattr(helper, name, None)
            if isinstance(fd, int):
                fds.add(fd)
    return pids, fds


class Checker:
    """The per-session state: creation registries, the running test, the leaks found."""

    def __init__(self, config, mode, settle, ignores, origin_depth=ORIGIN_DEPTH):
        self.origin_depth = origin_depth
        self.config = config
        self.mode = mode
        self.settle = max(0.0, settle)
        self.ignores = ignores
        self.current = None  # nodeid of the running test
        self.phase = None
        self.scoped_fixture_depth = 0  # >0 while a broader-scoped fixture is being set up
        self.test_functions = {}  # (filename, funcname) -> [nodeid]
        # Creation registries: who made what, and where.
        self.threads = weakref.WeakKeyDictionary()  # Thread -> (test, site)
        self.tasks = weakref.WeakKeyDictionary()  # Task -> (test, phase, site)
        # Tasks still pending when their loop was closed, held until the check after the
        # test: cancelled and done, nothing else may hold them, and a collection before the
        # check would free them unseen.
        self.swept = set()
        self.fds = {}  # fd -> (test, site, target) of its latest creator
        self.children = {}  # pid -> (test, site)
        self.spawned = set()  # pids started by the running test
        self.scoped = {"threads": set(), "fds": set(), "children": set()}
        # (owner label, threads, {fd: target}, child pids) made by broader-scoped fixtures.
        self.fixture_made = []
        # Loops made by pytest-asyncio or asyncio's policy, not by test code: {loop: {fd: target}}.
        self.machinery_loops = weakref.WeakKeyDictionary()
        self.leaks = []  # every Leak, in order
        self.reported = set()
        self.late = []  # leaks blamed on tests that had already finished
        self.finished = set()
        self.pending_items = {}  # nodeid -> list of Leak found for it while it runs
        self.markers = {}  # nodeid -> its marker's ignore + expect entries
        self._restore = []
        self._origin_depth = None
        self.install()

    # --- hooks into creation --------------------------------------------------------------

    def install(self):
        checker = self

        def patch(owner, name, make):
            original = getattr(owner, name)
            setattr(owner, name, make(original))
            self._restore.append((owner, name, original))

        def thread_start(original):
            @functools.wraps(original)
            def start(thread, *a, **kw):
                checker._guard(lambda: checker.threads.__setitem__(
                    thread, (checker.thread_owner(), _user_site())))
                return original(thread, *a, **kw)

            return start

        patch(threading.Thread, "start", thread_start)

        def record_fd(obj, site):
            try:
                fd = obj.fileno()
            except Exception:
                return
            if isinstance(fd, int) and fd >= 0:
                try:
                    target = os.readlink("/proc/self/fd/%d" % fd)
                except OSError:
                    target = None
                checker.fds[fd] = (checker.owner(), site, target)

        def socket_init(original):
            @functools.wraps(original)
            def __init__(sock, *a, **kw):
                original(sock, *a, **kw)
                checker._guard(lambda: record_fd(sock, _user_site()))

            return __init__

        patch(socket.socket, "__init__", socket_init)

        def socket_accept(original):
            @functools.wraps(original)
            def accept(sock, *a, **kw):
                conn, addr = original(sock, *a, **kw)
                checker._guard(lambda: record_fd(conn, _user_site()))
                return conn, addr

            return accept

        patch(socket.socket, "accept", socket_accept)

        def opener(original):
            @functools.wraps(original)
            def open_(*a, **kw):
                f = original(*a, **kw)
                if checker.current is not None:
                    checker._guard(lambda: record_fd(f, _user_site()))
                return f

            return open_

        patch(builtins, "open", opener)
        patch(io, "open", opener)

        def popen_init(original):
            @functools.wraps(original)
            def __init__(popen, *a, **kw):
                original(popen, *a, **kw)

                def note():
                    site = _user_site()
                    checker.note_spawn(popen.pid)
                    checker.children[popen.pid] = (checker.owner(), site)
                    for stream in (popen.stdin, popen.stdout, popen.stderr):
                        if stream is not None:
                            record_fd(stream, site)

                checker._guard(note)

            return __init__

        patch(subprocess.Popen, "__init__", popen_init)

        # Every way Python starts a process, so children are known by pid without scanning
        # /proc: subprocess and multiprocessing's spawn go through _posixsubprocess.fork_exec,
        # multiprocessing's fork through os.fork.
        def spawner(original):
            @functools.wraps(original)
            def spawn(*a, **kw):
                pid = original(*a, **kw)
                if isinstance(pid, int) and pid > 0:
                    checker._guard(lambda: checker.note_spawn(pid))
                return pid

            return spawn

        try:
            import _posixsubprocess

            patch(_posixsubprocess, "fork_exec", spawner)
        except (ImportError, AttributeError):
            pass
        if getattr(subprocess, "_fork_exec", None) is not None:  # bound at import (3.11+)
            patch(subprocess, "_fork_exec", spawner)
        for name in ("fork", "posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                patch(os, name, spawner)

        def create_task(original):
            @functools.wraps(original)
            def create(loop, *a, **kw):
                task = original(loop, *a, **kw)
                checker._guard(lambda: checker.tasks.__setitem__(
                    task, (checker.owner(), checker.phase, _user_site())))
                return task

            return create

        def patch_create_task(cls):
            """On the loop's own class: uvloop's Loop (and any loop not built on BaseEventLoop)
            has its own create_task, so patching BaseEventLoop alone missed every task made on
            a uvloop loop."""
            current = getattr(cls, "create_task", None)
            if current is not None and not getattr(current, "_leakhound", False):
                wrapper = create_task(current)
                wrapper._leakhound = True
                try:
                    setattr(cls, "create_task", wrapper)
                except (TypeError, AttributeError):
                    return  # a class implemented in C without a Python subclass
                self._restore.append((cls, "create_task", current))

        patch_create_task(asyncio.BaseEventLoop)

        # Every loop class, as it starts running: asyncio tells itself which loop runs on a
        # thread through events._set_running_loop, and uvloop reads that function from asyncio
        # when it is imported (after this plugin, when a test module imports it).
        def running_loop(original):
            @functools.wraps(original)
            def _set_running_loop(loop):
                if loop is not None:
                    checker._guard(lambda: (patch_create_task(type(loop)), patch_runners()))
                return original(loop)

            return _set_running_loop

        events = sys.modules.get("asyncio.events")
        if events is not None and hasattr(events, "_set_running_loop"):
            before = events._set_running_loop
            patch(events, "_set_running_loop", running_loop)
            if getattr(asyncio, "_set_running_loop", None) is before:
                patch(asyncio, "_set_running_loop", lambda _o: events._set_running_loop)

        def exception_handler(original):
            @functools.wraps(original)
            def call_exception_handler(loop, context):
                task = context.get("task") if isinstance(context, dict) else None
                if task is not None and "destroyed but it is pending" in str(
                        context.get("message", "")):
                    checker._guard(lambda: checker.on_task_destroyed(task))
                return original(loop, context)

            return call_exception_handler

        patch(asyncio.BaseEventLoop, "call_exception_handler", exception_handler)

        # asyncio.run() and asyncio.Runner (which pytest-asyncio uses) cancel every task still
        # pending when their loop closes, which hides task leaks; note which ones they were.
        # Before 3.11 pytest-asyncio runs the backported Runner and uvloop.run its own copy.
        def cancel_all(original):
            @functools.wraps(original)
            def _cancel_all_tasks(loop):
                checker._guard(lambda: checker.note_swept(loop))
                return original(loop)

            _cancel_all_tasks._leakhound = True
            return _cancel_all_tasks

        def patch_runners():
            for name in RUNNER_MODULES:
                current = getattr(sys.modules.get(name), "_cancel_all_tasks", None)
                if current is not None and not getattr(current, "_leakhound", False):
                    patch(sys.modules[name], "_cancel_all_tasks", cancel_all)

        patch_runners()

        # A loop pytest-asyncio (or asyncio's policy, asked for the current loop) makes with no
        # test code on the stack is theirs while it lives: before 3.10 asyncio.get_event_loop()
        # makes one the first time and nothing closes it.
        selector_events = sys.modules.get("asyncio.selector_events")
        loop_class = getattr(selector_events, "BaseSelectorEventLoop", None)
        if loop_class is not None:
            def loop_init(original):
                @functools.wraps(original)
                def __init__(loop, *a, **kw):
                    if _user_site():
                        return original(loop, *a, **kw)
                    before = _fd_table()
                    original(loop, *a, **kw)
                    checker._guard(lambda: checker.machinery_loops.__setitem__(loop, {
                        fd: t for fd, t in _fd_table().items() if before.get(fd) != t}))

                return __init__

            patch(loop_class, "__init__", loop_init)

        # Never-awaited coroutines: CPython calls warnings._warn_unawaited_coroutine(coro)
        # when one is finalised, whatever the warning filters say.
        unawaited = getattr(warnings, "_warn_unawaited_coroutine", None)
        if unawaited is not None:
            def _warn_unawaited_coroutine(coro):
                checker._guard(lambda: checker.on_unawaited(coro))
                return unawaited(coro)

            patch(warnings, "_warn_unawaited_coroutine", lambda _o: _warn_unawaited_coroutine)
        self._origin_depth = sys.get_coroutine_origin_tracking_depth()
        if self._origin_depth < self.origin_depth:
            sys.set_coroutine_origin_tracking_depth(self.origin_depth)

        # ResourceWarnings: Python ignores them by default; let them reach _showwarnmsg, which
        # pytest's per-test warning capture leaves in place.
        warnings.filterwarnings("always", category=ResourceWarning)
        show = getattr(warnings, "_showwarnmsg", None)
        if show is not None:
            def _showwarnmsg(msg):
                if getattr(msg, "category", None) is ResourceWarning:
                    checker._guard(lambda: checker.on_resource_warning(msg))
                return show(msg)

            patch(warnings, "_showwarnmsg", lambda _o: _showwarnmsg)

    def note_spawn(self, pid):
        if pid not in self.children:
            self.children[pid] = (self.owner(), _user_site())
        if self.scoped_fixture_depth > 0:
            self.scoped["children"].add(pid)
        elif self.current is not None:
            self.spawned.add(pid)
        if len(self.children) > 10000:  # bounded: forget the oldest half
            for old in list(self.children)[:5000]:
                del self.children[old]

    def note_swept(self, loop):
        for task in asyncio.all_tasks(loop):
            if task.done():
                continue
            cancelling = getattr(task, "cancelling", None)
            requested = cancelling() if cancelling else getattr(task, "_must_cancel", False)
            if not requested:  # a cancel the program asked for is not a leak
                self.swept.add(task)

    def uninstall(self):
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore = []
        if self._origin_depth is not None:
            sys.set_coroutine_origin_tracking_depth(self._origin_depth)

    def _guard(self, fn):
        # The plugin must never break the code under test.
        try:
            fn()
        except Exception:
            pass

    def owner(self):
        if self.scoped_fixture_depth > 0:
            return None  # made by a module/session fixture: not any one test's
        return self.current

    def thread_owner(self):
        """Who a thread being started now belongs to: a thread started by another thread
        that a test (or fixture) started is that one's, whenever it runs; a thread an earlier
        test left running must not make the test running now look guilty."""
        creator = self.threads.get(threading.current_thread())
        if creator is not None:
            return creator[0]
        return self.owner()

    # --- creation-time blame for late signals -----------------------------------------------

    def created_by(self, coro):
        """(test, creation site) of a coroutine, from its origin (tracked since configure):
        the test function whose frame created it, else the test running now."""
        origin = getattr(coro, "cr_origin", None) or ()
        # cr_origin lists the innermost frame first.
        site = ["%s:%d in %s" % (f, line, fn) for (f, line, fn) in reversed(origin)]
        for filename, _line, funcname in origin:
            tests = self.test_functions.get((os.path.abspath(filename), funcname))
            if tests:
                return (self.current if self.current in tests else tests[0]), site
        return self.current, site

    def on_task_destroyed(self, task):
        """A pending task garbage-collected (asyncio holds tasks weakly): its work is gone."""
        coro = task.get_coro()
        test, site = self.created_by(coro)
        if test is None:
            return
        name = task.get_name()
        qual = getattr(coro, "__qualname__", type(coro).__name__)
        self.add(Leak(
            "stuck-task",
            "task:%s" % name,
            "task '%s' (%s) was garbage-collected while still pending: nothing kept a reference "
            "to it, so it never finished; keep a reference to the task" % (name, qual),
            test,
            task_name=name,
            coroutine=qual,
            site=[s for s in site if not _is_machinery(s.split(":", 1)[0])] or site,
        ))

    def on_unawaited(self, coro):
        test, site = self.created_by(coro)
        if test is None:
            return
        name = getattr(coro, "__qualname__", "coroutine")
        self.add(Leak(
            "never-awaited",
            "coroutine:%s" % name,
            "coroutine '%s' was created but never awaited, so it never ran" % name,
            test,
            coroutine=name,
            site=[s for s in site if not _is_machinery(s.split(":", 1)[0])] or site,
        ))

    def on_resource_warning(self, msg):
        source = getattr(msg, "source", None)
        fd = None
        if source is not None:
            try:
                fd = source.fileno()
            except Exception:
                fd = None
        created = self.fds.get(fd) if isinstance(fd, int) and fd >= 0 else None
        if created and created[2] is not None:
            try:
                if os.readlink("/proc/self/fd/%d" % fd) != created[2]:
                    created = None  # the number was reused by something we did not see made
            except OSError:
                created = None
        test = created[0] if created else self.owner()
        if test is None and created:
            test = self.fixture_owner(fd, created[2])
        if test is None:
            return
        text = str(msg.message).split("\n")[0]
        self.add(Leak(
            "unclosed-resource",
            "fd:%s" % fd if created else "resource:%s" % text[:80],
            "%s (never closed; found when it was garbage-collected)" % text,
            test,
            fd=fd,
            site=created[1] if created else None,
        ))

    # --- bookkeeping ------------------------------------------------------------------------

    def add(self, leak):
        if leak.key() in self.reported:
            return
        # The same descriptor reported by the /proc diff and later by its ResourceWarning is
        # one leak.
        if leak.subject.startswith("fd:") and any(
            l.test == leak.test and l.subject == leak.subject and l.rule == leak.rule
            for l in self.leaks
        ):
            return
        self.reported.add(leak.key())
        self.leaks.append(leak)
        if leak.test in self.finished:
            self.late.append(leak)
        else:
            self.pending_items.setdefault(leak.test, []).append(leak)

    # --- per test ---------------------------------------------------------------------------

    def pytest_collection_modifyitems(self, items):
        for item in items:
            fn = getattr(item, "function", None)
            code = getattr(fn, "__code__", None)
            if code is not None:
                key = (os.path.abspath(code.co_filename), code.co_name)
                self.test_functions.setdefault(key, []).append(item.nodeid)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        if fixturedef.scope == "function":
            yield
            return
        threads_before = set(threading.enumerate())
        fds_before = set(_fd_table().items())
        children_before = set(self.scoped["children"])
        self.scoped_fixture_depth += 1
        try:
            yield
        finally:
            self.scoped_fixture_depth -= 1
            threads = set(threading.enumerate()) - threads_before
            fds = set(_fd_table().items()) - fds_before
            children = self.scoped["children"] - children_before
            self.scoped["threads"].update(threads)
            self.scoped["fds"].update(fds)
            if threads or fds or children:
                # Not any one test's: judged when the session ends, after every fixture's
                # teardown, and blamed on the fixture.
                owner = "%s::%s (%s-scoped fixture)" % (
                    _defined_in(fixturedef, self.config), fixturedef.argname, fixturedef.scope)
                self.fixture_made.append((owner, threads, dict(fds), children))

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = item.nodeid
        self.spawned = set()
        item._leakhound_base = (set(threading.enumerate()), _fd_table())
        try:
            yield
        finally:
            self.finished.add(item.nodeid)
            self.current = None
            self.phase = None

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item):
        self.phase = "setup"
        yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item):
        self.phase = "call"
        yield

    def check_tasks(self, item):
        """Tasks a test created that were still pending when their loop was closed (asyncio.run
        and pytest-asyncio cancel those, hiding them), or are still pending now. A task a
        fixture's teardown finished is fine; a loop closed in a later test still blames its
        creator."""
        for task, (test, phase, site) in list(self.tasks.items()):
            if test is None:
                continue
            swept = task in self.swept
            if not swept and (test != item.nodeid or task.done()):
                continue
            coro = task.get_coro()
            name = task.get_name()
            qual = getattr(coro, "__qualname__", type(coro).__name__)
            stack = []
            try:
                for frame in task.get_stack(limit=SITE_DEPTH):
                    stack.append("%s:%d in %s" % (
                        frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
            except Exception:
                pass
            how = ("was still pending when its event loop was closed (which cancelled it)"
                   if swept else "is still pending after the test")
            self.add(Leak(
                "stuck-task",
                "task:%s" % name,
                "task '%s' (%s) %s" % (name, qual, how),
                test,
                task_name=name,
                coroutine=qual,
                site=site,
                await_chain=stack,
            ))
            self.swept.discard(task)
            self.tasks.pop(task, None)
        self.swept.clear()  # the rest were made outside any test, or before the plugin

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        self.phase = "teardown"
        yield
        self.phase = None
        try:
            self.check_tasks(item)
            self.check_left(item)
        except Exception as err:  # never break the run
            item.add_report_section("teardown", "leakhound", "leak check failed: %r" % (err,))

    def check_left(self, item):
        threads0, fds0 = item._leakhound_base
        # multiprocessing's resource tracker and fork server live as long as the interpreter:
        # never this test's leak, and never worth waiting for.
        helper_pids, helper_fds = _runtime_helpers()
        deadline = time.monotonic() + self.settle
        wait = 0.001
        collected = False
        while True:
            threads = [
                t for t in threading.enumerate()
                if t not in threads0 and t not in self.scoped["threads"] and t.is_alive()
                and t is not threading.current_thread()
                and not any(fnmatch.fnmatchcase(t.name, p) for p in DEFAULT_THREAD_IGNORES)
            ]
            fds = {
                fd: target for fd, target in _fd_table().items()
                if fds0.get(fd) != target and (fd, target) not in self.scoped["fds"] and fd > 2
                and fd not in helper_fds
            }
            if fds and any(t.startswith("socket:") for t in fds.values()):
                ours = _probe_sockets()
                fds = {fd: t for fd, t in fds.items() if t not in ours}
            if fds and self.machinery_loops:
                theirs = {}
                for loop, made in list(self.machinery_loops.items()):
                    if not loop.is_closed():
                        theirs.update(made)
                fds = {fd: t for fd, t in fds.items() if theirs.get(fd) != t}
            children = {
                pid: v for pid, v in _child_states(self.spawned).items()
                if pid not in self.scoped["children"] and pid not in helper_pids
            }
            running = [p for p, (state, _cmd) in children.items() if state not in ("Z", "X")]
            if not (threads or fds or children):
                return
            # An executor's idle worker waits for work until the executor is shut down: waiting
            # for it to end would only spend the settle time.
            waiting_for = [t for t in threads if not _is_pool_worker(t)]
            if not collected:
                # Unreachable objects still hold descriptors until collected; collect once,
                # only when there is something to explain (a full collection per test would
                # cost more than the check).
                collected = True
                gc.collect()
                continue
            if (not waiting_for and not running) or time.monotonic() >= deadline:
                break
            time.sleep(wait)
            wait = min(wait * 2, 0.05)
        self.blame_threads(item, threads)
        self.blame_fds(item, fds)
        self.blame_children(item, children)

    def fixture_owner(self, fd, target):
        """The scoped fixture that opened this descriptor, reported like a finished test."""
        for owner, _threads, fds, _children in self.fixture_made:
            if fds.get(fd) == target:
                self.finished.add(owner)
                return owner
        return None

    def check_fixtures(self):
        """What module- and session-scoped fixtures made and their teardown left behind."""
        if not self.fixture_made:
            return
        helper_pids, helper_fds = _runtime_helpers()
        deadline = time.monotonic() + self.settle
        wait = 0.001
        while True:
            open_fds = _fd_table()
            # A collector's connection to the probe accepted while a fixture was set up is the
            # probe's, as in check_left.
            ours = _probe_sockets() if any(
                t.startswith("socket:") for t in open_fds.values()) else set()
            left = []
            for owner, threads, fds, children in self.fixture_made:
                alive = [t for t in threads if t.is_alive()
                         and not any(fnmatch.fnmatchcase(t.name, p) for p in DEFAULT_THREAD_IGNORES)]
                still = {fd: target for fd, target in fds.items()
                         if open_fds.get(fd) == target and fd not in helper_fds
                         and target not in ours}
                kids = _child_states(children - helper_pids)
                if alive or still or kids:
                    left.append((owner, alive, still, kids))
            waiting = any(not _is_pool_worker(t) for _, alive, _, _ in left for t in alive) or any(
                state not in ("Z", "X") for _, _, _, kids in left for state, _ in kids.values())
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(wait)
            wait = min(wait * 2, 0.05)
        for owner, alive, still, kids in left:
            self.finished.add(owner)  # reported like a test that has finished
            for t in alive:
                self.add(Leak("thread-leak", "thread:%s" % t.name,
                              "thread '%s' started by this fixture is still running after its "
                              "teardown; stop and join it there" % t.name,
                              owner, thread_name=t.name, daemon=t.daemon,
                              site=self.threads.get(t, (None, []))[1]))
            for fd, target in sorted(still.items()):
                self.add(Leak("unclosed-resource", "fd:%d" % fd,
                              "fd %d (%s) opened by this fixture is still open after its teardown"
                              % (fd, target), owner, fd=fd, target=target,
                              site=(self.fds.get(fd) or (None, []))[1]))
            for pid, (state, cmd) in sorted(kids.items()):
                zombie = state == "Z"
                self.add(Leak("zombie-child" if zombie else "orphan-child", "pid:%d" % pid,
                              ("child `%s` (pid %d) exited but was never waited for" if zombie
                               else "child `%s` (pid %d) started by this fixture is still "
                               "running after its teardown") % (cmd, pid),
                              owner, pid=pid, cmd=cmd,
                              site=self.children.get(pid, (None, []))[1]))

    def blame_threads(self, item, threads):
        for t in threads:
            test, site = self.threads.get(t, (item.nodeid, []))
            if test is None:
                continue
            if any(fnmatch.fnmatchcase(t.name, p) for p in DEFAULT_THREAD_IGNORES):
                continue
            self.add(Leak(
                "thread-leak",
                "thread:%s" % t.name,
                "thread '%s'%s started by this test is still running; join() it or stop it"
                % (t.name, " (daemon)" if t.daemon else ""),
                test or item.nodeid,
                thread_name=t.name,
                daemon=t.daemon,
                site=site,
            ))

    def blame_fds(self, item, fds):
        for fd, target in sorted(fds.items()):
            created = self.fds.get(fd)
            if created and created[2] not in (None, target):
                created = None  # the number was reused by something we did not see made
            test, site = (created[0], created[1]) if created else (item.nodeid, [])
            if created and test is None:
                continue
            kind = "socket" if target.startswith("socket:") else (
                "pipe" if target.startswith("pipe:") else "file")
            self.add(Leak(
                "unclosed-resource",
                "fd:%d" % fd,
                "fd %d (%s %s) opened by this test is still open" % (fd, kind, target),
                test or item.nodeid,
                fd=fd,
                target=target,
                kind=kind,
                site=site,
            ))

    def blame_children(self, item, children):
        for pid, (state, cmd) in sorted(children.items()):
            test, site = self.children.get(pid, (item.nodeid, []))
            if test is None:
                continue
            zombie = state == "Z"
            self.add(Leak(
                "zombie-child" if zombie else "orphan-child",
                "pid:%d" % pid,
                ("child `%s` (pid %d) exited but was never waited for" if zombie
                 else "child `%s` (pid %d) started by this test is still running") % (cmd, pid),
                test or item.nodeid,
                pid=pid,
                cmd=cmd,
                site=site,
            ))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.when != "teardown":
            return
        report = outcome.get_result()
        found = self.pending_items.pop(item.nodeid, [])
        marker = item.get_closest_marker("leakhound")
        try:
            ignore = [Entry.parse(e, "@pytest.mark.leakhound ignore")
                      for e in (marker.kwargs.get("ignore", ()) if marker else ())]
            expect = [Entry.parse(e, "@pytest.mark.leakhound expect")
                      for e in (marker.kwargs.get("expect", ()) if marker else ())]
        except ValueError as err:
            report.outcome = "failed"
            report.longrepr = str(err)
            return
        kept = []
        for leak in found:
            if any(e.matches(leak) for e in ignore + expect + self.ignores):
                continue
            kept.append(leak)
        self.markers[item.nodeid] = ignore + expect
        missing = [e.text for e in expect if not any(e.matches(l) for l in found)]
        for leak in kept:
            item.user_properties.append(("leakhound", "%s %s" % (leak.rule, leak.message)))
        item._leakhound_kept = kept
        if not kept and not missing:
            return
        lines = []
        if kept:
            lines.append("leakhound: this test leaked %d thing(s):" % len(kept))
            lines.extend(l.describe() for l in kept)
        if missing:
            lines.append("leakhound: expected leak(s) not found: %s" % ", ".join(missing))
        text = "\n".join(lines)
        if self.mode == "fail" or missing:
            if report.passed:
                report.outcome = "failed"
                report.longrepr = text
            else:
                report.sections.append(("leakhound", text))
        else:
            report.sections.append(("leakhound", text))
        self.kept_for_summary(kept)

    def kept_for_summary(self, kept):
        self.summary = getattr(self, "summary", []) + kept

    # --- end of session ---------------------------------------------------------------------

    def pytest_sessionfinish(self, session, exitstatus):
        self._guard(gc.collect)
        self._guard(self.check_fixtures)
        late = [
            l for l in self.late
            if not any(e.matches(l) for e in self.ignores + self.markers.get(l.test, []))
        ]
        self.late_kept = late
        if late and self.mode == "fail" and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.write_report()

    def all_kept(self):
        return list(getattr(self, "summary", [])) + list(getattr(self, "late_kept", []))

    def write_report(self):
        folder = os.environ.get("LEAKHOUND_SOCKET_DIR")
        if not folder:
            return
        path = os.path.join(folder, "%d.pytest.json" % os.getpid())
        body = {
            "type": "pytest",
            "pid": os.getpid(),
            "mode": self.mode,
            "findings": [l.as_finding() for l in self.all_kept()],
        }
        try:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(body, f, default=str)
            os.replace(tmp, path)
        except OSError as err:
            sys.stderr.write("leakhound: cannot write %s: %s\n" % (path, err))

    def pytest_terminal_summary(self, terminalreporter):
        kept = self.all_kept()
        if not kept:
            return
        tr = terminalreporter
        tr.section("leakhound")
        by_test = {}
        for leak in kept:
            by_test.setdefault(leak.test, []).append(leak)
        for test, leaks in by_test.items():
            late = " (found after it finished)" if any(l in self.late for l in leaks) else ""
            tr.write_line("%s%s" % (test, late))
            for leak in leaks:
                tr.write_line("    " + leak.describe().replace("\n", "\n    "))
        tr.write_line("%d leak(s) in %d test(s) [mode: %s]" % (len(kept), len(by_test), self.mode))
