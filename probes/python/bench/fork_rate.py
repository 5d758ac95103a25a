"""Fork rate of a probed Python program, and the files its forked children leave behind.

    python probes/python/bench/fork_rate.py [seconds]

Runs the same workload two ways: without the probe, and with it (LEAKHOUND_SOCKET_DIR set,
as under `leakhound check`), and prints forks per second, the CPU time each fork cost the
child and the parent (steadier than the rate on a busy machine), and what is left in the
socket folder after every child has exited. Workload: multiprocessing fork workers that return at once
(they end with os._exit, like pool workers with maxtasksperchild).
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK = os.path.join(os.path.dirname(HERE), "src", "leakhound_probe", "_hook")

WORKLOAD = r"""
import multiprocessing as mp, sys, time

def work():
    pass

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    seconds = float(sys.argv[1])
    n = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        p = ctx.Process(target=work)
        p.start()
        p.join()
        n += 1
    import resource
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    print("%.1f %.3f %.3f" % (n / (time.monotonic() - started),
                              (children.ru_utime + children.ru_stime) * 1000 / n,
                              (me.ru_utime + me.ru_stime) * 1000 / n))
"""


def run(seconds, probe):
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "work.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        sockets = os.path.join(tmp, "sockets")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if probe:
            env.update(LEAKHOUND_PROBE="1", PYTHONPATH=HOOK, LEAKHOUND_SOCKET_DIR=sockets)
        out = subprocess.run([sys.executable, script, str(seconds)], env=env,
                             capture_output=True, text=True, check=True).stdout
        left = sorted(os.listdir(sockets)) if os.path.isdir(sockets) else []
        kinds = {}
        for name in left:
            kind = name.split(".", 1)[1] if "." in name else name
            kinds[kind] = kinds.get(kind, 0) + 1
        rate, child_ms, parent_ms = (float(x) for x in out.split())
        return rate, child_ms, parent_ms, kinds


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    for label, probe in (("no probe", False), ("probe", True)):
        rate, child_ms, parent_ms, kinds = run(seconds, probe)
        print("%-9s %6.1f forks/s, CPU per fork: child %.2f ms, parent %.2f ms;  left in the "
              "socket folder: %s" % (label, rate, child_ms, parent_ms, kinds or "nothing"))


if __name__ == "__main__":
    main()
