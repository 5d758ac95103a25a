"""The probe server under abuse: garbage, half lines, a 100 MB line, collectors that vanish or
stop reading. The host keeps running, its loop keeps its pace, and the probe keeps answering."""

import os
import socket
import time

import pytest

from conftest import Client, snapshot_of

HOST = """
import asyncio

async def idle(i):
    await asyncio.sleep(3600)

async def main():
    # Many tasks make a snapshot reply large (bigger than a socket buffer).
    tasks = [asyncio.create_task(idle(i), name="idle-%d-%s" % (i, "x" * 200)) for i in range(3000)]
    while True:
        await asyncio.sleep(0.01)

asyncio.run(main())
"""


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def assert_answers(app):
    data = snapshot_of(app.socket)
    assert data["runtime"] == "python"
    assert app.proc.poll() is None, "the host died"
    return data


def test_hello_then_requests(program):
    app = program(HOST)
    client = Client(app.socket)
    assert client.hello["type"] == "hello"
    assert client.hello["protocol"] == "leakhound/1"
    assert client.hello["pid"] == app.pid
    client.send({"type": "hello", "protocol": "leakhound/1", "client": "tests"})
    assert client.request({"type": "ping", "id": 7}) == {"type": "pong", "id": 7}
    reply = client.request({"type": "frobnicate", "id": 8})
    assert reply["type"] == "error" and reply["id"] == 8 and "frobnicate" in reply["error"]
    client.close()
    mode = os.stat(app.socket).st_mode & 0o777
    assert mode == 0o600
    assert os.stat(app.socket_dir).st_mode & 0o777 == 0o700


def test_garbage_gets_an_error_and_the_connection_stays_usable(program):
    app = program(HOST)
    client = Client(app.socket)
    client.send_raw(b"\x00\xff\xfenot json at all\n")
    reply = client.recv()
    assert reply["type"] == "error" and reply["id"] is None
    client.send_raw(b"[1, 2, 3]\n")
    assert client.recv()["type"] == "error"
    assert client.request({"type": "ping", "id": 1})["type"] == "pong"
    client.close()
    assert_answers(app)


def test_other_protocol_version_is_refused(program):
    app = program(HOST)
    client = Client(app.socket)
    reply = client.request({"type": "hello", "protocol": "leakhound/2"})
    assert reply["type"] == "error" and "leakhound/1" in reply["error"]
    with pytest.raises((EOFError, OSError)):
        client.recv()
    client.close()
    assert_answers(app)


def test_half_written_line_then_hang_up(program):
    app = program(HOST)
    for _ in range(5):
        client = Client(app.socket)
        client.send_raw(b'{"type":"snapsh')
        client.close()
    assert_answers(app)


