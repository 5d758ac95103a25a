"""Three daemon threads parked on an event, left running at exit: Python ends daemon threads
at exit by design, so `check` reports them as info and passes (unless the user asks)."""
import threading
import time

stop = threading.Event()
for i in range(3):
    threading.Thread(target=stop.wait, name="parked-%d" % i, daemon=True).start()
time.sleep(1.5)
