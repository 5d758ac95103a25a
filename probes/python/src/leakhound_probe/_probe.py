"""The probe's state and what it records: loops, tasks, threads, pools, events.

The host's hot paths only append to bounded structures; everything costly (walking await
chains, copying task sets, formatting stacks) happens on the probe's own threads when a
collector asks, or once a second for progress tracking.
"""

import collections
import itertools
import json
import os
import sys
import threading
import types
import weakref

from . import _util
from ._sites import Sites
from ._util import monotonic, wall_ms

PROTOCOL = "leakhound/1"
VERSION = "0.1.0"

# Imported by every asyncio program (and patched: see _patches._patch_running_loop).
_LOOP_MODULE = "asyncio.events"


class Options:
    """Settings, from keyword arguments of install() or else the environment."""

    def __init__(self, **kw):
        def pick(key, env, default, kind=int):
            if key in kw and kw[key] is not None:
                return kind(kw[key])
            if kind is bool:
                return _util.env_flag(env, default)
            return _util.env_int(env, default)

        self.socket_dir = kw.get("socket_dir") or os.environ.get("LEAKHOUND_SOCKET_DIR") or None
        self.server = pick("server", "LEAKHOUND_SERVER", True, bool)
        self.log_ids = pick("log_ids", "LEAKHOUND_LOG_IDS", True, bool)
        self.task_sites = pick("task_sites", "LEAKHOUND_TASK_SITES", False, bool)
        # Origin tracking costs every coroutine creation (~9% at depth 1, ~24% at depth 3 on a
        # task-heavy loop): off by default; the site where the coroutine was dropped is used.
        self.origin_depth = pick("origin_depth", "LEAKHOUND_ORIGIN_DEPTH", 0)
        self.heartbeat_ms = max(5, pick("heartbeat_ms", "LEAKHOUND_HEARTBEAT_MS", 50))
        self.stall_ms = max(10, pick("stall_ms", "LEAKHOUND_STALL_MS", 100))
        self.window_ms = max(1000, pick("window_ms", "LEAKHOUND_WINDOW_MS", 10000))
        self.max_events = max(8, pick("max_events", "LEAKHOUND_MAX_EVENTS", 256))
        self.max_tasks = max(10, pick("max_tasks", "LEAKHOUND_MAX_TASKS", 2000))
        self.final_grace_ms = pick("final_grace_ms", "LEAKHOUND_FINAL_GRACE_MS", 0)
        self.resource_warnings = pick("resource_warnings", "LEAKHOUND_RESOURCE_WARNINGS", True, bool)


