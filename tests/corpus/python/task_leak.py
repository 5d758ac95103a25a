"""Leaks an asyncio task: it waits on an event nobody sets, and is still pending at exit
(the loop is never closed, so nothing cancels it). Nothing references the task either (asyncio
holds tasks weakly): when a garbage collection happens to run first, it is freed while pending,
which is also `stuck-task` (an error). Which of the two is seen depends on allocation timing."""
import asyncio


async def wait_forever(event):
    await event.wait()


async def work():
    for _ in range(25):  # 2.5 s: the probe notes progress once a second, the test judges at 1 s
        await asyncio.sleep(0.1)


loop = asyncio.new_event_loop()
loop.create_task(wait_forever(asyncio.Event()), name="waits-forever")
loop.run_until_complete(work())
