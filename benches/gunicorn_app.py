import asyncio, fcntl, os, tempfile, time
from contextlib import asynccontextmanager
from fastapi import FastAPI

prices = {}


def fetch_prices():
    time.sleep(0.4)  # a blocking HTTP call to the price service, in a coroutine: the bug
    return {"EUR": 1.0}


async def refresh_prices():
    while True:
        prices.update(fetch_prices())
        await asyncio.sleep(1)


@asynccontextmanager
async def lifespan(app):
    # One worker (whichever takes the lock first) refreshes the shared price cache.
    lock = open(os.path.join(tempfile.gettempdir(), "leakhound-shop-refresher.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        task = asyncio.create_task(refresh_prices(), name="refresh-prices")
    except BlockingIOError:
        task = None
    yield
    if task:
        task.cancel()


app = FastAPI(lifespan=lifespan)


@app.get("/items/{n}")
async def item(n: int):
    await asyncio.sleep(0.005)
    return {"n": n, "price": prices.get("EUR")}


# The README's gunicorn + uvicorn showcase (kept below the code so that the blocking call stays
# at line 9, as the README's output shows it). Run it with the probe, load it, and watch the
# master:
#   LEAKHOUND_PROBE=1 PYTHONPATH=$(python3 -m leakhound_probe hook-dir) \
#     gunicorn -w 4 -k uvicorn.workers.UvicornWorker -b 127.0.0.1:8411 --chdir benches gunicorn_app:app
#   leakhound watch MASTER_PID --for 10s
# Exactly one worker (the one that takes the lock) runs refresh_prices, so exactly one worker's
# loop is blocked (0.4 s a second); the others serve /items/N normally.