class EventRing:
    """Bounded, coalescing ring of one-off events: (kind, subject, site) repeats add to count."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.items = collections.OrderedDict()
        self.dropped = 0
        self.seq = itertools.count(1)
        self.lock = threading.Lock()

    def add(self, kind, subject, message, site):
        key = (kind, subject, tuple(site))
        with self.lock:
            event = self.items.pop(key, None)
            if event is None:
                event = {"kind": kind, "subject": subject, "site": list(site), "count": 0}
            event["count"] += 1
            event["seq"] = next(self.seq)
            event["at_ms"] = wall_ms()
            event["message"] = message
            self.items[key] = event
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
                self.dropped += 1

    def snapshot(self):
        with self.lock:
            return [dict(e) for e in self.items.values()]

    def reset(self):
        self.lock = threading.Lock()
        self.items.clear()
        self.dropped = 0


# Looks at the loop thread's stack during one stall: every watchdog tick at first, then one
# tick in STALL_SAMPLE_EVERY (each look takes the GIL from a loop already late), at most
# MAX_STALL_SAMPLES. A long stall may begin in library work (an import on a first request).
EVERY_TICK_SAMPLES = 20
STALL_SAMPLE_EVERY = 8
MAX_STALL_SAMPLES = 100


class LoopState:
    """One asyncio loop: its thread, a heartbeat that measures lag, the stalls it had."""

    ids = itertools.count(1)

    def __init__(self, probe, loop):
        self.probe = probe
        self.loop_ref = weakref.ref(loop)
        self.id = "loop-%d" % next(LoopState.ids)
        self.tid = 0
        self.ident = 0
        self.running = False
        self.interval = probe.options.heartbeat_ms / 1000.0
        self.expected = None  # monotonic time the next heartbeat is due
        self.lags = collections.deque(maxlen=4096)  # (monotonic, lag_ms)
        self.history = collections.deque(maxlen=120)  # max lag per second, oldest first
        self.bucket = (0, 0.0)
        self.stalls = collections.deque(maxlen=8)
        self.current_stall = None
        self.handle = None
        # The frame that entered the loop (run_forever's caller's side): the stack above it is
        # the loop's work. Held only while the loop runs, when that frame is alive anyway.
        self.entry = None
        self.samples = {}  # (code, line) of the program's frame or None -> [count, stack]
        self.samples_left = 0
        self.ticks = 0  # watchdog ticks into the current stall

    # --- on the loop's own thread -------------------------------------------------------
    def started(self, entry=None):
        self.tid = threading.get_native_id()
        self.ident = threading.get_ident()
        self.entry = entry
        self.running = True
        self.current_stall = None
        self.probe.entries[self.ident] = entry
        self._schedule(monotonic())

    def stopped(self):
        self.running = False
        self.expected = None
        self.entry = None
        self.probe.entries.pop(self.ident, None)
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.cancel()

    def _schedule(self, now):
        loop = self.loop_ref()
        if loop is None or not self.running or self.probe.closed:
            return
        self.expected = now + self.interval
        self.handle = loop.call_later(self.interval, self._beat)

    def _beat(self):
        now = monotonic()
        try:
            expected = self.expected if self.expected is not None else now
            lag_ms = max(0.0, (now - expected) * 1000.0)
            self.lags.append((now, lag_ms))
            second = int(now)
            start, peak = self.bucket
            if second != start:
                if start:
                    self.history.append(round(peak, 2))
                self.bucket = (second, lag_ms)
            elif lag_ms > peak:
                self.bucket = (start, lag_ms)
            stall = self.current_stall
            if stall is not None:
                stall["duration_ms"] = round(lag_ms, 2)
                self.current_stall = None
            elif lag_ms >= self.probe.options.stall_ms:
                # Shorter than the watchdog's look: known, but without a stack.
                self.stalls.append(
                    {"at_ms": wall_ms(), "duration_ms": round(lag_ms, 2), "stack": [], "task": None}
                )
        except Exception:
            self.probe.count_error()
        self._schedule(now)

    # --- on the probe's watchdog thread -------------------------------------------------
    def watch(self, now, stall_ms):
        expected = self.expected
        if not self.running or expected is None:
            return
        loop = self.loop_ref()
        if loop is None or not loop.is_running():
            # Stopped without our run_forever wrapper knowing (it was running before the
            # probe loaded): no heartbeat will come, and that is not a stall.
            self.running = False
            return
        overdue_ms = (now - expected) * 1000.0
        stall = self.current_stall
        if stall is not None:
            stall["duration_ms"] = round(max(stall["duration_ms"], overdue_ms), 2)
            self.ticks += 1
            if self.samples_left > 0 and (
                    self.ticks <= EVERY_TICK_SAMPLES or self.ticks % STALL_SAMPLE_EVERY == 0):
                self.samples_left -= 1
                self._sample(stall)
        elif overdue_ms >= stall_ms:
            stall = {
                "at_ms": wall_ms(),
                "duration_ms": round(overdue_ms, 2),
                "stack": [],
                "task": current_task_name(self.loop_ref()),
            }
            self.samples = {}
            self.samples_left = MAX_STALL_SAMPLES
            self.ticks = 0
            self._sample(stall)
            self.current_stall = stall
            self.stalls.append(stall)

    def _sample(self, stall):
        """Looks at the loop thread's stack again while the stall lasts, and reports the stack
        of the program's line seen most often (one look may land on the collector or between
        two blocking calls). Only what the loop runs: the frames that entered it
        (`asyncio.run(main())` in `<module>`) are not what blocks it and are never named."""
        try:
            frame = sys._current_frames().get(self.ident)
        except Exception:
            return
        key = None
        inner = frame
        while inner is not None and inner is not self.entry:
            if not _util.is_library_file(inner.f_code.co_filename):
                key = (inner.f_code, inner.f_lineno)
                break
            inner = inner.f_back
        seen = self.samples.get(key)
        if seen is None:
            seen = self.samples[key] = [0, _util.format_stack(frame, stop=self.entry)]
        seen[0] += 1
        if stall.get("_idle", True) and not _waiting_for_io(frame, self.entry):
            stall["_idle"] = False
        # The program's own lines first, then the most often seen.
        best = max(self.samples.items(), key=lambda kv: (kv[0] is not None, kv[1][0]))
        stall["stack"] = best[1][1]

    def report(self, now):
        window = self.probe.options.window_ms / 1000.0
        lags = sorted(lag for (t, lag) in list(self.lags) if now - t <= window)
        # A stall in progress counts as a sample: the loop is late right now.
        if self.running and self.expected is not None and now - self.expected > 0:
            overdue = (now - self.expected) * 1000.0
            if overdue >= self.probe.options.stall_ms:
                lags.append(overdue)
                lags.sort()
        history = list(self.history)
        # A stall in which every look found the loop waiting in its poll was the OS not running
        # the process (a busy machine), not the program blocking the loop: not reported.
        stalls = [{k: v for k, v in s.items() if k[0] != "_"} for s in list(self.stalls)
                  if s.get("_idle") is not True]
        if self.bucket[0]:
            history.append(round(self.bucket[1], 2))
        return {
            "id": self.id,
            "tid": self.tid,
            "running": self.running,
            "lag": {
                "p50_ms": round(_util.percentile(lags, 0.50), 2),
                "p99_ms": round(_util.percentile(lags, 0.99), 2),
                "max_ms": round(lags[-1], 2) if lags else 0.0,
                "samples": len(lags),
                "window_ms": self.probe.options.window_ms,
            },
            "lag_history_ms": history[-120:],
            "stalls": stalls,
        }


def _waiting_for_io(frame, entry):
    """Whether the loop thread is in its poll: in a selector's select(), or (uvloop, whose
    loop is C) with no frame above the one that entered the loop."""
    if frame is None or frame is entry:
        return True
    selectors = sys.modules.get("selectors")
    return (frame.f_code.co_name == "select" and selectors is not None
            and frame.f_code.co_filename == getattr(selectors, "__file__", None))


def current_task_name(loop):
    """Name of the task the loop is running now, readable from any thread."""
    if loop is None:
        return None
    try:
        import asyncio.tasks as tasks

        task = tasks._current_tasks.get(loop)
        return task.get_name() if task is not None else None
    except Exception:
        return None


class PoolStats:
    """Counters an executor's submit/run wrappers keep; read by the probe thread."""

    ids = itertools.count(1)

    def __init__(self, kind, created_at):
        self.id = "%s-%d" % (kind, next(PoolStats.ids))
        self.kind = kind
        self.created_at = created_at
        self.lock = threading.Lock()
        self.submitted = 0
        self.completed = 0
        self.running = 0
        self.saturated_since = None
        self.waits = collections.deque(maxlen=1024)  # (monotonic start, wait_ms)

    def on_submit(self, executor, now):
        with self.lock:
            self.submitted += 1
            if self.saturated_since is None and self.running >= getattr(executor, "_max_workers", 1):
                self.saturated_since = now

    def on_start(self, executor, submitted_at):
        now = monotonic()
        with self.lock:
            self.running += 1
            self.waits.append((now, (now - submitted_at) * 1000.0))
            queue = getattr(executor, "_work_queue", None)
            if queue is None or queue.qsize() == 0:
                self.saturated_since = None

    def on_finish(self):
        with self.lock:
            self.running -= 1
            self.completed += 1


