"""Clean twin of zombie_leak.py: the child is waited for."""
import os
import time

pid = os.posix_spawnp("true", ["true"], os.environ)
os.waitpid(pid, 0)
time.sleep(1.0)
