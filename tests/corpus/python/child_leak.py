"""Leaks a child process: started, never waited for or stopped; it outlives the program."""
import subprocess
import time

subprocess.Popen(["sleep", "30"])
time.sleep(0.3)