def test_100_mb_line_is_refused_without_buffering_it(program):
    app = program(HOST)
    before = rss_kib(app.pid)
    client = Client(app.socket, timeout=20)
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        for _ in range(100):
            client.send_raw(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the probe hung up once the line passed its 1 MiB cap
    assert sent < 100 * len(chunk), "the probe read a 100 MB line to the end"
    try:
        reply = client.recv()
        assert reply["type"] == "error" and "cap" in reply["error"]
    except (EOFError, OSError):
        pass  # the error may be lost if we were still writing when it closed
    client.close()
    # Memory did not grow by anything like the line.
    assert rss_kib(app.pid) - before < 30 * 1024
    assert_answers(app)


def test_vanished_collectors(program):
    app = program(HOST)
    for _ in range(20):
        client = Client(app.socket)
        client.send({"type": "snapshot", "id": 1, "stacks": True})
        # Drop mid-reply: read a little of it, then hang up.
        client.sock.recv(100)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
    assert_answers(app)


def test_loop_keeps_its_pace_while_collectors_do_not_read(program):
    app = program(HOST)
    stalled = []
    for _ in range(4):  # every connection slot the probe has
        client = Client(app.socket)
        for i in range(3):
            client.send({"type": "snapshot", "id": i, "stacks": True})
        stalled.append(client)  # and never read the replies
    # A newcomer is still answered: a collector that has not taken its reply for a second
    # gives up its slot.
    started = time.monotonic()
    extra = Client(app.socket)
    assert extra.hello["type"] == "hello", extra.hello
    assert extra.request({"type": "ping", "id": 1})["type"] == "pong"
    assert time.monotonic() - started < 3.0
    extra.close()
    time.sleep(1.5)
    for client in stalled:
        client.close()
    data = assert_answers(app)
    lag = data["loops"][0]["lag"]
    # The heartbeat kept running: a generous bound, the point is "not blocked for seconds".
    assert lag["samples"] >= 20
    assert lag["max_ms"] < 500, lag
    assert len(data["tasks"]) == 2000 and data["dropped"]["tasks"] == 1001


def test_snapshot_while_the_loop_is_blocked(program):
    app = program(
        """
        import asyncio, time

        async def main():
            await asyncio.sleep(0.3)
            time.sleep(5)  # blocks the loop

        asyncio.run(main())
        """
    )
    time.sleep(0.8)
    started = time.monotonic()
    data = snapshot_of(app.socket)
    assert time.monotonic() - started < 2.0, "the probe waited for the loop"
    stall = data["loops"][0]["stalls"][-1]
    assert stall["stack"][-1] == app.site("time.sleep(5)") + " in main"
    assert stall["duration_ms"] >= 200


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
def test_other_uid_is_refused(program):
    import pathlib
    import shutil
    import tempfile

    # Outside pytest's private tmp folder, so another uid can reach the socket at all.
    public = pathlib.Path(tempfile.mkdtemp(prefix="leakhound-uid-test-"))
    os.chmod(public, 0o755)
    try:
        _refuses_other_uid(program(HOST, socket_dir=public / "sockets"))
    finally:
        shutil.rmtree(public, ignore_errors=True)


def _refuses_other_uid(app):
    # Open the folder and socket so only the peer-credential check stands in the way.
    os.chmod(app.socket_dir, 0o755)
    os.chmod(app.socket, 0o777)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # connect as nobody, report what the probe said
        try:
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(app.socket))
            os.write(write_end, b"got:" + s.recv(100))
        except BaseException as err:
            os.write(write_end, b"err:" + repr(err).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    said = os.read(read_end, 1000)
    os.close(read_end)
    assert said == b"got:", "another uid got an answer: %r" % said
    assert_answers(app)


# --- a folder the probe must not trust --------------------------------------------------------


def _fallback_socket(app, timeout=10.0):
    """The socket a probe that refused its folder listens on instead, found as a collector
    would (PROTOCOL.md): /tmp/leakhound-<uid>-*/<pid>.sock."""
    import glob

    pattern = "/tmp/leakhound-%d-*/%d.sock" % (os.getuid(), app.pid)
    found = []
    app.wait_for(lambda: found.extend(glob.glob(pattern)) or found, pattern, timeout)
    return found[0]


@pytest.fixture
def fallback_cleanup():
    folders = []
    yield folders.append
    import shutil

    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _assert_fell_back(app, refused, cleanup, why):
    sock = _fallback_socket(app)
    cleanup(os.path.dirname(sock))
    folder = os.stat(os.path.dirname(sock))
    assert folder.st_uid == os.getuid() and folder.st_mode & 0o777 == 0o700
    client = Client(sock)
    assert client.hello["pid"] == app.pid
    assert why in client.hello["note"] and sock in client.hello["note"], client.hello
    client.close()
    data = snapshot_of(sock)
    assert any(why in m and sock in m for m in data["missing"]), data["missing"]
    assert not [n for n in os.listdir(refused) if n.endswith(".sock")], os.listdir(refused)
    _, stderr = app.stop()
    assert "listening at %s instead" % sock in stderr


@pytest.mark.parametrize("attack", ["world-writable", "symlink", "other-owner"])
def test_an_untrusted_folder_is_refused_and_the_probe_falls_back(program, tmp_path, attack,
                                                                 fallback_cleanup):
    if attack == "other-owner" and os.getuid() != 0:
        pytest.skip("needs root to make a folder of another uid")
    victim = tmp_path / "victim"
    victim.mkdir()
    os.chmod(victim, 0o777)
    if attack == "other-owner":
        os.chown(victim, 65534, 65534)
    planted = victim
    if attack == "symlink":
        planted = tmp_path / "planted"
        os.symlink(victim, planted)
    app = program(HOST, socket_dir=planted, wait_socket=False)
    why = {"world-writable": "not private", "symlink": "symbolic link",
           "other-owner": "belongs to uid 65534"}[attack]
    _assert_fell_back(app, victim, fallback_cleanup, why)
    # Nothing was done to the folder through the link or otherwise.
    assert os.stat(victim).st_mode & 0o777 == 0o777


# --- hygiene: files left by children, stale files, slow collectors ----------------------------


def _sockets_of_pids_other_than(folder, pid):
    return sorted(n for n in os.listdir(folder) if n.endswith(".sock") and n != "%d.sock" % pid)


def test_multiprocessing_children_remove_their_sockets(program):
    app = program(
        """
        import multiprocessing as mp, time

        def work(seconds):
            time.sleep(seconds)  # long enough to listen (LEAKHOUND_CHILD_LISTEN_MS)
            return seconds

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            for _ in range(3):
                p = ctx.Process(target=work, args=(0.5,))
                p.start()
                p.join()
            pool = ctx.Pool(2, maxtasksperchild=1)
            pool.map(work, [0.5] * 4)
            pool.close()  # not terminate(): SIGTERM leaves no chance to clean up
            pool.join()
            print("done", flush=True)
            time.sleep(3600)
        """
    )
    app.wait_for(lambda: False if app.proc.stdout.readline() != "done\n" else True, "done", 30)
    assert _sockets_of_pids_other_than(app.socket_dir, app.pid) == []
    # The children's final reports stay for the collector, one per child.
    finals = [n for n in os.listdir(app.socket_dir) if n.endswith(".final.json")]
    assert len(finals) >= 7, finals


def test_a_short_lived_forked_child_never_listens(program):
    app = program(
        """
        import os, time

        for _ in range(10):
            pid = os.fork()
            if pid == 0:
                time.sleep(0.02)
                os._exit(0)  # no cleanup of any kind runs
            os.waitpid(pid, 0)
        print("done", flush=True)
        time.sleep(3600)
        """
    )
    app.wait_for(lambda: app.proc.stdout.readline() == "done\n", "done", 30)
    assert _sockets_of_pids_other_than(app.socket_dir, app.pid) == []


def _dead_pid():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_files_of_gone_processes_are_swept_at_start(program, tmp_path):
    folder = tmp_path / "sockets"
    folder.mkdir(mode=0o700)

    def leave_socket(name):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(folder / name))
        s.close()  # the file stays, as when a process ends with os._exit

    dead, dead2 = _dead_pid(), _dead_pid()
    leave_socket("%d.sock" % dead)
    leave_socket(".%d.sock.new" % dead2)  # bound, never renamed into place
    (folder / ("%d.final.json.tmp" % dead2)).write_text("{half")
    (folder / ("%d.final.json" % dead)).write_text("{}")  # the collector's to read
    # A live process made after the file: its pid was reused, the file is stale.
    reused = os.getppid()
    leave_socket("%d.sock" % reused)
    os.utime(folder / ("%d.sock" % reused), (1, 1))
    # A live process that may have made it: kept.
    live = os.getpid()
    leave_socket("%d.sock" % live)
    # Not a socket: not ours to judge.
    (folder / ("%d.sock" % _dead_pid())).write_text("")
    expected_left = sorted(["%d.sock" % live, "%d.final.json" % dead])
    expected_left.append(max(n for n in os.listdir(folder) if n.endswith(".sock")
                              and (folder / n).is_file()))
    app = program(HOST, socket_dir=folder)
    left = sorted(n for n in os.listdir(folder) if n != "%d.sock" % app.pid)
    assert left == sorted(expected_left)


