"""Clean twin of zombie_leak.py: the child is waited for."""
import subprocess
import time

subprocess.Popen(["true"]).wait()
time.sleep(1.0)