def timed_call(stats, executor, submitted_at, fn):
    """Wraps a thread-pool job so its queue wait and run are counted."""

    def run(*args, **kwargs):
        stats.on_start(executor, submitted_at)
        try:
            return fn(*args, **kwargs)
        finally:
            stats.on_finish()

    return run


def _runtime_dirs():
    """Folders whose frames are the machinery, not the program: this probe, asyncio,
    concurrent.futures, threading."""
    dirs = [os.path.dirname(__file__)]
    for name in ("asyncio", "concurrent.futures"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(module.__file__))
    threading_file = getattr(threading, "__file__", None)
    return tuple(dirs), threading_file


def creation_site(skip, depth=4):
    """`file:line in func` of the program's frames from `skip` frames up, innermost last,
    machinery frames (the probe, asyncio, concurrent.futures) left out."""
    try:
        frame = sys._getframe(skip)
    except ValueError:
        return []
    dirs, threading_file = _runtime_dirs()
    out = []
    while frame is not None and len(out) < depth:
        filename = frame.f_code.co_filename
        if not filename.startswith(dirs) and filename != threading_file:
            out.append(_util.frame_line(frame))
        frame = frame.f_back
    out.reverse()
    return out


class Probe:
    """Everything the probe knows about this process."""

    def __init__(self, options, sites=None):
        self.options = options
        self.pid = os.getpid()
        self.closed = False
        self.errors = 0
        self.last_error = ""
        self.loops = {}  # id(loop) -> LoopState
        self.entries = {}  # thread ident -> frame that entered the loop running on it
        self.sites = sites if sites is not None else Sites()
        self.mp_pools = weakref.WeakSet()  # multiprocessing pools, to name one never closed
        self.executors = weakref.WeakSet()
        self.semaphores = weakref.WeakSet()
        self.task_sites = weakref.WeakKeyDictionary()  # task -> (site, created monotonic)
        # id(task) -> [task ref, waiter ref, point, changed_at, first_seen, walk_of() result]
        self.progress = {}
        self.progress_at = float("-inf")  # when track_progress last ran
        self.events = EventRing(options.max_events)
        self.started_at = monotonic()
        # Inherited (or, in a forked child, the parent's): not this process's to close.
        self.fds_at_start = _util.descriptors() or {}
        self.shutdown_started = False
        # uvloop reads asyncio._set_running_loop when imported: before the probe, it is blind;
        # and a loop already running on another thread has set itself running already. Then
        # the watchdog looks for loops through the tasks they run (see discover_loops).
        self.late_uvloop = "uvloop" in sys.modules
        self.discover = self.late_uvloop or _LOOP_MODULE in sys.modules
        self.missing = []
        self.server = None
        self.watchdog = None
        self.stop = threading.Event()

    def count_error(self):
        self.errors += 1
        try:
            self.last_error = repr(sys.exc_info()[1])[:200]
        except Exception:
            pass

    # --- loops ---------------------------------------------------------------------------
    def loop_state(self, loop):
        state = self.loops.get(id(loop))
        if state is None or state.loop_ref() is not loop:
            state = LoopState(self, loop)
            self.loops[id(loop)] = state
        return state

    def forget_dead_loops(self):
        for key, state in list(self.loops.items()):
            if state.loop_ref() is None:
                self.loops.pop(key, None)

    # --- watchdog thread -------------------------------------------------------------------
    def watchdog_main(self):
        # Often enough to look while a just-over-threshold stall is still going on.
        period = min(self.options.heartbeat_ms, self.options.stall_ms / 4.0) / 1000.0
        next_track = monotonic()
        while not self.stop.wait(period):
            try:
                now = monotonic()
                for state in list(self.loops.values()):
                    state.watch(now, self.options.stall_ms)
                if now >= next_track:
                    next_track = now + 1.0
                    if self.discover:
                        self.discover_loops()
                    # A collector's snapshot looks too: no second look within half a second.
                    if now - self.progress_at >= 0.5:
                        self.track_progress()
                    self.semaphore_tick(now)
                    self.forget_dead_loops()
            except Exception:
                self.count_error()

    # --- tasks ---------------------------------------------------------------------------
    def loop_tasks(self, state):
        loop = state.loop_ref()
        if loop is None:
            return []
        try:
            import asyncio

            for _ in range(20):
                try:
                    return list(asyncio.all_tasks(loop))
                except RuntimeError:
                    continue
        except Exception:
            self.count_error()
        return []

    def discover_loops(self):
        """Finds running loops the probe was not told about (see Probe.discover) through the
        tasks asyncio has registered, and has each adopt itself on its own thread."""
        tasks = sys.modules.get("asyncio.tasks")
        registry = getattr(tasks, "_scheduled_tasks", None)
        if registry is None:
            registry = getattr(tasks, "_all_tasks", None)  # before 3.12
        loops = {}
        for task in _util.copy_weak(registry if registry is not None else ()):
            loop = task.get_loop()
            if id(loop) not in self.loops and id(loop) not in loops:
                loops[id(loop)] = loop
        for loop in loops.values():
            try:
                if loop.is_running() and not loop.is_closed():
                    loop.call_soon_threadsafe(self._adopt, loop)
            except Exception:
                self.count_error()

    def _adopt(self, loop):
        """Runs on the loop's thread: the frames below the loop machinery entered it."""
        if self.closed or id(loop) in self.loops:
            return
        from . import _patches

        machinery = _runtime_dirs()[0]
        entry = sys._getframe(1)
        while entry is not None and entry.f_code.co_filename.startswith(machinery + (
                os.path.dirname(getattr(sys.modules.get("uvloop"), "__file__", "") or "/-"),)):
            entry = entry.f_back
        _patches.loop_started(self, loop, entry)

    def track_progress(self):
        """Notes, per task, whether its await point changed since the last look. Returns
        what it saw, for a snapshot to build on: [(LoopState, [(task, walk_of() result)])]."""
        now = monotonic()
        self.progress_at = now
        seen = set()
        walked = []
        for state in list(self.loops.values()):
            rows = []
            walked.append((state, rows))
            for task in self.loop_tasks(state):
                key = id(task)
                seen.add(key)
                waiter = getattr(task, "_fut_waiter", None)
                record = self.progress.get(key)
                if record is not None and record[0]() is not task:
                    record = None
                if (record is not None and waiter is not None and record[1] is not None
                        and record[1]() is waiter):
                    # Still waiting on the very future it waited on at the last look: it has
                    # not run since (a future that woke a task is done and is never waited on
                    # again), so its chain is the one walked then. Most tasks of a service
                    # that holds many (long polls, stuck requests) are walked once.
                    rows.append((task, record[5]))
                    continue
                walk = walk_of(task.get_coro())
                rows.append((task, walk))
                point = point_of(walk[0])
                if record is None:
                    self.progress[key] = [weakref.ref(task), weak_or_none(waiter), point, now,
                                          now, walk]
                    continue
                record[1] = weak_or_none(waiter)
                record[2] = point
                record[3] = now
                record[5] = walk
        # The watchdog and a collector's thread may both get here: pop, never del.
        for key in list(self.progress):
            if key not in seen:
                self.progress.pop(key, None)
        return walked

    def last_seen_chain(self, task):
        """Where the last progress look saw this task (its frames may be gone by now)."""
        record = self.progress.get(id(task))
        return point_lines(record[2]) if record is not None else []

    def task_report(self, state, walked, now):
        loop = state.loop_ref()
        running_name = current_task_name(loop)
        rows = {}
        for task, walk in walked:
            try:
                rows[task] = self.one_task(task, walk, state, now, running_name)
            except Exception:
                self.count_error()
        # A task awaiting other tasks makes progress when they do (gather, await task).
        by_name = {row["id"]: row for row in rows.values()}

        def effective(row, depth=0):
            own = row["since_progress_ms"]
            if depth > 16:
                return own
            best = own
            for name in row.get("_waits", ()):
                other = by_name.get(name)
                if other is not None and other is not row:
                    best = min(best, effective(other, depth + 1))
            return best

        for row in rows.values():
            row["since_progress_ms"] = effective(row)
        for row in rows.values():
            row.pop("_waits", None)
        return list(rows.values())

    def one_task(self, task, walk, state, now, running_name):
        name = task.get_name()
        coro = task.get_coro()
        waiter = getattr(task, "_fut_waiter", None)
        if task.done():
            status = "done"
        elif name == running_name:
            status = "running"
        elif waiter is None:
            status = "scheduled"
        else:
            status = "idle"
        record = self.progress.get(id(task))
        if record is not None and record[0]() is task:
            first_seen, changed = record[4], record[3]
        else:
            first_seen = changed = now
        site = self.task_sites.get(task)
        if site is not None:
            first_seen = min(first_seen, site[1])
        waits = awaited_tasks(waiter)
        since_progress = 0 if status != "idle" else int((now - changed) * 1000)
        row = {
            "id": name,
            "name": name,
            "state": status,
            "kind": getattr(coro, "__qualname__", type(coro).__name__),
            "await_chain": short_chain(walk[0]),  # the whole chain for some: see full_chains
            "spawn_location": site[0] if site is not None else None,
            "age_ms": int((now - first_seen) * 1000),
            "since_progress_ms": since_progress,
            "loop_id": state.id,
            "waiting_on": ", ".join(waits) if waits else None,
            "parked": parked_reason(walk) if status == "idle" else None,
            "_waits": waits,
            "_points": walk[0],
        }
        return row

    # --- snapshot ------------------------------------------------------------------------
    def snapshot(self, stacks=False):
        now = monotonic()
        data = {
            "runtime": "python",
            "runtime_version": "%d.%d.%d" % sys.version_info[:3],
            "probe_version": VERSION,
            "now_ms": wall_ms(),
            "loops": [],
            "tasks": [],
            "threads": [],
            "pools": [],
            "children": [],
            "events": [],
            "missing": list(self.missing),
            "dropped": {"events": 0, "tasks": 0},
        }
        for part in (self._loops_and_tasks, self._threads, self._pools, self._children):
            try:
                part(data, now, stacks)
            except Exception:
                self.count_error()
        data["events"] = self.events.snapshot()
        data["dropped"]["events"] = self.events.dropped
        if self.errors:
            data["missing"].append(
                "probe: %d internal error(s) caught, last %s" % (self.errors, self.last_error)
            )
        return data

    def _loops_and_tasks(self, data, now, stacks):
        try:
            walked = self.track_progress()
        except Exception:
            self.count_error()
            walked = []
        tasks = []
        for state, rows in walked:
            if state.loop_ref() is None:
                continue
            data["loops"].append(state.report(now))
            tasks.extend(self.task_report(state, rows, now))
        if not self.loops and _LOOP_MODULE not in sys.modules:
            data["missing"].append("loops, tasks: this process has not imported asyncio")
        elif not self.loops and self.late_uvloop:
            data["missing"].append(
                "loops: uvloop was imported before the probe loaded, so its loops are not seen; "
                "load the probe at startup (leakhound run, or LEAKHOUND_PROBE=1 with the hook "
                "on PYTHONPATH)")
        cap = self.options.max_tasks
        if len(tasks) > cap:
            # Keep the ones that have waited longest: those are what rules look at.
            tasks.sort(key=lambda row: row["since_progress_ms"], reverse=True)
            data["dropped"]["tasks"] = len(tasks) - cap
            tasks = tasks[:cap]
        full_chains(tasks, everyone=stacks)
        data["tasks"] = tasks

    def _threads(self, data, now, stacks):
        frames = sys._current_frames() if stacks else {}
        workers = executor_workers(self.executors)
        for thread in _util.copy_weak(threading.enumerate()):
            row = {
                "native_id": getattr(thread, "native_id", None) or 0,
                "ident": thread.ident or 0,
                "name": thread.name,
                "daemon": bool(thread.daemon),
                "stack": [],
            }
            pool = workers.get(thread) or worker_pool(thread)
            if pool is not None:
                row["pool"] = pool
            frame = frames.get(thread.ident)
            if frame is not None:
                row["stack"] = _util.format_stack(frame)
            data["threads"].append(row)

    def _pools(self, data, now, stacks):
        pools = []
        default_executors = set()
        for state in list(self.loops.values()):
            loop = state.loop_ref()
            executor = getattr(loop, "_default_executor", None) if loop is not None else None
            if executor is not None:
                default_executors.add(id(executor))
        for executor in _util.copy_weak(self.executors):
            # uvloop's is out of reach (a C attribute); it is the one uvloop names so.
            if getattr(executor, "_thread_name_prefix", None) == "uvloop":
                default_executors.add(id(executor))
            try:
                pools.append(executor_report(executor, id(executor) in default_executors, now))
            except Exception:
                self.count_error()
        semaphores = []
        for semaphore in _util.copy_weak(self.semaphores):
            try:
                row = semaphore_report(semaphore, now)
                if row is not None:
                    semaphores.append(row)
            except Exception:
                self.count_error()
        # Only the busiest semaphores: a program may make one per request.
        semaphores.sort(key=lambda row: (row["queued"], row["saturated_ms"]), reverse=True)
        data["pools"] = pools + semaphores[:64]

    def _children(self, data, now, stacks):
        process = sys.modules.get("multiprocessing.process")
        if process is None:
            return
        for child in _util.copy_weak(getattr(process, "_children", ())):
            popen = getattr(child, "_popen", None)
            if popen is None:
                continue
            # Read returncode, never poll(): polling would reap the child behind its back.
            code = getattr(popen, "returncode", None)
            data["children"].append(
                {
                    "pid": getattr(popen, "pid", 0) or 0,
                    "name": getattr(child, "_name", "") or "",
                    "daemon": bool(getattr(child, "_config", {}).get("daemon", False)),
                    "alive": code is None,
                    "exitcode": code,
                }
            )

    def semaphore_tick(self, now):
        for semaphore in _util.copy_weak(self.semaphores):
            info = semaphore.__dict__.get("_leakhound")
            if info is None:
                continue
            starving = semaphore_waiters(semaphore) > 0 and getattr(semaphore, "_value", 1) <= 0
            if starving and info[1] is None:
                info[1] = now
            elif not starving:
                info[1] = None

    # --- shutdown ------------------------------------------------------------------------
    def at_threading_shutdown(self):
        """Runs when the main thread finishes, before non-daemon threads are joined."""
        self.shutdown_started = True
        me = threading.current_thread()
        workers = executor_workers(self.executors)
        for thread in _util.copy_weak(threading.enumerate()):
            if thread is me or thread.daemon or thread is threading.main_thread():
                continue
            if thread.name.startswith("leakhound-probe"):
                continue
            if thread in workers or worker_pool(thread) is not None:
                continue
            self.events.add(
                "alive_at_shutdown",
                "thread %s" % thread.name,
                "non-daemon thread %r (tid %s) still running when the program ended; "
                "the interpreter waits for it: join it or make it a daemon"
                % (thread.name, getattr(thread, "native_id", "?")),
                _util.thread_stack(thread.ident),
            )
        for executor in _util.copy_weak(self.executors):
            stats = executor.__dict__.get("_leakhound")
            if stats is None or getattr(executor, "_shutdown", False):
                continue
            live = len(getattr(executor, "_threads", ()) or ())
            queue = getattr(executor, "_work_queue", None)
            queued = queue.qsize() if queue is not None else 0
            if live == 0 and queued == 0:
                continue
            self.events.add(
                "alive_at_shutdown",
                "executor %s" % executor_name(executor),
                "%s never shut down: %d worker(s) alive, %d running, %d queued at exit; "
                "use `with` or call shutdown()" % (
                    executor_name(executor), live, stats.running, queued),
                list(stats.created_at),
            )
        for pool in _util.copy_weak(self.mp_pools):
            if getattr(pool, "_state", None) != "RUN":
                continue  # closed or terminated: its workers are on their way out
            site = self.sites.lookup(pool) or []
            name = type(pool).__name__
            workers = len(getattr(pool, "_pool", ()) or ())
            self.events.add(
                "alive_at_shutdown",
                "pool multiprocessing.%s" % name,
                "multiprocessing.%s%s never closed: %d worker process(es) and its pipes alive "
                "at exit; use `with %s(...)` or call close() and join()" % (
                    name, " made at %s" % site[-1] if site else "", workers, name),
                site,
            )
        process = sys.modules.get("multiprocessing.process")
        for child in _util.copy_weak(getattr(process, "_children", ()) if process else ()):
            popen = getattr(child, "_popen", None)
            if popen is None or getattr(popen, "returncode", 0) is not None:
                continue
            if getattr(child, "_config", {}).get("daemon", False):
                continue
            self.events.add(
                "alive_at_shutdown",
                "process %s" % getattr(child, "_name", "?"),
                "multiprocessing child %s (pid %s) still running when the program ended; "
                "join() it" % (getattr(child, "_name", "?"), getattr(popen, "pid", "?")),
                [],
            )
        self.write_final()

    def note_open_at_exit(self):
        """Files, sockets and loops the interpreter's teardown would close: see _open_at_exit."""
        from . import _open_at_exit

        for subject, message, site in _open_at_exit.scan(self.options.socket_dir,
                                                         self.fds_at_start, self.sites):
            self.events.add("unclosed_resource", subject, message, site)

    def write_final(self):
        """`$LEAKHOUND_SOCKET_DIR/<pid>.final.json`: the last word, for `leakhound check`."""
        folder = self.options.socket_dir
        if not folder:
            return
        try:
            body = {
                "type": "final",
                "protocol": PROTOCOL,
                "pid": self.pid,
                "data": self.snapshot(stacks=False),
            }
            path = os.path.join(folder, "%d.final.json" % self.pid)
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(body, handle, separators=(",", ":"), default=str)
            os.replace(tmp, path)
        except Exception:
            self.count_error()


