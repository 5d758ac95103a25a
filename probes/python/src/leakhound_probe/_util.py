"""Small helpers shared by the probe's modules: clocks, frames, percentiles, settings."""

import os
import sys
import time

monotonic = time.monotonic


def wall_ms():
    return int(time.time() * 1000)


def descriptors():
    """{fd: readlink target} of this process's open descriptors above 2; None without /proc."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    out = {}
    for name in names:
        try:
            fd = int(name)
            if fd > 2:
                out[fd] = os.readlink("/proc/self/fd/" + name)
        except (OSError, ValueError):
            continue  # the descriptor listdir itself used, closed by now
    return out


def unix_sockets_under(folder):
    """readlink targets (`socket:[INODE]`) of the Unix sockets bound under `folder`: the probe's
    listener and the connections collectors made to it (an accepted socket shows the
    listener's path in /proc/net/unix). Empty without /proc."""
    out = set()
    if not folder:
        return out
    try:
        with open("/proc/self/net/unix") as table:
            next(table, None)
            for line in table:
                parts = line.split()
                if len(parts) >= 8 and parts[7].startswith(folder):
                    out.add("socket:[%s]" % parts[6])
    except OSError:
        pass
    return out


def env_int(name, default, lo=0, hi=10**9):
    """An integer setting from the environment; a bad value falls back to the default."""
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return max(lo, min(hi, value))


def env_flag(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def frame_line(frame, name=None):
    """`file:line in func`; `name` when the caller knows better (a coroutine's __qualname__,
    which Python before 3.11 has where its code objects have no co_qualname)."""
    code = frame.f_code
    name = name or getattr(code, "co_qualname", code.co_name)
    return "%s:%d in %s" % (code.co_filename, frame.f_lineno or 0, name)


def format_stack(frame, limit=40, stop=None):
    """A thread's stack as `file:line in func`, innermost frame last, at most `limit` deep;
    with `stop`, only the frames above that one (e.g. those an event loop is running)."""
    out = []
    while frame is not None and frame is not stop and len(out) < limit:
        out.append(frame_line(frame))
        frame = frame.f_back
    out.reverse()
    return out


def thread_stack(ident, limit=40, stop=None):
    try:
        frame = sys._current_frames().get(ident)
    except Exception:
        return []
    return format_stack(frame, limit, stop) if frame is not None else []


_STDLIB = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
_PROBE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_library = {}  # co_filename -> whether it is the standard library, an installed package or us


def is_library_file(filename):
    """Whether code from this file is the runtime or an installed package (the standard
    library, site-packages, frozen modules, this probe) rather than the program's own."""
    known = _library.get(filename)
    if known is None:
        known = (
            filename.startswith(_STDLIB)
            or filename.startswith(_PROBE)
            or filename.startswith("<frozen")
            or "/site-packages/" in filename
            or "/dist-packages/" in filename
        )
        if len(_library) < 20000:
            _library[filename] = known
    return known


def user_frames(frame, depth=3, stop=None):
    """(code, last instruction) of the first frame of the program's own (not the standard
    library's, an installed package's or the probe's) at or above `frame`, and of up to
    `depth - 1` of its callers, innermost first; empty when no frame is the program's. Frames
    from `stop` down are not looked at (the frame that entered a running event loop: what the
    loop does by itself, like accepting a connection, was not made by the line that ran it).
    Raw (the line number is worked out from the instruction only when asked, by site_lines),
    because this runs for every file and socket the program opens."""
    library = _library
    while frame is not None and frame is not stop:
        filename = frame.f_code.co_filename
        known = library.get(filename)
        if known is None:
            known = is_library_file(filename)
        if not known:
            break
        frame = frame.f_back
    else:
        return ()
    out = [(frame.f_code, frame.f_lasti)]
    while len(out) < depth:
        frame = frame.f_back
        if frame is None or frame is stop:
            break
        out.append((frame.f_code, frame.f_lasti))
    return out


def _line_of(code, lasti):
    """The line of the instruction at byte offset `lasti` (what frame.f_lineno would say)."""
    lines = getattr(code, "co_lines", None)
    if lines is not None:
        for start, end, line in lines():
            if start <= lasti < end and line is not None:
                return line
        return code.co_firstlineno
    import dis  # 3.9: no co_lines

    found = code.co_firstlineno
    for offset, line in dis.findlinestarts(code):
        if offset > lasti:
            break
        found = line
    return found


def site_lines(frames):
    """user_frames() as `file:line in func`, innermost last."""
    return ["%s:%d in %s" % (code.co_filename, _line_of(code, lasti),
                             getattr(code, "co_qualname", code.co_name))
            for code, lasti in reversed(frames)]


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return float(sorted_values[index])


def copy_weak(collection, retries=20):
    """A list copy of a WeakSet/dict another thread may be changing; empty if it never settles."""
    for _ in range(retries):
        try:
            return list(collection)
        except RuntimeError:
            continue
    return []
