"""The probe server: a per-process Unix socket speaking `leakhound/1` (probes/PROTOCOL.md).

It runs on its own daemon threads, so it answers while the event loop is blocked; every
socket operation has a timeout; a line over the cap is refused without buffering past it.
"""

import json
import os
import socket
import struct
import sys
import threading

from ._probe import PROTOCOL, VERSION

REQUEST_LINE_CAP = 1 << 20  # 1 MiB, collector -> probe
IO_TIMEOUT = 5.0  # a collector that stops reading costs us at most this long per reply
IDLE_TIMEOUT = 60.0  # a connection with no request for this long is closed
MAX_CONNECTIONS = 4


def socket_path(pid, socket_dir=None):
    """Where this process listens: the path rules of PROTOCOL.md."""
    if socket_dir:
        return os.path.join(socket_dir, "%d.sock" % pid)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "leakhound", "%d.sock" % pid)
    return os.path.join("/tmp", "leakhound-%d" % os.getuid(), "%d.sock" % pid)


def _private_folder(folder):
    """Creates the folder 0700, or checks an existing one is ours and private enough."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as err:
        return "cannot create %s: %s" % (folder, err.strerror)
    st = os.stat(folder)
    if st.st_uid != os.getuid():
        return "%s belongs to uid %d, not to us" % (folder, st.st_uid)
    if st.st_mode & 0o022:
        try:
            os.chmod(folder, 0o700)
        except OSError as err:
            return "%s is writable by others and cannot be fixed: %s" % (folder, err.strerror)
    return None


def peer_uid(conn):
    try:
        fmt = "3i"
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
        return struct.unpack(fmt, creds)[1]
    except (OSError, AttributeError):
        return None


class Server:
    def __init__(self, probe, path):
        self.probe = probe
        self.path = path
        self.listener = None
        self.thread = None
        self.active = 0
        self.lock = threading.Lock()
        self.snapshots_served = 0
        self.stop = threading.Event()

    def start(self):
        """Binds and starts the accept thread; returns a reason string when it cannot."""
        problem = _private_folder(os.path.dirname(self.path))
        if problem:
            return problem
        if len(self.path.encode()) >= 108:
            return "socket path too long for a Unix socket: %s (set LEAKHOUND_SOCKET_DIR)" % self.path
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)  # a stale socket of a dead process with our pid
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
            os.chmod(self.path, 0o600)
            listener.listen(8)
            listener.settimeout(0.5)
        except OSError as err:
            return "cannot listen on %s: %s" % (self.path, err.strerror or err)
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
        with self.lock:
            busy = self.active >= MAX_CONNECTIONS
            if not busy:
                self.active += 1
        if busy:
            _send(conn, {"type": "error", "id": None, "error": "too many collectors connected"})
            _close(conn)
            return
        worker = threading.Thread(
            target=self._serve, args=(conn,), name="leakhound-probe-conn", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:  # interpreter shutting down
            with self.lock:
                self.active -= 1
            _close(conn)

    def _serve(self, conn):
        try:
            self._conversation(conn)
        except Exception:
            pass
        finally:
            _close(conn)
            with self.lock:
                self.active -= 1

    def _conversation(self, conn):
        if not _send(conn, self.hello()):
            return
        reader = LineReader(conn, REQUEST_LINE_CAP)
        while not self.stop.is_set():
            status, line = reader.next_line()
            if status == "eof":
                return
            if status == "too_long":
                _send(
                    conn,
                    {
                        "type": "error",
                        "id": None,
                        "error": "request line over the %d-byte cap; closing" % REQUEST_LINE_CAP,
                    },
                )
                return
            if not line.strip():
                continue
            reply, keep = self.handle(line)
            if reply is not None and not _send(conn, reply):
                return
            if not keep:
                return

    def hello(self):
        return {
            "type": "hello",
            "protocol": PROTOCOL,
            "runtime": "python",
            "runtime_version": "%d.%d.%d" % sys.version_info[:3],
            "probe_version": VERSION,
            "pid": self.probe.pid,
            "capabilities": ["tasks", "loops", "threads", "pools", "events", "stacks", "children"],
        }

    def handle(self, line):
        """One request line -> (reply or None, keep the connection open)."""
        try:
            message = json.loads(line)
        except ValueError:
            return {"type": "error", "id": None, "error": "not JSON: %r" % line[:80]}, True
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
            data = self.probe.snapshot(stacks=bool(message.get("stacks", False)))
            self.snapshots_served += 1
            return {"type": "snapshot", "id": ident, "data": data}, True
        return {"type": "error", "id": ident, "error": "unknown request type %r" % (kind,)}, True


class LineReader:
    """Reads `\\n`-terminated lines up to a cap; never holds more than the cap in memory."""

    def __init__(self, conn, cap):
        self.conn = conn
        self.cap = cap
        self.buffer = b""

    def next_line(self):
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line, self.buffer = self.buffer[:newline], self.buffer[newline + 1:]
                if len(line) > self.cap:
                    return "too_long", None
                return "line", line.decode("utf-8", "replace")
            if len(self.buffer) > self.cap:
                return "too_long", None
            try:
                self.conn.settimeout(IDLE_TIMEOUT if not self.buffer else IO_TIMEOUT)
                chunk = self.conn.recv(65536)
            except (socket.timeout, OSError):
                return "eof", None
            if not chunk:
                return "eof", None
            self.buffer += chunk


def _send(conn, message):
    try:
        data = (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()
        conn.settimeout(IO_TIMEOUT)
        conn.sendall(data)
        return True
    except (OSError, ValueError, TypeError):
        return False


def _close(conn):
    try:
        conn.close()
    except OSError:
        pass