def weak_or_none(obj):
    if obj is None:
        return None
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


_CORO_TYPE = types.CoroutineType
_GEN_TYPE = types.GeneratorType
CHAIN_LIMIT = 32  # frames of an await chain sent, outermost first
# Which tasks are sent with their whole await chain (see full_chains).
FULL_CHAIN_AFTER_MS = 1000
FULL_CHAINS = 64


def coro_frames(coro, limit=64):
    """The frames down a coroutine's await chain (coroutines, generators, async generators),
    outermost first: the one walk a snapshot makes per task."""
    frames = []
    while coro is not None and len(frames) < limit:
        kind = type(coro)
        outer = coro
        if kind is _CORO_TYPE:
            frame, coro = coro.cr_frame, coro.cr_await
        elif kind is _GEN_TYPE:
            frame, coro = coro.gi_frame, coro.gi_yieldfrom
        else:
            frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                     or getattr(coro, "ag_frame", None))
            coro = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                    or getattr(coro, "ag_await", None))
        if frame is None:
            break
        if _NO_CO_QUALNAME and frame.f_code not in _qualnames:
            _remember_qualname(frame.f_code, outer)
        frames.append(frame)
    return frames


# Before 3.11 code objects have no co_qualname: a coroutine's __qualname__ ("Event.wait", not
# "wait") is learnt from the coroutines walked, once per code object.
_NO_CO_QUALNAME = not hasattr(coro_frames.__code__, "co_qualname")
_qualnames = {}


