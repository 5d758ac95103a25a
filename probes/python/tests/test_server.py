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
    # The extra collector is told so, at once, rather than waiting.
    extra = Client(app.socket)
    assert extra.hello["type"] == "error" and "too many" in extra.hello["error"]
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
