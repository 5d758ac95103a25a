"""Starting, stopping and re-starting (after fork) the probe in this process."""

import os
import sys
import threading

from . import _patches
from ._probe import Options, Probe
from ._server import Server, socket_path

_lock = threading.RLock()
_probe = None
_options_kw = {}
_fork_hook_installed = False


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


def _start_threads(probe):
    if probe.options.server:
        server = Server(probe, socket_path(probe.pid, probe.options.socket_dir))
        problem = server.start()
        if problem:
            probe.missing.append("socket: " + problem)
        else:
            probe.server = server
    probe.watchdog = threading.Thread(
        target=probe.watchdog_main, name="leakhound-probe-watchdog", daemon=True
    )
    probe.watchdog.start()


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


def _install_fork_hook():
    global _fork_hook_installed
    if _fork_hook_installed or not hasattr(os, "register_at_fork"):
        return
    _fork_hook_installed = True
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
        _start_threads(child)
    except Exception:
        _probe = None
        _patches.set_probe(None)