def _remember_qualname(code, coro):
    name = getattr(coro, "__qualname__", None)
    if name:
        if len(_qualnames) >= 20000:
            _qualnames.clear()
        _qualnames[code] = name


def full_chains(rows, everyone=False):
    """Gives the whole await chain to the tasks still longest (at least FULL_CHAIN_AFTER_MS
    without progress, at most FULL_CHAINS of them); the others keep short_chain's two frames.
    Under load most tasks are requests in flight: they moved within the last second, and no
    rule or view looks at them beyond where they are (the program's innermost own frame, the
    innermost one), while a 20-deep framework chain per request made most of a snapshot's
    cost and size on a loaded service. A thousand tasks stuck at one place are one finding
    with a few examples: the longest-still FULL_CHAINS are plenty. A snapshot asked for with
    stacks (`snapshot --stacks`) has every chain whole."""
    if everyone:
        still = rows
    else:
        still = [row for row in rows if row["since_progress_ms"] >= FULL_CHAIN_AFTER_MS]
    if len(still) > FULL_CHAINS and not everyone:
        still.sort(key=lambda row: row["since_progress_ms"], reverse=True)
        del still[FULL_CHAINS:]
    for row in still:
        row["await_chain"] = [code_line(code, line) for code, line in row["_points"][:CHAIN_LIMIT]]
    for row in rows:
        row.pop("_points", None)


