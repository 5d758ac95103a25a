"""Calls a coroutine function without awaiting it: the work never runs."""
import asyncio


async def save(record):
    await asyncio.sleep(0)
    return record


async def main():
    save({"id": 1})  # missing await
    await asyncio.sleep(0.3)


asyncio.run(main())
