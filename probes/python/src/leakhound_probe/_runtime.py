"""Starting, stopping and re-starting (after fork) the probe in this process."""

import os
import sys
import threading

from . import _patches, _util
from ._probe import Options, Probe
from ._server import Server, fallback_folder, socket_path

_lock = threading.RLock()
_probe = None
_options_kw = {}
_fork_hook_installed = False
# The private folder this process (and its forked children) listen in when the usual one was
# refused: made once, on first need.
_fallback_dir = None
_refused = ""  # why the usual folder was refused
# A forked child binds its socket this long after the fork, not at once: most pool workers
# and short-lived children never need one (and then leave nothing behind), and the fork
# itself stays cheap. `leakhound check` samples every 500 ms.
CHILD_LISTEN_MS = _util.env_int("LEAKHOUND_CHILD_LISTEN_MS", 200, 0, 60000)


class Handle:
    """What install() returns: the socket path, and close()."""

    def __init__(self, probe):
        self._probe = probe

    @property
    def socket_path(self):
        server = self._probe.server
        return server.path if server is not None else None

    @property
    def pid(self):
        return self._probe.pid

    def snapshot(self, stacks=False):
        """The same data a collector gets, as a dict (handy in tests and REPLs)."""
        return self._probe.snapshot(stacks=stacks)

    def close(self):
        close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def install(**kw):
    """Loads the probe once per process; later calls return the same handle."""
    global _probe, _options_kw
    with _lock:
        if _probe is not None and not _probe.closed and _probe.pid == os.getpid():
            return Handle(_probe)
        _options_kw = dict(kw)
        _probe = _start(Options(**kw))
        return Handle(_probe)


def _start(options):
    probe = Probe(options)
    _patches.set_probe(probe)
    # Before concurrent.futures is imported: our shutdown hook must run before its own.
    _patches.install_shutdown_hooks()
    _patches.install_hooks(options.log_ids, options.resource_warnings)
    _patches.install_warning_hooks(probe)
    if options.origin_depth > 0 and sys.get_coroutine_origin_tracking_depth() < options.origin_depth:
        sys.set_coroutine_origin_tracking_depth(options.origin_depth)
    _start_threads(probe)
    _install_fork_hook()
    _adopt_running_loop(probe)
    return probe


def _adopt_running_loop(probe):
    """install() called from inside a running loop: that loop started before our patch."""
    events = sys.modules.get("asyncio.events")
    loop = events._get_running_loop() if events is not None else None
    if loop is not None and id(loop) not in probe.loops:
        try:
            _patches.loop_started(probe, loop, None)
        except Exception:
            probe.count_error()


def _start_threads(probe, forked=False):
    """The server (in a forked child: CHILD_LISTEN_MS later, from the watchdog thread) and
    the watchdog."""
    target, args = probe.watchdog_main, ()
    if probe.options.server and forked and CHILD_LISTEN_MS > 0:
        target, args = _listen_later_then_watch, (probe,)
    elif probe.options.server:
        _start_server(probe)
    probe.watchdog = threading.Thread(
        target=target, args=args, name="leakhound-probe-watchdog", daemon=True
    )
    probe.watchdog.start()


def _listen_later_then_watch(probe):
    if probe.stop.wait(CHILD_LISTEN_MS / 1000.0):
        return
    with _lock:
        if probe.closed or probe.stop.is_set():
            return
        try:
            _start_server(probe)
        except Exception:
            probe.count_error()
    probe.watchdog_main()


def _start_server(probe):
    """Listens where PROTOCOL.md says; where that folder cannot be trusted (not ours, not
    0700, a symbolic link) or used, in a private folder of our own, and says so: a line on
    stderr, a `missing` entry and a `note` in the hello."""
    global _fallback_dir, _refused
    # Once refused (by this process or the parent it forked from), straight to the fallback.
    server = Server(probe, socket_path(probe.pid, _fallback_dir or probe.options.socket_dir))
    if _fallback_dir is not None:
        server.note = "%s; listening at %s instead" % (_refused, server.path)
    problem = server.start()
    if problem and _fallback_dir is None:
        try:
            _fallback_dir = fallback_folder()
        except OSError as err:
            problem += "; no private folder could be made instead: %s" % (err.strerror or err)
    if problem and _fallback_dir is not None:
        _refused = problem
        server = Server(probe, socket_path(probe.pid, _fallback_dir))
        # Before it listens: the first collector's hello carries it too.
        server.note = "%s; listening at %s instead" % (_refused, server.path)
        probe.missing.append("socket: " + server.note)
        problem = server.start()
        if problem:
            probe.missing.pop()
        else:
            # No final report into a folder we refuse; nor into ours, where no collector
            # looks for one (it would only keep the folder from going at exit).
            probe.options.socket_dir = None
            _say(server.note)
    if problem:
        probe.missing.append("socket: " + problem)
        _say("not listening: " + problem)
        return
    probe.server = server


def _say(text):
    try:
        sys.stderr.write("leakhound_probe: %s\n" % text)
    except Exception:
        pass


def close():
    global _probe
    with _lock:
        probe, _probe = _probe, None
        if probe is None:
            return
        probe.closed = True
        probe.stop.set()
        probe.sites.close()
        _patches.set_probe(None)
        for state in list(probe.loops.values()):
            state.running = False
        if probe.server is not None and probe.pid == os.getpid():
            probe.server.close()
            _remove_fallback_folder(probe.server)


def _remove_fallback_folder(server):
    """The fallback folder goes with the process that made it, once no child uses it."""
    if _fallback_dir is not None and os.path.dirname(server.path) == _fallback_dir:
        try:
            os.rmdir(_fallback_dir)
        except OSError:
            pass


def _install_fork_hook():
    global _fork_hook_installed
    if _fork_hook_installed or not hasattr(os, "register_at_fork"):
        return
    _fork_hook_installed = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_at_multiprocessing_child_exit)
        except Exception:
            pass


def _at_multiprocessing_child_exit():
    """A multiprocessing child ends with os._exit right after the threading shutdown (no
    atexit): its socket goes now, or it stays behind as a stale file. (Its final report
    stays: the collector reads it after the process is gone.)"""
    process = sys.modules.get("multiprocessing.process")
    parent = getattr(process, "parent_process", None)
    probe = _probe
    if probe is None or parent is None or probe.pid != os.getpid():
        return
    try:
        if parent() is None:
            return
        probe.stop.set()  # a child still waiting to listen never will
        with _lock:
            server = probe.server
            if server is not None:
                server.close()
    except Exception:
        probe.count_error()


def _after_fork_in_child():
    """A forked child (multiprocessing, gunicorn/uvicorn workers) gets its own probe."""
    global _probe, _lock
    _lock = threading.RLock()  # the parent's may have been held by a thread that is gone
    parent = _probe
    if parent is None:
        return
    try:
        if parent.server is not None:
            parent.server.close(unlink=False)
        parent.stop.set()
        parent.closed = True
        child = Probe(parent.options, sites=parent.sites)  # what the parent made, the child has
        # Loops the child inherited keep their identity; their heartbeats restart when
        # the child runs them again (run_forever registers afresh).
        _probe = child
        _patches.set_probe(child)
        _start_threads(child, forked=True)
    except Exception:
        _probe = None
        _patches.set_probe(None)
