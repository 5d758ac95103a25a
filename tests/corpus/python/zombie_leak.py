"""Leaks a zombie: a child that exits and is never waited for."""
import subprocess
import time

KEEP = subprocess.Popen(["true"])
time.sleep(1.0)