def walk_of(coro):
    """One walk down a task's await chain, kept as plain data (no frame is held): the
    (code, line) of each frame, outermost first, and the module of the outermost frame."""
    frames = coro_frames(coro)
    if not frames:
        return (), ""
    return (tuple([(frame.f_code, frame.f_lineno) for frame in frames]),
            frames[0].f_globals.get("__name__") or "")


def point_of(points):
    """((code, line) of the task's own coroutine, (code, line) of the innermost await), or
    None: compared between looks to tell progress, and kept to say where a task was when it
    is destroyed (by then its frames are gone)."""
    return (points[0], points[-1]) if points else None


_lines = {}  # (code, line) -> "file:line in func": most tasks wait at a few places


def code_line(code, line):
    key = (code, line)
    text = _lines.get(key)
    if text is None:
        name = getattr(code, "co_qualname", None) or _qualnames.get(code) or code.co_name
        text = "%s:%d in %s" % (code.co_filename, line or 0, name)
        if len(_lines) >= 20000:
            _lines.clear()
        _lines[key] = text
    return text


def frame_text(frame):
    return code_line(frame.f_code, frame.f_lineno)


def short_chain(points):
    """The program's innermost own frame (if any) and the innermost frame, outermost first."""
    if not points:
        return []
    is_library = _util.is_library_file
    for index in range(len(points) - 1, -1, -1):
        if not is_library(points[index][0].co_filename):
            if index == len(points) - 1:
                break
            return [code_line(*points[index]), code_line(*points[-1])]
    return [code_line(*points[-1])]


