"""The probe server: a per-process Unix socket speaking `leakhound/1` (probes/PROTOCOL.md).

It runs on its own daemon threads, so it answers while the event loop is blocked; every
socket operation has a timeout; a line over the cap is refused without buffering past it.
Nothing a collector does can hold it for long: a request line must arrive whole within
LINE_DEADLINE, a full house of idle or slow connections makes room for a newcomer, and
snapshots are rate-limited per connection (and shared between collectors asking at once).
"""

import errno
import json
import os
import socket
import stat
import struct
import sys
import tempfile
import threading
import time

from ._probe import PROTOCOL, VERSION
from ._util import monotonic

thread_time = time.thread_time  # CPU time of the calling thread (a snapshot's cost)

REQUEST_LINE_CAP = 1 << 20  # 1 MiB, collector -> probe
IO_TIMEOUT = 5.0  # a collector that stops reading costs us at most this long per reply
LINE_DEADLINE = 2.0  # a request line must be complete this long after its first byte
IDLE_TIMEOUT = 60.0  # a connection with no request for this long is closed
MAX_CONNECTIONS = 4
SNAPSHOT_RATE = 10  # snapshots per second per connection (and a burst of as many)
REQUEST_RATE = 50  # requests of any kind per second per connection; past it, reading waits
SNAPSHOT_REUSE = 0.2  # a snapshot this recent is sent again to another collector asking
# Building a snapshot holds the GIL, so its CPU is the host's: it grows with the tasks alive
# (~15 ms for 1,000 request tasks beside a busy loop). At most this share of one core goes to
# it, by the CPU the building thread used (not its wall time, which waiting for the GIL behind a
# busy loop stretches 2-5x); until then the last one is sent again. 3%: under issue #11's 5%
# budget for sampling at 1 Hz, with room for the garbage collections its allocations bring.
SNAPSHOT_DUTY = 0.03
REPLY_STUCK = 1.0  # a reply not taken for this long may be cut to make room for a newcomer
STALE_MARGIN = 2.0  # seconds of clock slack when telling a reused pid from its file's maker
FALLBACK_MIN_AGE = 60.0  # a fallback folder unchanged this long may be swept when empty of life


def socket_path(pid, socket_dir=None):
    """Where this process listens: the path rules of PROTOCOL.md."""
    if socket_dir:
        return os.path.join(socket_dir, "%d.sock" % pid)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "leakhound", "%d.sock" % pid)
    return os.path.join("/tmp", "leakhound-%d" % os.getuid(), "%d.sock" % pid)


# --- the socket folder ----------------------------------------------------------------------


def open_private_folder(folder, create=True):
    """(fd, None) for a folder that is ours, private (0700) and not a symbolic link, created
    when missing; else (None, why not). The checks are made on the opened folder itself
    (O_NOFOLLOW), so a link or a folder swapped in after a look is never used."""
    created = False
    try:
        parent = os.path.dirname(folder)
        if create and parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        if create:
            os.mkdir(folder, 0o700)
            created = True
    except FileExistsError:
        pass
    except OSError as err:
        return None, "cannot create %s: %s" % (folder, err.strerror)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder, flags)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(folder):
            return None, "%s is a symbolic link; not followed" % folder
        return None, "cannot open %s: %s" % (folder, err.strerror)
    try:
        st = os.fstat(fd)
        if created and st.st_uid == os.getuid():
            os.fchmod(fd, 0o700)  # whatever the umask made of it: we made it
            st = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        return None, "cannot inspect %s: %s" % (folder, err.strerror)
    if st.st_uid != os.getuid():
        problem = "%s belongs to uid %d, not to this process's uid %d" % (
            folder, st.st_uid, os.getuid())
    elif stat.S_IMODE(st.st_mode) & 0o077:
        problem = "%s has mode %04o, not private (0700)" % (folder, stat.S_IMODE(st.st_mode))
    else:
        return fd, None
    os.close(fd)
    return None, problem


def fallback_folder():
    """A fresh private folder of our own: /tmp/leakhound-<uid>-<random> (PROTOCOL.md). Those
    of earlier probes that were killed (nothing in them but their stale files) go first."""
    prefix = "leakhound-%d-" % os.getuid()
    sweep_fallback_folders("/tmp", prefix)
    try:
        return tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    except OSError:
        return tempfile.mkdtemp(prefix=prefix)


