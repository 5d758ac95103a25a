"""Leaks a file the way a module global does: opened at import, used, never closed. Nothing
collects it while the program runs; the interpreter closes it while it tears down, after
/proc or a ResourceWarning could have shown it."""
import os
import tempfile
import time

PATH = tempfile.NamedTemporaryFile(prefix="leakhound-corpus-", delete=False).name
AUDIT = open(PATH, "a")  # never closed

for n in range(3):
    AUDIT.write("event %d\n" % n)
    AUDIT.flush()
time.sleep(0.5)
os.unlink(PATH)
