"""`python -m leakhound_probe hook-dir` prints the folder to put on PYTHONPATH."""

import sys

from . import __version__, hook_dir


def main(argv):
    if argv[:1] == ["hook-dir"]:
        print(hook_dir())
        return 0
    if argv[:1] == ["version"]:
        print(__version__)
        return 0
    sys.stderr.write(
        "usage: python -m leakhound_probe hook-dir | version\n"
        "  load the probe with no code change:\n"
        "  LEAKHOUND_PROBE=1 PYTHONPATH=$(python -m leakhound_probe hook-dir) python app.py\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
