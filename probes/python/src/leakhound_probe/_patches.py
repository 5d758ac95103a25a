"""Where the probe hooks into the host: loops, executors, semaphores, warnings, shutdown.

Each patch is applied once per process, when its module is first imported (so a program that
never imports asyncio never pays for it), and every patched function passes straight through
when the probe is closed. Nothing here may raise into the host.
"""

import sys
import threading
import warnings
from _thread import get_ident

from . import _util

from ._probe import PoolStats, creation_site, timed_call
from ._util import monotonic

_probe = None  # the live Probe, or None when closed
_applied = set()


def set_probe(probe):
    global _probe
    _probe = probe


def current():
    return _probe


def _guard(fn):
    """Runs a probe hook; an exception inside is counted, never raised into the host."""
    try:
        fn()
    except Exception:
        if _probe is not None:
            _probe.count_error()


# --- lazy patching: apply when the module is imported -----------------------------------------


class _PostImportFinder:
    """Lets the real finders load a module, then patches it before anyone uses it.

    A plain class (the meta path only needs find_spec): importlib.abc costs ~8 ms of imports.
    """

    def __init__(self, hooks):
        self.hooks = hooks
        self.busy = set()

    def find_spec(self, name, path=None, target=None):
        hook = self.hooks.get(name)
        if hook is None or name in self.busy:
            return None
        self.busy.add(name)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        finally:
            self.busy.discard(name)
        loader = getattr(spec, "loader", None) if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _apply(name, hook, module)

        try:
            loader.exec_module = exec_module
        except Exception:
            return spec
        return spec


def _apply(name, hook, module):
    if name in _applied:
        return
    _applied.add(name)
    _guard(lambda: hook(module))


_finder = None


def install_hooks(log_ids, resource_sites=True):
    global _finder
    hooks = {
        "asyncio.events": _patch_running_loop,
        "asyncio.selector_events": _patch_transports,
        "asyncio.base_subprocess": _patch_transports,
        "asyncio.sslproto": _patch_transports,
        "aiohttp.client": _patch_aiohttp,
        "aiohttp.connector": _patch_aiohttp,
        "multiprocessing.pool": _patch_mp_pool,
        "socket": _patch_socket,
        "asyncio.locks": _patch_semaphores,
        "concurrent.futures.thread": _patch_thread_pool,
        "concurrent.futures.process": _patch_process_pool,
    }
    if resource_sites:
        _guard(_patch_open)
    else:
        for name in ("asyncio.selector_events", "asyncio.base_subprocess", "asyncio.sslproto",
                     "aiohttp.client", "aiohttp.connector", "socket"):
            hooks.pop(name)
    if log_ids:
        from . import _logids

        hooks["logging"] = _logids.install
    pending = {}
    for name, hook in hooks.items():
        module = sys.modules.get(name)
        if module is not None:
            _apply(name, hook, module)
        elif name not in _applied:
            pending[name] = hook
    if pending and _finder is None:
        _finder = _PostImportFinder(pending)
        sys.meta_path.insert(0, _finder)
    elif pending:
        _finder.hooks.update(pending)


# --- asyncio loops --------------------------------------------------------------------------


def _patch_running_loop(events):
    """Finds every asyncio loop, whatever its class, where it tells asyncio it runs on a thread:
    `asyncio.events._set_running_loop`. BaseEventLoop calls it from run_forever; uvloop's
    Cython Loop from its _run, through the function it read from `asyncio._set_running_loop`
    when uvloop was imported (so this must be in place by then: it is when the probe loads at
    startup, as `leakhound run` and `check` load it). No loop's internals are needed."""
    original = events._set_running_loop
    get_running = events._get_running_loop

    def _set_running_loop(loop):
        probe = _probe
        if probe is None:
            return original(loop)
        if loop is None:
            old = get_running()
            result = original(loop)
            if old is not None:
                _guard(lambda: loop_stopped(probe, old))
            return result
        result = original(loop)
        # The frame that entered the loop: what is above it on the stack is the loop's work.
        entry = sys._getframe(1)
        _guard(lambda: loop_started(probe, loop, entry))
        return result

    _set_running_loop.__wrapped__ = original
    events._set_running_loop = _set_running_loop
    package = sys.modules.get("asyncio")
    if package is not None and getattr(package, "_set_running_loop", None) is original:
        package._set_running_loop = _set_running_loop  # asyncio was imported before the probe


