"""Files, sockets and event loops the program left open when it ended.

An object held to the end (a module global `LOG = open(...)`, a client socket in a global)
is closed by the interpreter's teardown, after the last atexit hook: /proc at the exit shows
the descriptor already closed, and a ResourceWarning raised then reaches no one. So the probe
looks once, from its own atexit hook (registered first, so it runs after the program's), at
the objects still alive and open.
"""

import _io
import gc
import socket
import sys

from . import _util

# One scan reports at most this many objects: the point is to show the leak, not to list
# ten thousand sockets of one pool.
LIMIT = 50
# Above this many allocated blocks the list gc.get_objects() builds would cost the exiting
# program more memory than it is worth (8 bytes an object); then only module globals are looked at.
MAX_BLOCKS_FOR_GC_SCAN = 5_000_000


def scan(socket_dir, inherited=None, sites=None):
    """[(subject, message, site)] for every open file, socket or event loop still alive.

    socket_dir: leakhound's own probe sockets live there and are never reported.
    inherited: {fd: target} open when the probe started (or at fork), never reported.
    sites: the probe's creation sites (see _sites), to say where each was opened.
    """
    inherited = inherited or {}
    now = _util.descriptors()
    if now is not None:
        mine = {fd for fd, target in now.items() if inherited.get(fd) != target}
        if any(now[fd].startswith("socket:[") for fd in mine):
            ours = _util.unix_sockets_under(socket_dir)
            mine = {fd for fd in mine if now[fd] not in ours}
        if not mine:
            return []  # the usual case, found without walking the heap
    else:
        mine = None  # no /proc: judge by the objects alone (and probe sockets by their path)
    asyncio = sys.modules.get("asyncio")
    loop_type = getattr(getattr(asyncio, "base_events", None), "BaseEventLoop", None)
    files = {}  # fd -> (kind, object): the outermost wrapper of each descriptor
    loops = []
    closed_later = _closed_by_logging()
    # isinstance against io's ABCs costs ~1 us an object; classify each type once instead.
    kinds = {}
    for obj in _candidates():
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = _kind_of(cls, loop_type)
        if kind == _OTHER:
            continue
        if kind == _LOOP:
            loops.append(obj)
            continue
        fd = _open_fd(obj)
        if fd is None or fd <= 2 or (mine is not None and fd not in mine):
            continue
        if fd not in files or kind < files[fd][0]:
            files[fd] = (kind, obj)

    found = []
    for loop in loops:
        try:
            if loop.is_closed() or loop.is_running():
                continue
        except Exception:
            continue
        wakeup = _open_fd(getattr(loop, "_ssock", None))
        if mine is not None and wakeup is not None and wakeup not in mine:
            continue  # a forked child's copy of its parent's loop
        # Its self-pipe sockets are the loop's, not leaks of their own.
        for part in ("_ssock", "_csock"):
            files.pop(_open_fd(getattr(loop, part, None)), None)
        found.append((loop, "event loop", "%s was never closed: call loop.close() or use "
                      "asyncio.run()" % type(loop).__name__))
    for fd in sorted(files):
        obj = files[fd][1]
        if obj in (sys.stdin, sys.stdout, sys.stderr) or id(obj) in closed_later:
            continue
        if isinstance(obj, socket.socket):
            described = _describe_socket(obj, fd, socket_dir)
            if described is None:
                continue
            found.append((obj, "socket", described))
        else:
            found.append((obj, "file", _describe_file(obj, fd)))
        if len(found) >= LIMIT:
            break

    owners = _module_owners({id(obj) for obj, _, _ in found})
    out = []
    for obj, subject, message in found:
        owner = owners.get(id(obj))
        site = (sites.lookup(obj) if sites is not None else None) or _allocation_site(obj)
        if owner is not None:
            site.append("module global %s (still open at exit)" % owner)
        elif not site:
            site = ["still open at exit (PYTHONTRACEMALLOC=5 gives where it was opened)"]
        out.append((subject, message, site))
    return out


