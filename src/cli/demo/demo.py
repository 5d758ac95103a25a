"""The Python half of `leakhound demo`: one asyncio service doing everything the Python
rules look for, started by the demo worker with the leakhound probe loaded. Exits when its
parent goes away. Standard library only."""
import asyncio
import concurrent.futures
import gc
import logging
import os
import socket
import sys
import threading
import time

PARENT = os.getppid()
logging.basicConfig(
    stream=sys.stdout,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s python tid=%(thread_native_id)s task=%(task_name)s %(message)s",
)


class TaskName(logging.Filter):
    """Adds the OS thread id and the asyncio task name, as the probe's log filter does."""

    def filter(self, record):
        record.thread_native_id = threading.get_native_id()
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        record.task_name = task.get_name() if task else "-"
        return True


log = logging.getLogger("demo")
log.addFilter(TaskName())


def watch_parent():
    while os.getppid() == PARENT:
        time.sleep(0.5)
    os._exit(0)


async def wait_for_config():
    """stuck-task: waits on an event nobody will ever set."""
    log.info("waiting for a config push that never comes")
    await asyncio.Event().wait()


async def notify(n):
    log.info("notify %s", n)


async def forgets_to_await():
    """never-awaited: calls a coroutine function without awaiting it."""
    for n in range(3):
        notify(n)  # the bug: missing `await`
        gc.collect()
        await asyncio.sleep(2)


async def blocks_the_loop():
    """loop-blocked: a synchronous sleep inside a coroutine."""
    while True:
        await asyncio.sleep(2)
        log.info("crunching synchronously (blocks the loop)")
        time.sleep(0.4)


def slow_job(n):
    time.sleep(2)
    return n


async def starves_the_pool():
    """pool-starvation: CPU-ish jobs through a 2-worker executor, faster than it drains."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="starved")
    loop = asyncio.get_running_loop()
    pending = set()
    n = 0
    while True:
        while len(pending) < 12:
            n += 1
            pending.add(loop.run_in_executor(pool, slow_job, n))
        done, pending = await asyncio.wait(pending, timeout=1)


async def leaks_sockets():
    """unclosed-resource: sockets dropped without close()."""
    for _ in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        del s
        gc.collect()
        await asyncio.sleep(1.5)


def forgotten_worker():
    while True:
        time.sleep(1)


async def piles_up_threads():
    """thread-leak: a non-daemon thread per "request", never joined."""
    for n in range(30):
        threading.Thread(target=forgotten_worker, name=f"forgotten-worker-{n}").start()
        await asyncio.sleep(0.8)


async def main():
    tasks = [
        asyncio.create_task(wait_for_config(), name="wait_for_config"),
        asyncio.create_task(forgets_to_await(), name="forgets_to_await"),
        asyncio.create_task(blocks_the_loop(), name="blocks_the_loop"),
        asyncio.create_task(starves_the_pool(), name="starves_the_pool"),
        asyncio.create_task(leaks_sockets(), name="leaks_sockets"),
        asyncio.create_task(piles_up_threads(), name="piles_up_threads"),
    ]
    while True:
        await asyncio.sleep(1)
        log.info("%d tasks alive", len(asyncio.all_tasks()))


threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()
asyncio.run(main())
