"""Clean twin of global_file_leak.py: the global file is closed before the program ends."""
import os
import tempfile
import time

PATH = tempfile.NamedTemporaryFile(prefix="leakhound-corpus-", delete=False).name
AUDIT = open(PATH, "a")

for n in range(3):
    AUDIT.write("event %d\n" % n)
    AUDIT.flush()
time.sleep(0.5)
AUDIT.close()
os.unlink(PATH)
