"""Leaks file descriptors the common Python way: a file opened and never closed; only the
garbage collector closes it (ResourceWarning: unclosed file)."""
import os
import tempfile
import time

PATH = tempfile.NamedTemporaryFile(prefix="leakhound-corpus-", delete=False).name


def read_config():
    f = open(PATH)  # never closed
    return f.read()


for _ in range(3):
    read_config()
time.sleep(0.5)
os.unlink(PATH)