def loop_started(probe, loop, entry):
    """`loop` starts running on this thread, entered from the frame `entry` (None: unknown)."""
    # 3.12+ sets the running loop from a helper that has returned by the time the loop runs.
    while entry is not None and entry.f_code.co_name == "_run_forever_setup":
        entry = entry.f_back
    probe.loop_state(loop).started(entry)
    _patch_loop_class(type(loop))
    if probe.options.task_sites and loop.get_task_factory() is None:
        loop.set_task_factory(_site_task_factory)


def loop_stopped(probe, loop):
    state = probe.loops.get(id(loop))
    if state is not None and state.loop_ref() is loop:
        state.stopped()


def _patch_loop_class(cls):
    """Sees what a loop class reports to its exception handler ("Task was destroyed but it is
    pending!"). Patched on the loop's own class: for uvloop that is the Python subclass
    uvloop.Loop of the Cython loop, and the task's finaliser looks the method up by name."""
    original = getattr(cls, "call_exception_handler", None)
    if original is None or getattr(original, "_leakhound", False):
        return

    def call_exception_handler(self, context):
        probe = _probe
        if probe is not None:
            _guard(lambda: _note_loop_exception(probe, context))
        return original(self, context)

    call_exception_handler.__wrapped__ = original
    call_exception_handler._leakhound = True
    try:
        cls.call_exception_handler = call_exception_handler
    except (TypeError, AttributeError):
        pass  # a class implemented in C without a Python subclass


def _site_task_factory(loop, coro, **kwargs):
    import asyncio

    task = asyncio.Task(coro, loop=loop, **kwargs)
    probe = _probe
    if probe is not None:
        site = creation_site(2, depth=1)
        try:
            probe.task_sites[task] = (site[-1] if site else None, monotonic())
        except Exception:
            pass
    return task


def _note_loop_exception(probe, context):
    message = str(context.get("message", ""))
    if "destroyed but it is pending" in message:
        task = context.get("task")
        coro = task.get_coro() if task is not None else None
        from ._probe import await_chain

        # A task collected in a cycle often has its coroutine closed first: then its last
        # place is what the probe's progress look saw.
        chain = await_chain(coro) or (probe.last_seen_chain(task) if task is not None else [])
        probe.events.add(
            "task_destroyed_pending",
            getattr(coro, "__qualname__", "task"),
            "%s: %s" % (message, task.get_name() if task is not None else "?"),
            chain,
        )


# --- executors --------------------------------------------------------------------------------


def _patch_pool_init(cls, kind):
    """Wraps an executor class's __init__ so each instance is counted and listed."""
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        probe = _probe
        if probe is not None:
            try:
                self._leakhound = PoolStats(kind, creation_site(2))
                probe.executors.add(self)
            except Exception:
                probe.count_error()

    __init__.__wrapped__ = original_init
    cls.__init__ = __init__


def _patch_thread_pool(thread_module):
    _register_threading_atexit()
    cls = thread_module.ThreadPoolExecutor
    _patch_pool_init(cls, "thread_pool")
    original_submit = cls.submit

    def submit(self, fn, /, *args, **kwargs):
        stats = self.__dict__.get("_leakhound")
        if stats is None or _probe is None:
            return original_submit(self, fn, *args, **kwargs)
        now = monotonic()
        stats.on_submit(self, now)
        return original_submit(self, timed_call(stats, self, now, fn), *args, **kwargs)

    submit.__wrapped__ = original_submit
    cls.submit = submit


