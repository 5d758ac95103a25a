"""Leaks a zombie: a child started with posix_spawn and never waited for (no Popen object
reaps it later), so it stays a zombie until the program exits."""
import os
import time

os.posix_spawnp("true", ["true"], os.environ)
time.sleep(1.0)