def test_slow_and_silent_collectors_do_not_lock_others_out(program):
    import threading

    app = program(HOST)
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(4)]
    for s in silent:
        s.connect(str(app.socket))
    drippers = [Client(app.socket) for _ in range(4)]
    done = threading.Event()
    closed_after = []

    def drip(client):
        started = time.monotonic()
        try:
            while not done.is_set():
                client.send_raw(b"{")
                done.wait(0.3)
        except OSError:
            closed_after.append(time.monotonic() - started)

    threads = [threading.Thread(target=drip, args=(c,), daemon=True) for c in drippers]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        newcomer = Client(app.socket)
        assert newcomer.hello["type"] == "hello", newcomer.hello
        newcomer.send({"type": "hello", "protocol": "leakhound/1", "client": "tests"})
        assert newcomer.snapshot()["runtime"] == "python"
        assert time.monotonic() - started < 3.0
        newcomer.close()
        # A dripping collector is cut off once its line has taken the whole-line deadline.
        time.sleep(3.0)
    finally:
        done.set()
        for t in threads:
            t.join()
        for c in drippers:
            c.close()
        for s in silent:
            s.close()
    assert len(closed_after) == len(drippers), closed_after
    assert_answers(app)


def test_a_deeply_nested_request_gets_an_error(program):
    app = program(HOST)
    client = Client(app.socket)
    client.send_raw(b"[" * 100000 + b"]" * 100000 + b"\n")
    reply = client.recv()
    assert reply["type"] == "error" and "nested" in reply["error"], reply
    assert client.request({"type": "ping", "id": 2}) == {"type": "pong", "id": 2}
    client.close()
    assert_answers(app)


