"""Clean twin of child_leak.py: the child is stopped and waited for."""
import subprocess
import time

child = subprocess.Popen(["sleep", "30"])
time.sleep(0.3)
child.terminate()
child.wait()