def sweep_fallback_folders(parent, prefix, min_age=FALLBACK_MIN_AGE):
    """Removes the `prefix*` folders of ours in `parent` that hold nothing but stale files of
    gone processes (and have not changed for `min_age` s: one just made is about to be
    used). Returns how many went."""
    removed = 0
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(parent, name)
        fd, problem = open_private_folder(path, create=False)
        if problem:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < min_age:
                continue
            sweep_stale(fd, os.getpid())
        finally:
            os.close(fd)
        try:
            os.rmdir(path)  # only when empty; /tmp is sticky: only we can remove our folder
            removed += 1
        except OSError:
            pass
    return removed


def _same_file(a, b):
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def sweep_stale(folder_fd, own_pid):
    """Removes `<pid>.sock` (and `.<pid>.sock.new`, half-written `<pid>.final.json.tmp`) files
    in the folder left by processes that are gone: only files of our uid and of the right
    kind, never our own, and a live pid counts as gone only when that process started after
    the file was made (the pid was reused). `<pid>.final.json` stays: `leakhound check` reads
    it after the run. Returns how many files went."""
    removed = 0
    try:
        names = os.listdir(folder_fd)
    except OSError:
        return 0
    for name in names:
        if name.startswith(".") and name.endswith(".sock.new"):
            kind, stem = stat.S_ISSOCK, name[1:-9]  # bound, not yet renamed, by a probe
        elif name.endswith(".sock"):
            kind, stem = stat.S_ISSOCK, name[:-5]
        elif name.endswith(".final.json.tmp"):
            kind, stem = stat.S_ISREG, name[:-15]
        else:
            continue
        if not stem.isdigit() or int(stem) == own_pid:
            continue
        try:
            st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != os.getuid() or not kind(st.st_mode):
            continue
        if not pid_gone_since(int(stem), st.st_mtime):
            continue
        try:
            os.unlink(name, dir_fd=folder_fd)
            removed += 1
        except OSError:
            pass
    return removed


def pid_gone_since(pid, made_at):
    """True when no process `pid` exists that could have made a file at `made_at` (epoch s)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another uid: it may still be a reuse of the pid
    except OSError:
        return False
    started = process_start(pid)
    return started is not None and started > made_at + STALE_MARGIN


_boot_time = []


def process_start(pid):
    """When `pid` started (epoch seconds), from /proc; None when unknown."""
    try:
        if not _boot_time:
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("btime "):
                        _boot_time.append(int(line.split()[1]))
                        break
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return _boot_time[0] + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def peer_uid(conn):
    try:
        fmt = "3i"
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
        return struct.unpack(fmt, creds)[1]
    except (OSError, AttributeError):
        return None


class Bucket:
    """At most `rate` a second, in bursts of as many."""

    __slots__ = ("rate", "tokens", "refilled")

    def __init__(self, rate, now):
        self.rate = float(rate)
        self.tokens = float(rate)
        self.refilled = now

    def wait_for_one(self, now):
        """0 and one taken, or the seconds until one is there (nothing taken)."""
        self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0
        return 0.0


class Conn:
    """One collector's connection, as the accept thread sees it when choosing whom to evict."""

    __slots__ = ("sock", "since", "requests", "replying", "snapshots", "pace")

    def __init__(self, sock, now):
        self.sock = sock
        self.since = now  # when it last completed a request (or connected)
        self.requests = 0
        self.replying = False
        self.snapshots = Bucket(SNAPSHOT_RATE, now)
        self.pace = Bucket(REQUEST_RATE, now)


