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


def frame_line(frame):
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return "%s:%d in %s" % (code.co_filename, frame.f_lineno or 0, name)


def format_stack(frame, limit=40):
    """A thread's stack as `file:line in func`, innermost frame last, at most `limit` deep."""
    out = []
    while frame is not None and len(out) < limit:
        out.append(frame_line(frame))
        frame = frame.f_back
    out.reverse()
    return out


def thread_stack(ident, limit=40):
    try:
        frame = sys._current_frames().get(ident)
    except Exception:
        return []
    return format_stack(frame, limit) if frame is not None else []


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
