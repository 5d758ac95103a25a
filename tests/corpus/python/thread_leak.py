"""Leaks a thread: started, never joined, still running when the main thread ends."""
import threading
import time

threading.Thread(target=time.sleep, args=(1.5,), name="never-joined").start()
time.sleep(0.5)
