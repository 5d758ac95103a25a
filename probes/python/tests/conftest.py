"""Helpers shared by the probe's tests: start a real Python program with the probe loaded,
talk to its socket, run the leakhound binary against it."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(TESTS), "src")
HOOK = os.path.join(SRC, "leakhound_probe", "_hook")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(TESTS)))


# How a thread's stack names the loop's iteration: frames are named by their code object, which
# carries the qualified name only from Python 3.11.
RUN_ONCE = "in BaseEventLoop._run_once" if sys.version_info >= (3, 11) else "in _run_once"


def leakhound_bin():
    path = os.environ.get("LEAKHOUND_BIN") or os.path.join(REPO, "target", "debug", "leakhound")
    if not os.path.exists(path):
        pytest.skip("leakhound binary not built: run scripts/test.sh (or cargo build)")
    return path


def plain_env(**extra):
    """This process's environment without what an outer `leakhound check` (which runs this very
    suite) put there to load its probe: a program started with it is not the outer check's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKHOUND_")}
    env.pop("PYTHONPATH", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def probe_env(socket_dir, **extra):
    """The environment that loads this checkout's probe at startup (no code change)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        LEAKHOUND_PROBE="1",
        LEAKHOUND_SOCKET_DIR=str(socket_dir),
        PYTHONPATH=HOOK,
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Program:
    """A running Python program with the probe loaded, killed at the end of the test."""

    def __init__(self, tmp_path, source, env=None, name="app.py", wait_socket=True,
                 socket_dir=None):
        self.dir = tmp_path
        self.socket_dir = socket_dir or tmp_path / "sockets"
        self.path = tmp_path / name
        self.path.write_text(textwrap.dedent(source))
        self.proc = subprocess.Popen(
            [sys.executable, str(self.path)],
            cwd=str(tmp_path),
            env=probe_env(self.socket_dir, **(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so stop() also ends its workers and children
        )
        self.pid = self.proc.pid
        self.socket = self.socket_dir / ("%d.sock" % self.pid)
        if wait_socket:
            try:
                self.wait_for(self.listening, "the probe socket %s" % self.socket)
            except BaseException:
                # No fixture holds it yet: a start that fails must not leave it running.
                if self.proc.poll() is None:
                    self.stop()
                raise

    def listening(self):
        """The probe's socket listens (it exists a moment before listen()). Read from
        /proc/net/unix (the listening flag, __SO_ACCEPTCON), not by connecting: a connection
        would take one of the probe's few collector slots from the test."""
        if not self.socket.exists():
            return False
        # The probe binds `.<pid>.sock.new` and renames it once it listens; the kernel's table
        # keeps the name it was bound with.
        bound = {str(self.socket), str(self.socket_dir / (".%d.sock.new" % self.pid))}
        try:
            with open("/proc/%d/net/unix" % self.pid) as table:
                for line in table:
                    parts = line.split()
                    if len(parts) >= 8 and parts[7] in bound:
                        return bool(int(parts[3], 16) & 0x10000)
        except (OSError, ValueError):
            return True  # no /proc: the file's existence is all there is
        return False

    def wait_for(self, condition, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError("program exited (%s) before %s:\n%s\n%s"
                                     % (self.proc.returncode, what, out, err))
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s" % what)

    def line_of(self, marker):
        """1-based line number of the first source line containing `marker`."""
        for number, text in enumerate(self.path.read_text().splitlines(), 1):
            if marker in text:
                return number
        raise AssertionError("no line with %r" % marker)

    def site(self, marker):
        return "%s:%d" % (self.path, self.line_of(marker))

    def stop(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            return self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            return "", ""


@pytest.fixture
def program(tmp_path):
    started = []

    def start(source, **kw):
        prog = Program(tmp_path, source, **kw)
        started.append(prog)
        return prog

    yield start
    for prog in started:
        prog.stop()


class Client:
    """A bare protocol client, to poke the probe with anything."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""
        self.hello = self.recv()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, message):
        self.send_raw((json.dumps(message) + "\n").encode())

    def recv(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("probe closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def request(self, message):
        self.send(message)
        return self.recv()

    def snapshot(self, stacks=False):
        reply = self.request({"type": "snapshot", "id": 1, "stacks": stacks})
        assert reply["type"] == "snapshot", reply
        return reply["data"]

    def close(self):
        self.sock.close()


def snapshot_of(path, stacks=False):
    client = Client(path)
    try:
        client.send({"type": "hello", "protocol": "leakhound/1", "client": "tests"})
        return client.snapshot(stacks)
    finally:
        client.close()


def watch(pid, seconds, *thresholds, interval="250ms"):
    """`leakhound watch PID --json`: the summary object."""
    args = [leakhound_bin(), "watch", str(pid), "--json", "--for", "%ss" % seconds,
            "--interval", interval]
    for t in thresholds:
        args += ["-T", t]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
    assert done.returncode in (0, 1), (done.returncode, done.stderr)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    summary = [line for line in lines if line.get("type") != "finding"]
    assert summary, done.stdout
    return summary[-1]


def findings_of(summary, rule=None):
    return [f for f in summary["findings"] if rule is None or f["rule"] == rule]
