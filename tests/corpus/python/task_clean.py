"""Clean twin of task_leak.py: the task is cancelled and awaited once it is not needed."""
import asyncio


async def wait_forever(event):
    await event.wait()


async def main():
    task = asyncio.create_task(wait_forever(asyncio.Event()), name="waits-forever")
    await asyncio.sleep(0.3)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    for _ in range(12):
        await asyncio.sleep(0.1)


asyncio.run(main())
