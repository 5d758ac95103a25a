"""Clean twin of never_awaited_leak.py: the coroutine is awaited."""
import asyncio


async def save(record):
    await asyncio.sleep(0)
    return record


async def main():
    await save({"id": 1})
    await asyncio.sleep(0.3)


asyncio.run(main())
