"""Fork rate of a probed Python program, and the files its forked children leave behind.

    python probes/python/bench/fork_rate.py [seconds]

Runs the same workload three ways: without the probe, with it (LEAKHOUND_SOCKET_DIR set, as
under `leakhound check`), and prints forks per second and what is left in the socket folder
after every child has exited. Workload: multiprocessing fork workers that return at once
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
    print("%.1f" % (n / (time.monotonic() - started)))
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
        return float(out.strip()), kinds


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    for label, probe in (("no probe", False), ("probe", True)):
        rate, kinds = run(seconds, probe)
        print("%-9s %6.1f forks/s   left in the socket folder: %s" % (label, rate, kinds or "nothing"))


if __name__ == "__main__":
    main()