def _patch_process_pool(process_module):
    _patch_pool_init(process_module.ProcessPoolExecutor, "process_pool")


def _patch_semaphores(locks):
    cls = locks.Semaphore
    original_init = cls.__init__
    ids = iter(range(1, 1 << 62))

    def __init__(self, value=1, *args, **kwargs):
        original_init(self, value, *args, **kwargs)
        probe = _probe
        if probe is not None:
            try:
                site = creation_site(2, depth=1)
                self._leakhound = [value, None, site[-1] if site else None, "semaphore-%d" % next(ids)]
                probe.semaphores.add(self)
            except Exception:
                probe.count_error()

    __init__.__wrapped__ = original_init
    cls.__init__ = __init__


# --- creation sites of what warns when dropped unclosed (see _sites) --------------------------


def _note_site_on_init(cls, also=None):
    """Wraps the __init__ a class defines itself so the probe knows where each instance (of it
    or a subclass) was made; `also(probe, self)` runs after, when given."""
    original = cls.__dict__.get("__init__") if cls is not None else None
    if original is None or getattr(original, "_leakhound", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        probe = _probe
        if probe is not None:
            try:
                probe.sites.note(self, probe.entries.get(get_ident()))
                if also is not None:
                    also(probe, self)
            except Exception:
                probe.count_error()

    __init__.__wrapped__ = original
    __init__._leakhound = True
    __init__.__name__ = "__init__"
    __init__.__qualname__ = "%s.__init__" % cls.__qualname__
    __init__.__doc__ = original.__doc__
    cls.__init__ = __init__


def _patch_socket(socket_module):
    _note_site_on_init(socket_module.socket)


def _patch_open():
    """open() (builtins and io, the same function): files warn when dropped open."""
    import builtins
    import io

    original = io.open
    if getattr(original, "_leakhound", False):
        return

    def open(*args, **kwargs):
        f = original(*args, **kwargs)
        probe = _probe
        if probe is not None:
            try:
                probe.sites.note(f, probe.entries.get(get_ident()))
            except Exception:
                probe.count_error()
        return f

    open.__wrapped__ = original
    open._leakhound = True
    open.__doc__ = original.__doc__
    open.__module__ = getattr(original, "__module__", None) or "io"
    if builtins.open is original:
        builtins.open = open
    io.open = open


def _patch_transports(module):
    for name in ("_SelectorTransport", "_SSLProtocolTransport", "BaseSubprocessTransport"):
        _note_site_on_init(module.__dict__.get(name))


def _patch_aiohttp(module):
    # aiohttp.client.ClientSession, aiohttp.connector.BaseConnector: both warn when dropped
    # open, from their own __del__ (which is all a ResourceWarning would name).
    for name in ("ClientSession", "BaseConnector"):
        _note_site_on_init(module.__dict__.get(name))


def _patch_mp_pool(pool_module):
    _note_site_on_init(pool_module.Pool, also=lambda probe, pool: probe.mp_pools.add(pool))


# --- warnings: never-awaited coroutines and unclosed resources -----------------------------


def install_warning_hooks(probe):
    if "warnings" in _applied:
        return
    _applied.add("warnings")
    original_unawaited = getattr(warnings, "_warn_unawaited_coroutine", None)
    if original_unawaited is not None:
        # Python's own: re-done here so the warning's location stays the host's frame.
        stdlib = getattr(original_unawaited, "__module__", None) == "warnings"

        def _warn_unawaited_coroutine(coro):
            if _probe is not None:
                host = sys._getframe(1)  # the host frame running when it was dropped
                _guard(lambda: _note_unawaited(_probe, coro, host))
            if not stdlib:
                return original_unawaited(coro)  # someone else's hook was first: chain to it
            # Warn as Python would (stacklevel 2 is the host frame running when it was collected).
            warnings.warn(_unawaited_text(coro), RuntimeWarning, stacklevel=2, source=coro)

        warnings._warn_unawaited_coroutine = _warn_unawaited_coroutine

    original_show = getattr(warnings, "_showwarnmsg", None)
    if original_show is None:
        return
    if probe.options.resource_warnings:
        # Python ignores ResourceWarning by default; let it through to us, and below only
        # forward what the user's own filters would have shown.
        # A message pattern of its own keeps our entry distinct from a user's identical
        # `-W always::ResourceWarning` (filterwarnings would merge the two).
        import re

        ours = ("always", re.compile(""), ResourceWarning, None, 0)
        warnings.filters.insert(0, ours)
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()

            def _filters_mutated():
                # A filter the program adds goes first: ours moves back in front of it, so
                # the probe still sees what the program hides (and below, hides it again).
                filters = warnings.filters
                if filters and filters[0] is not ours and ours in filters:
                    _guard(lambda: (filters.remove(ours), filters.insert(0, ours)))
                return mutated()

            _filters_mutated.__wrapped__ = mutated
            warnings._filters_mutated = _filters_mutated
    else:
        ours = None

    def _showwarnmsg(msg):
        probe = _probe
        category = getattr(msg, "category", None)
        if category is ResourceWarning:
            if probe is not None:
                _guard(lambda: _note_resource(probe, msg))
            # Also once the probe is closed (at exit): our filter stays, the user's choice holds.
            if ours is not None and not _user_would_show(ours, msg):
                return None
        return original_show(msg)

    warnings._showwarnmsg = _showwarnmsg


def _unawaited_text(coro):
    """The text Python's own warning has, so filters on it keep matching."""
    lines = ["coroutine '%s' was never awaited\n" % coro.__qualname__]
    origin = getattr(coro, "cr_origin", None)
    if origin:
        import linecache
        import traceback

        frames = [(f, n, fn, linecache.getline(f, n)) for (f, n, fn) in reversed(origin)]
        lines.append("Coroutine created at (most recent call last)\n")
        lines += traceback.format_list(frames)
    return "".join(lines).rstrip("\n")


def _note_unawaited(probe, coro, host):
    origin = getattr(coro, "cr_origin", None)
    name = getattr(coro, "__qualname__", "coroutine")
    if origin:
        # cr_origin lists the innermost frame first; sites are innermost last.
        site = ["%s:%d in %s" % (f, line, fn) for (f, line, fn) in reversed(origin)]
        how = "created at %s" % site[-1]
    else:
        # Without origin tracking: the host frame running when it was dropped, which for the
        # usual bug (`send(x)` without await) is the very line that created it.
        site = _util.format_stack(host, limit=3)
        how = "dropped at %s (LEAKHOUND_ORIGIN_DEPTH=3 records the creation site)" % (
            site[-1] if site else "?")
    probe.events.add(
        "never_awaited",
        name,
        "coroutine '%s' was never awaited, so it never ran; %s" % (name, how),
        site,
    )


def _resource_subject(text):
    lowered = text.lower()
    for needle, subject in (
        ("client session", "client session"),
        ("connector", "connector"),
        ("transport", "transport"),
        ("socket", "socket"),
        ("file", "file"),
        ("event loop", "event loop"),
        ("subprocess", "subprocess"),
        ("pool", "multiprocessing pool"),
    ):
        if needle in lowered:
            return subject
    return "resource"


def _note_resource(probe, msg):
    text = str(msg.message)
    source = getattr(msg, "source", None)
    # Where the program made it (see _sites); else where tracemalloc saw it allocated.
    site = probe.sites.lookup(source) or []
    where = "created at %s" % site[-1] if site else ""
    if not site and source is not None:
        try:
            import tracemalloc

            if tracemalloc.is_tracing():
                trace = tracemalloc.get_object_traceback(source)
                if trace is not None:
                    # Oldest frame first, so the allocation itself is last.
                    site = ["%s:%d" % (f.filename, f.lineno) for f in trace]
        except Exception:
            site = []
    if not site:
        where = "collected at %s:%s" % (msg.filename, msg.lineno)
    elif not where:
        where = "allocated at %s" % site[-1]
    if not site:
        site = ["%s:%s (where it was collected; PYTHONTRACEMALLOC=5 gives the allocation site)"
                % (msg.filename, msg.lineno)]
    probe.events.add(
        "unclosed_resource",
        _resource_subject(text),
        "%s (%s)" % (text.splitlines()[0][:300], where),
        site,
    )


_shown = {}  # what the user's once-only actions (default, module, once) have shown already
_module_names = {}  # co_filename -> module name


def _module_of(filename):
    """The module name a warning from `filename` is filtered by (warnings uses the warning
    frame's `__name__`: for a file, the module loaded from it; `__main__` for the script)."""
    name = _module_names.get(filename)
    if name is None:
        name = filename[:-3] if filename.endswith(".py") else filename
        for modname, module in list(sys.modules.items()):
            if getattr(module, "__file__", None) == filename:
                name = modname
                break
        if len(_module_names) < 10000:
            _module_names[filename] = name
    return name


def _user_would_show(ours, msg):
    """Whether the filters other than ours would have shown this warning, as
    warnings.warn_explicit decides: the first matching filter's action (by the warning's
    module *name*), a once-only action showing each warning once; `error` raises it."""
    import re

    text = str(msg.message)
    filename = msg.filename or ""
    module = _module_of(filename)
    action = getattr(warnings, "defaultaction", "default")
    for entry in list(warnings.filters):
        if entry is ours:
            continue
        what, message_re, category, module_re, lineno = entry
        if not issubclass(msg.category, category):
            continue
        if message_re is not None and not (
            message_re.match(text) if hasattr(message_re, "match") else re.match(message_re, text)
        ):
            continue
        if module_re is not None and not (
            module_re.match(module) if hasattr(module_re, "match") else re.match(module_re, module)
        ):
            continue
        if lineno and lineno != msg.lineno:
            continue
        action = what
        break
    if action == "ignore":
        return False
    if action == "error" and isinstance(msg.message, Warning):
        raise msg.message
    key = {
        "default": (text, msg.category, filename, msg.lineno),
        "module": (text, msg.category, filename),
        "once": (text, msg.category),
    }.get(action)
    if key is not None:
        if key in _shown:
            return False
        if len(_shown) < 10000:
            _shown[key] = True
    return True


# --- shutdown -------------------------------------------------------------------------------


def install_shutdown_hooks():
    if "shutdown" in _applied:
        return
    _applied.add("shutdown")
    _register_threading_atexit()
    import atexit

    atexit.register(_at_exit)


def _register_threading_atexit():
    """Runs ours before the interpreter joins non-daemon threads. Those hooks run last
    registered first, so this is called again once concurrent.futures.thread has registered
    its own (which drains and joins every executor: ours must look before that)."""
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_at_threading_shutdown)
        except Exception:
            pass


def _at_threading_shutdown():
    probe = _probe
    if probe is not None and not probe.shutdown_started:
        _guard(probe.at_threading_shutdown)


def _at_exit():
    probe = _probe
    if probe is None:
        return
    try:
        import gc

        # Collect garbage now so ResourceWarnings of unreachable cycles reach the probe.
        gc.collect()
    except Exception:
        pass
    if probe.options.resource_warnings and probe.options.socket_dir:
        _guard(probe.note_open_at_exit)
    _guard(probe.write_final)
    grace = probe.options.final_grace_ms / 1000.0
    server = probe.server
    if grace > 0 and server is not None:
        # Let a collector take a last snapshot; stop waiting as soon as one did.
        served_before = server.snapshots_served
        deadline = monotonic() + grace
        while monotonic() < deadline and server.snapshots_served == served_before:
            threading.Event().wait(0.02)
    _guard(probe_close_quietly)


def probe_close_quietly():
    from . import _runtime

    _runtime.close()
