"""What the Python probe really sends, checked against the one Rust definition of the protocol.

`probes/protocol.schema.json` is generated from the `leakhound-protocol` crate (leakhound's
tests/protocol_schema.rs fails when it is stale). It is closed: a field the Rust types do not
have is an error, so a field renamed or added on one side only fails here, not silently in the
field. The rule ids and ignore kinds the pytest plugin copies are compared with what the
leakhound binary accepts."""

import copy
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, Client, leakhound_bin

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_PATH = os.path.join(REPO, "probes", "protocol.schema.json")

# Everything the probe can report at once: tasks (stuck, parked, waiting on a semaphore),
# threads with stacks, a thread pool, a multiprocessing child, a loop stall, never-awaited and
# unclosed-resource events. It exits when the test creates the `stop` file.
BUSY = """
import asyncio, concurrent.futures, multiprocessing, os, socket, threading, time

async def user(sem):
    async with sem:
        await asyncio.sleep(3600)

async def forgotten():
    pass

async def main():
    sem = asyncio.Semaphore(1)
    users = [asyncio.create_task(user(sem), name="user-%d" % i) for i in range(3)]
    stuck = asyncio.Event()
    waiter = asyncio.create_task(stuck.wait(), name="stuck")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker")
    pool.submit(time.sleep, 1)
    forgotten()
    unclosed = socket.socket()
    del unclosed
    threading.Thread(target=time.sleep, args=(3600,), name="sleeper", daemon=True).start()
    time.sleep(0.3)  # a stall of the loop
    while not os.path.exists("stop"):
        await asyncio.sleep(0.02)
    for t in users + [waiter]:
        t.cancel()
    pool.shutdown(wait=False)

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,),
                                                        name="child")
    child.start()
    asyncio.run(main())
    child.kill()
    child.join()
"""


def schema_for(message):
    """The generated schema with one message's definition as its root."""
    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    assert message in schema["$defs"], sorted(schema["$defs"])
    root = copy.deepcopy(schema)
    root.pop("oneOf", None)
    root["$ref"] = "#/$defs/%s" % message
    return root


def validate(message, instance):
    schema = schema_for(message)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "the Python probe's %s does not match leakhound-protocol:\n%s" % (
        message,
        "\n".join("  at /%s: %s" % ("/".join(map(str, e.absolute_path)), e.message)
                  for e in errors[:20]),
    )


def test_the_schema_is_closed_so_a_field_on_one_side_only_fails():
    """The check itself can fail: an unknown field, a wrong type, a wrong enum value."""
    good = {"type": "hello", "protocol": "leakhound/1", "runtime": "python", "pid": 1,
            "capabilities": ["tasks"]}
    validate("Hello", good)
    for bad in ({"pid_renamed": 1}, {"pid": "one"}, {"capabilities": "tasks"}):
        with pytest.raises(AssertionError, match="does not match"):
            validate("Hello", dict(good, **bad))
    with pytest.raises(AssertionError, match="does not match"):
        validate("SnapshotReply", {"type": "snapshot", "id": 1,
                                   "data": {"tasks": [{"id": "Task-1", "state": "sleeping"}]}})


def test_a_real_probe_sends_what_the_rust_types_say(program):
    app = program(BUSY)

    def snapshot():
        client = Client(app.socket)
        try:
            client.send({"type": "hello", "protocol": "leakhound/1", "client": "tests"})
            return client.hello, client.request({"type": "snapshot", "id": 3, "stacks": True})
        finally:
            client.close()

    def full():
        try:
            data = snapshot()[1]["data"]
        except OSError:  # the socket file exists a moment before the probe listens
            return False
        kinds = {e["kind"] for e in data["events"]}
        return (data["children"] and data["pools"] and data["loops"]
                and data["loops"][0]["stalls"]
                and {"never_awaited", "unclosed_resource"} <= kinds
                and len(data["tasks"]) >= 4 and any(t["stack"] for t in data["threads"]))

    app.wait_for(full, "a snapshot with every kind of item")
    hello, reply = snapshot()
    validate("Hello", hello)
    assert reply["type"] == "snapshot" and reply["id"] == 3
    validate("SnapshotReply", reply)

    (app.dir / "stop").write_text("")
    out, err = app.proc.communicate(timeout=30)
    assert app.proc.returncode == 0, (out, err)
    final_path = app.socket_dir / ("%d.final.json" % app.pid)
    with open(str(final_path)) as f:
        final = json.load(f)
    assert final["type"] == "final" and final["data"]["events"], final
    validate("FinalReport", final)


def _plugin():
    sys.path.insert(0, os.path.join(REPO, "probes", "python", "src"))
    from leakhound_probe import pytest_plugin

    return pytest_plugin


def test_the_plugins_rule_ids_are_leakhound_rules():
    done = subprocess.run([leakhound_bin(), "rules"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("\n\n")[0]
    assert section.startswith("RULES"), done.stdout
    rules = {line.split()[0] for line in section.splitlines()[1:] if line.strip()}
    plugin_rules = set(_plugin().RULES)
    assert plugin_rules, "the plugin lists no rules"
    assert plugin_rules <= rules, "rules in pytest_plugin.RULES that leakhound does not have: %s" % (
        sorted(plugin_rules - rules))


def test_the_plugins_ignore_kinds_are_the_ones_check_accepts():
    def check(entry):
        return subprocess.run([leakhound_bin(), "check", "--ignore", entry, "--", "true"],
                              capture_output=True, text=True, timeout=60)

    refused = check("no-such-kind=x")
    assert refused.returncode == 2, refused
    listed = re.search(r"use one of ([a-z, ]+)", refused.stderr)
    assert listed, refused.stderr
    accepted = [k.strip() for k in listed.group(1).split(",")]
    assert list(_plugin().KINDS) == accepted
    # And each listed kind really parses (the message is not just text).
    for kind in accepted:
        done = check("%s=never-matches-anything" % kind)
        assert "unknown kind" not in done.stderr, (kind, done.stderr)
