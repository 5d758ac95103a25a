"""Leaves an executor running: submitted work, never shut down, still busy at exit."""
import time
from concurrent.futures import ThreadPoolExecutor

pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reports")
pool.submit(time.sleep, 1.0)
time.sleep(0.3)