def test_a_snapshot_flood_is_rate_limited(program):
    app = program(HOST)
    client = Client(app.socket, timeout=30)
    started = time.monotonic()
    n = 60
    client.send_raw(b"".join(b'{"type":"snapshot","id":%d}\n' % i for i in range(n)))
    replies = [client.recv() for _ in range(n)]
    elapsed = time.monotonic() - started
    assert [r["id"] for r in replies] == list(range(n))
    served = [r for r in replies if r["type"] == "snapshot"]
    limited = [r for r in replies if r["type"] == "error"]
    assert len(served) + len(limited) == n
    # A burst of SNAPSHOT_RATE, then SNAPSHOT_RATE a second.
    from leakhound_probe._server import SNAPSHOT_RATE as rate

    assert rate <= len(served) <= rate + rate * elapsed + 1 < n, (len(served), elapsed)
    assert all("rate limited" in r["error"] for r in limited)
    client.close()
    assert_answers(app)


def test_snapshots_cost_the_host_a_bounded_share_of_its_time(monkeypatch):
    """Taken anew only once the last one is older than its own CPU cost / SNAPSHOT_DUTY (and
    SNAPSHOT_REUSE), not its wall time (stretched by waiting for the GIL behind a busy loop);
    sent again until then, to any collector. On fake clocks."""
    from leakhound_probe import _server

    clock = [100.0]
    cpu = [5.0]
    monkeypatch.setattr(_server, "monotonic", lambda: clock[0])
    monkeypatch.setattr(_server, "thread_time", lambda: cpu[0])

    class FakeProbe:
        pid = 1
        shutdown_started = False
        taken = 0

        def snapshot(self, stacks=False):
            self.taken += 1
            clock[0] += 0.6  # a 2,000-task snapshot beside a busy loop: 0.6 s of wall time,
            cpu[0] += 0.15  # 0.15 s of it on the CPU
            return {"n": self.taken}

    probe = FakeProbe()
    server = _server.Server(probe, "/nonexistent/1.sock")
    window = 0.15 / _server.SNAPSHOT_DUTY
    assert server.snapshot_json(False) == '{"n":1}'
    clock[0] += window - 0.01
    assert server.snapshot_json(False) == '{"n":1}'
    assert server.snapshot_json(True) == '{"n":2}'  # stacks: another snapshot
    clock[0] += 0.02
    assert server.snapshot_json(False) == '{"n":3}'
    probe.shutdown_started = True  # the last word is always fresh
    assert server.snapshot_json(False) == '{"n":4}'
    assert probe.taken == 4


def test_fallback_folders_of_killed_probes_are_swept(tmp_path):
    """Called when a probe falls back: /tmp/leakhound-<uid>-* folders holding only stale
    files go; one with a live socket, one just made, one not private stay."""
    from leakhound_probe import _server

    def folder(name, mode=0o700, sockets=(), age=3600):
        path = tmp_path / name
        path.mkdir()
        for pid in sockets:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(path / ("%d.sock" % pid)))
            s.close()
        os.chmod(path, mode)
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    killed = folder("leakhound-7-killed", sockets=[_dead_pid()])
    live = folder("leakhound-7-live", sockets=[os.getpid()])
    fresh = folder("leakhound-7-fresh", age=0)
    public = folder("leakhound-7-public", mode=0o755)
    other = folder("unrelated", sockets=[_dead_pid()])
    assert _server.sweep_fallback_folders(str(tmp_path), "leakhound-7-") == 1
    assert not killed.exists()
    assert live.exists() and fresh.exists() and public.exists() and other.exists()
