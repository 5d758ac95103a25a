"""Clean twin of executor_leak.py: the executor is shut down (by `with`)."""
import time
from concurrent.futures import ThreadPoolExecutor

with ThreadPoolExecutor(max_workers=2, thread_name_prefix="reports") as pool:
    pool.submit(time.sleep, 0.3).result()
time.sleep(0.3)