def point_lines(point):
    """point_of's answer as await-chain lines, outermost first."""
    lines = []
    for code, line in point or ():
        text = code_line(code, line)
        if text not in lines:
            lines.append(text)
    return lines


_PARKED_CODES = None

# Modules whose coroutines are a server framework's own serving machinery: uvicorn's lifespan
# task (waiting on its queue for the shutdown message), its server and connection tasks;
# aiohttp's runner, server and per-connection handler (waiting for the next request of a
# kept-alive connection); hypercorn's and gunicorn's, websockets' keep-alive. A task of theirs
# waits for the outside world by design, unless the program's own code is what it waits in.
FRAMEWORK_MODULES = (
    "uvicorn.",
    "aiohttp.web",  # web_protocol, web_runner, web_server, web_app, web
    "hypercorn.",
    "gunicorn.",
    "websockets.",
)


# An ASGI lifespan task runs the program's own lifespan handler, which waits for the server's
# shutdown message by design for the life of the server: the program's frames in it are no sign
# of a stuck task.
LIFESPAN_MODULES = ("uvicorn.lifespan.", "hypercorn.asyncio.lifespan.", "hypercorn.trio.lifespan.")


def framework_task(walk):
    """Whether a task's chain (walk_of) is a known framework's serving machinery (by the module
    of its outermost frame), with no frame of the program's own anywhere down it (an ASGI
    lifespan task whatever it awaits)."""
    points, module = walk
    if not points:
        return False
    if not (module + ".").startswith(FRAMEWORK_MODULES):
        return False
    if (module + ".").startswith(LIFESPAN_MODULES):
        return True
    is_library = _util.is_library_file
    # From the inside out: the program's own frame, when there is one, is near the bottom.
    return all(is_library(code.co_filename) for code, _ in reversed(points))


def parked_reason(walk):
    """`timer` when the innermost await is asyncio.sleep (a wake-up is scheduled), `server`
    when it is a server's serve_forever, `framework` for a framework's own serving task (see
    framework_task): long waits by design, not stuck tasks. `walk`: walk_of()."""
    global _PARKED_CODES
    if _PARKED_CODES is None:
        codes = {}
        try:
            import asyncio.base_events as base_events
            import asyncio.tasks as tasks

            codes[tasks.sleep.__code__] = "timer"
            codes[base_events.Server.serve_forever.__code__] = "server"
        except Exception:
            pass
        _PARKED_CODES = codes
    points = walk[0]
    reason = _PARKED_CODES.get(points[-1][0]) if points else None
    if reason is None and framework_task(walk):
        reason = "framework"
    return reason


