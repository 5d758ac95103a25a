"""Clean twin of thread_leak.py: the thread is joined."""
import threading
import time

t = threading.Thread(target=time.sleep, args=(0.5,), name="joined")
t.start()
t.join()
time.sleep(0.5)