# Kinds, in the order a descriptor's wrappers are preferred: the outermost names it best.
_SOCKET_OR_TEXT, _BUFFERED, _RAW, _LOOP, _OTHER = range(5)


def _kind_of(cls, loop_type):
    # io's concrete C bases, not its ABCs: every io object derives from them, and an ABC's
    # __subclasscheck__ crashes Python 3.9 on some types (issubclass(unicodedata.UCD,
    # io.IOBase) is a segmentation fault there), which took the exiting program down.
    if issubclass(cls, socket.socket):
        return _SOCKET_OR_TEXT
    if issubclass(cls, _io._IOBase):
        if issubclass(cls, _io._TextIOBase):
            return _SOCKET_OR_TEXT
        return _BUFFERED if issubclass(cls, _io._BufferedIOBase) else _RAW
    if loop_type is not None and issubclass(cls, loop_type):
        return _LOOP
    return _OTHER


def _candidates():
    if sys.getallocatedblocks() <= MAX_BLOCKS_FOR_GC_SCAN:
        return gc.get_objects()
    namespaces = [getattr(module, "__dict__", None) for module in list(sys.modules.values())]
    return [value for ns in namespaces if isinstance(ns, dict) for value in list(ns.values())]


def _closed_by_logging():
    """ids of the streams logging's own atexit hook (logging.shutdown) closes: when the probe
    was installed after logging was imported, that hook runs after ours."""
    logging = sys.modules.get("logging")
    ids = set()
    for ref in list(getattr(logging, "_handlerList", ()) or ()):
        try:
            stream = getattr(ref(), "stream", None)
        except Exception:
            continue
        if stream is not None:
            ids.add(id(stream))
    return ids


def _open_fd(obj):
    if obj is None:
        return None
    try:
        if getattr(obj, "closed", False):
            return None
        fd = obj.fileno()
    except Exception:  # detached, closed underneath, or not backed by a descriptor
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _describe_file(obj, fd):
    name = getattr(obj, "name", "?")
    mode = getattr(obj, "mode", "")
    mode = ", mode %r" % mode if isinstance(mode, str) and mode else ""
    return ("file %r (fd %d%s) was still open when the program ended; only the "
            "interpreter's teardown closes it" % (name, fd, mode))


def _describe_socket(sock, fd, socket_dir):
    try:
        local = sock.getsockname()
    except OSError:
        local = "?"
    try:
        remote = sock.getpeername()
    except OSError:
        remote = None
    if sock.family == getattr(socket, "AF_UNIX", None) and socket_dir and isinstance(
            local, str) and local.startswith(socket_dir):
        return None  # the probe's own listener and connections
    kind = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram"}.get(sock.type, "")
    peer = " -> %s" % (_address(remote),) if remote else ""
    return ("%s socket %s%s (fd %d) was still open when the program ended; only the "
            "interpreter's teardown closes it" % (kind, _address(local), peer, fd)).lstrip()


def _address(addr):
    if isinstance(addr, tuple) and len(addr) >= 2:
        return "%s:%s" % (addr[0], addr[1])
    return repr(addr) if addr else "(unnamed)"


def _module_owners(wanted):
    """id(object) -> 'module.NAME' for objects a module global holds."""
    owners = {}
    if not wanted:
        return owners
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or name.startswith("leakhound_probe"):
            continue
        for key, value in list(namespace.items()):
            if id(value) in wanted and id(value) not in owners:
                owners[id(value)] = "%s.%s" % (name, key)
    return owners


def _allocation_site(obj):
    """Oldest frame first, as the rules expect; empty unless tracemalloc is tracing."""
    tracemalloc = sys.modules.get("tracemalloc")
    if tracemalloc is None or not tracemalloc.is_tracing():
        return []
    try:
        trace = tracemalloc.get_object_traceback(obj)
    except Exception:
        return []
    return ["%s:%d" % (f.filename, f.lineno) for f in trace] if trace is not None else []