def await_chain(coro, limit=CHAIN_LIMIT):
    """`file:line in func` down the await chain, outermost first, innermost last."""
    return [frame_text(frame) for frame in coro_frames(coro, limit)]


def awaited_tasks(waiter):
    """Names of the tasks a waiter future stands for (a Task itself, or gather's children)."""
    if waiter is None:
        return []
    names = []
    get_name = getattr(waiter, "get_name", None)
    if get_name is not None:
        try:
            names.append(get_name())
        except Exception:
            pass
    for child in getattr(waiter, "_children", None) or ():
        get_name = getattr(child, "get_name", None)
        if get_name is not None and not child.done():
            names.append(get_name())
    return names


def executor_name(executor):
    prefix = getattr(executor, "_thread_name_prefix", "") or ""
    return prefix or type(executor).__name__


def executor_report(executor, is_default, now):
    stats = executor.__dict__.get("_leakhound")
    kind = "default_executor" if is_default else stats.kind if stats else "thread_pool"
    max_workers = getattr(executor, "_max_workers", 0) or 0
    row = {
        "id": stats.id if stats else "executor-%x" % id(executor),
        "kind": kind,
        "name": executor_name(executor),
        "max_workers": max_workers,
        "live_workers": 0,
        "busy_workers": 0,
        "queued": 0,
        "saturated_ms": 0,
        "queue_wait_p99_ms": None,
        "submitted": stats.submitted if stats else 0,
        "completed": stats.completed if stats else 0,
        "open": not getattr(executor, "_shutdown", False)
        and not getattr(executor, "_shutdown_thread", False),
        "created_at": stats.created_at[-1] if stats and stats.created_at else None,
    }
    if stats is not None and stats.kind == "process_pool":
        processes = getattr(executor, "_processes", None) or {}
        pending = list((getattr(executor, "_pending_work_items", None) or {}).values())
        # A future is marked running when it enters the call queue, a little before a worker
        # takes it: no more than the live workers can really be busy.
        running = sum(1 for item in pending if item.future.running())
        busy = min(running, len(processes))
        row["live_workers"] = len(processes)
        row["busy_workers"] = busy
        row["queued"] = max(0, len(pending) - busy)
        return row
    queue = getattr(executor, "_work_queue", None)
    queued = queue.qsize() if queue is not None else 0
    row["live_workers"] = len(getattr(executor, "_threads", ()) or ())
    row["queued"] = queued
    if stats is not None:
        row["busy_workers"] = max(0, stats.running)
        since = stats.saturated_since
        if since is not None and queued > 0:
            row["saturated_ms"] = int((now - since) * 1000)
        waits = sorted(w for (t, w) in list(stats.waits) if now - t <= 10.0)
        if waits:
            row["queue_wait_p99_ms"] = round(_util.percentile(waits, 0.99), 2)
    return row


def semaphore_waiters(semaphore):
    waiters = getattr(semaphore, "_waiters", None) or ()
    try:
        return sum(1 for w in list(waiters) if not w.done())
    except Exception:
        return 0


def semaphore_report(semaphore, now):
    info = semaphore.__dict__.get("_leakhound")
    if info is None:
        return None
    initial, starving_since, site, ident = info
    value = getattr(semaphore, "_value", 0)
    waiters = semaphore_waiters(semaphore)
    return {
        "id": ident,
        "kind": "semaphore",
        "name": type(semaphore).__name__,
        "max_workers": initial,
        "live_workers": max(0, initial - value),
        "busy_workers": max(0, initial - value),
        "queued": waiters,
        "saturated_ms": int((now - starving_since) * 1000) if starving_since is not None else 0,
        "queue_wait_p99_ms": None,
        "submitted": 0,
        "completed": 0,
        "open": True,
        "created_at": site,
    }


def executor_workers(executors):
    """{worker thread: pool id} of the executors the probe saw made."""
    out = {}
    for executor in _util.copy_weak(executors):
        stats = executor.__dict__.get("_leakhound")
        for thread in list(getattr(executor, "_threads", ()) or ()):
            out[thread] = stats.id if stats is not None else "thread_pool"
    return out


# Thread classes that are a pool's workers: anyio's (Starlette and FastAPI run sync endpoints
# and `run_in_threadpool` on them, up to 40, started as load comes and kept while busy).
POOL_THREAD_CLASSES = {("anyio._backends._asyncio", "WorkerThread"): "anyio_worker_threads"}


def worker_pool(thread):
    """The pool's kind for a worker thread of a pool the probe did not see made: a
    concurrent.futures worker of an executor made before the probe loaded (it runs
    concurrent.futures.thread._worker), or one of POOL_THREAD_CLASSES."""
    module = sys.modules.get("concurrent.futures.thread")
    worker = getattr(module, "_worker", None)
    if worker is not None and getattr(thread, "_target", None) is worker:
        return "thread_pool"
    cls = type(thread)
    return POOL_THREAD_CLASSES.get((cls.__module__, cls.__name__))