class Server:
    def __init__(self, probe, path):
        self.probe = probe
        self.path = path
        self.note = None  # where and why this socket is not where a collector looks first
        self.listener = None
        self.thread = None
        self.lock = threading.Lock()
        self.conns = []  # Conn, the connections being served
        self.snapshots_served = 0
        self.cached = {}  # stacks flag -> (taken at (monotonic), cost in s, `data` JSON text)
        self.swept = 0
        self.stop = threading.Event()

    def start(self):
        """Binds and starts the accept thread; returns a reason string when it cannot."""
        folder, name = os.path.split(self.path)
        # Bound under a hidden name, then renamed: `<pid>.sock` appears only once it listens
        # (bind and listen are two calls with the GIL taken back between them, and a
        # collector that sees the file connects at once). The rename also replaces a stale
        # socket of a dead process with our pid.
        hidden = "." + name + ".new"
        if len(os.path.join(folder, hidden).encode()) >= 108:
            return "socket path too long for a Unix socket: %s (set LEAKHOUND_SOCKET_DIR)" % self.path
        folder_fd, problem = open_private_folder(folder)
        if problem:
            return problem
        listener = None
        try:
            self.swept = sweep_stale(folder_fd, self.probe.pid)
            try:
                os.unlink(hidden, dir_fd=folder_fd)
            except FileNotFoundError:
                pass
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(os.path.join(folder, hidden))
            listener.listen(8)
            listener.settimeout(0.5)
            # Bound by path: make sure the path still led into the folder we checked (0700:
            # no one else reaches the socket).
            if not _same_file(os.lstat(folder), os.fstat(folder_fd)):
                listener.close()
                return "%s was replaced while the probe started; not listening there" % folder
            os.chmod(hidden, 0o600, dir_fd=folder_fd)
            os.rename(hidden, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except OSError as err:
            if listener is not None:
                listener.close()
            return "cannot listen on %s: %s" % (self.path, err.strerror or err)
        finally:
            os.close(folder_fd)
        self.listener = listener
        self.thread = threading.Thread(
            target=self._accept_loop, name="leakhound-probe-server", daemon=True
        )
        self.thread.start()
        return None

    def close(self, unlink=True):
        """Stops serving; a forked child passes unlink=False: the file is its parent's."""
        self.stop.set()
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.close()
            except OSError:
                pass
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _accept_loop(self):
        while not self.stop.is_set():
            listener = self.listener
            if listener is None:
                return
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stop.is_set():
                    return
                continue
            try:
                self._admit(conn)
            except Exception:
                self.probe.count_error()
                _close(conn)

    def _admit(self, conn):
        uid = peer_uid(conn)
        if uid is None or uid not in (os.getuid(), 0):
            _close(conn)
            return
        conn.settimeout(IO_TIMEOUT)
        state = Conn(conn, monotonic())
        # Every slot busy replying: wait (a little) for one to finish or to count as stuck,
        # rather than turning the newcomer away at once. Others queue in the backlog meanwhile.
        give_up = monotonic() + REPLY_STUCK + 0.2
        while True:
            now = monotonic()
            with self.lock:
                if len(self.conns) >= MAX_CONNECTIONS:
                    victim = self._victim(now)
                    if victim is not None:
                        self.conns.remove(victim)
                        _hang_up(victim.sock)  # its thread wakes up, finds it closed and ends
                busy = len(self.conns) >= MAX_CONNECTIONS
                if not busy:
                    state.since = now
                    self.conns.append(state)
            if not busy or now >= give_up or self.stop.wait(0.05):
                break
        if busy:
            _send(conn, {"type": "error", "id": None, "error": "too many collectors connected"})
            _close(conn)
            return
        worker = threading.Thread(
            target=self._serve, args=(state,), name="leakhound-probe-conn", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:  # interpreter shutting down
            self._forget(state)
            _close(conn)

    def _victim(self, now):
        """The connection to drop for a newcomer when every slot is taken: one that never
        completed a request first, then the longest without one; a connection mid-reply only
        when its collector has not taken the reply for REPLY_STUCK. None: all are busy."""
        candidates = [c for c in self.conns if not c.replying or now - c.since >= REPLY_STUCK]
        if not candidates:
            return None
        return min(candidates, key=lambda c: (c.requests > 0, c.since))

    def _forget(self, state):
        with self.lock:
            if state in self.conns:
                self.conns.remove(state)

    def _serve(self, state):
        try:
            self._conversation(state)
        except Exception:
            pass
        finally:
            _close(state.sock)
            self._forget(state)

    def _conversation(self, state):
        conn = state.sock
        if not _send(conn, self.hello()):
            return
        reader = LineReader(conn, REQUEST_LINE_CAP)
        while not self.stop.is_set():
            status, line = reader.next_line()
            if status == "eof":
                return
            if status in ("too_long", "slow"):
                if status == "too_long":
                    why = "request line over the %d-byte cap; closing" % REQUEST_LINE_CAP
                else:
                    why = "request line not complete within %g s; closing" % LINE_DEADLINE
                _send(conn, {"type": "error", "id": None, "error": why})
                return
            if not line.strip():
                continue
            # A collector sending faster than REQUEST_RATE waits (only its own thread does):
            # parsing and answering a flood would take the host's GIL.
            wait = state.pace.wait_for_one(monotonic())
            while wait > 0:
                if self.stop.wait(wait):
                    return
                wait = state.pace.wait_for_one(monotonic())
            with self.lock:
                state.since = monotonic()
                state.requests += 1
                state.replying = True
            reply, keep = self.handle(line, state)
            if reply is not None and not _send(conn, reply):
                return
            with self.lock:
                state.replying = False
            if not keep:
                return

    def hello(self):
        hello = {
            "type": "hello",
            "protocol": PROTOCOL,
            "runtime": "python",
            "runtime_version": "%d.%d.%d" % sys.version_info[:3],
            "probe_version": VERSION,
            "pid": self.probe.pid,
            "capabilities": ["tasks", "loops", "threads", "pools", "events", "stacks", "children"],
        }
        if self.note:
            hello["note"] = self.note
        return hello

    def handle(self, line, state=None):
        """One request line -> (reply or None, keep the connection open). A reply is a dict,
        or bytes already encoded (a snapshot)."""
        try:
            message = json.loads(line)
        except ValueError:
            return {"type": "error", "id": None, "error": "not JSON: %r" % line[:80]}, True
        except RecursionError:
            return {"type": "error", "id": None, "error": "request nested too deeply"}, True
        if not isinstance(message, dict):
            return {"type": "error", "id": None, "error": "a message must be a JSON object"}, True
        kind = message.get("type")
        ident = message.get("id")
        if not isinstance(ident, (int, float)) or isinstance(ident, bool):
            ident = None
        if kind == "hello":
            protocol = str(message.get("protocol", ""))
            if protocol.split("/")[0:1] != ["leakhound"] or protocol.split("/")[-1:] != ["1"]:
                return {
                    "type": "error",
                    "id": ident,
                    "error": "protocol %r not spoken here: this probe speaks %s" % (protocol, PROTOCOL),
                }, False
            return None, True
        if kind == "ping":
            return {"type": "pong", "id": ident}, True
        if kind == "snapshot":
            if state is not None and state.snapshots.wait_for_one(monotonic()) > 0:
                return {
                    "type": "error",
                    "id": ident,
                    "error": "rate limited: at most %d snapshots per second per connection"
                    % SNAPSHOT_RATE,
                }, True
            data = self.snapshot_json(bool(message.get("stacks", False)))
            return ('{"type":"snapshot","id":%s,"data":%s}\n' % (json.dumps(ident), data)).encode(), True
        return {"type": "error", "id": ident, "error": "unknown request type %r" % (kind,)}, True

    def snapshot_json(self, stacks):
        """The snapshot's JSON text: taken afresh, or the last one when it is recent: less
        than SNAPSHOT_REUSE old, or than its own CPU cost / SNAPSHOT_DUTY (so any number of
        collectors, asking as fast as they like, cost the host at most that share of a core).
        Never reused once shutdown began: a collector asking then wants the last word."""
        now = monotonic()
        with self.lock:
            cached = self.cached.get(stacks)
        if cached is not None and not self.probe.shutdown_started:
            taken_at, cost, text = cached
            if now - taken_at < max(SNAPSHOT_REUSE, cost / SNAPSHOT_DUTY):
                return text
        cpu = thread_time()
        text = json.dumps(self.probe.snapshot(stacks=stacks), separators=(",", ":"), default=str)
        cost = thread_time() - cpu
        done = monotonic()
        with self.lock:
            self.cached[stacks] = (done, cost, text)
        self.snapshots_served += 1
        return text


class LineReader:
    """Reads `\\n`-terminated lines up to a cap; never holds more than the cap in memory, and
    never waits more than LINE_DEADLINE for the rest of a line once its first byte came."""

    def __init__(self, conn, cap):
        self.conn = conn
        self.cap = cap
        self.buffer = b""
        self.started = None  # when the line now in the buffer began

    def next_line(self):
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line, self.buffer = self.buffer[:newline], self.buffer[newline + 1:]
                self.started = monotonic() if self.buffer else None
                if len(line) > self.cap:
                    return "too_long", None
                return "line", line.decode("utf-8", "replace")
            if len(self.buffer) > self.cap:
                return "too_long", None
            if self.buffer:
                timeout = self.started + LINE_DEADLINE - monotonic()
                if timeout <= 0:
                    return "slow", None
            else:
                timeout = IDLE_TIMEOUT
            try:
                self.conn.settimeout(timeout)
                chunk = self.conn.recv(65536)
            except socket.timeout:
                return ("slow", None) if self.buffer else ("eof", None)
            except OSError:
                return "eof", None
            if not chunk:
                return "eof", None
            if not self.buffer:
                self.started = monotonic()
            self.buffer += chunk


def _send(conn, message):
    try:
        if isinstance(message, bytes):
            data = message
        else:
            data = (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()
        conn.settimeout(IO_TIMEOUT)
        conn.sendall(data)
        return True
    except (OSError, ValueError, TypeError):
        return False


def _hang_up(conn):
    """Ends a connection another thread is serving: shutdown wakes its blocked recv/send
    (closing the descriptor under it could hand the number to someone else's open)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(conn):
    try:
        conn.close()
    except OSError:
        pass
