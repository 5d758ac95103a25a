"""Clean twin of fd_leak.py: the file is closed by `with`."""
import os
import tempfile
import time

PATH = tempfile.NamedTemporaryFile(prefix="leakhound-corpus-", delete=False).name


def read_config():
    with open(PATH) as f:
        return f.read()


for _ in range(3):
    read_config()
os.unlink(PATH)
time.sleep(0.5)
