"""Run as a separate manager process by the lock tests: hold one router's lock in the store at URL for
SECONDS and print when it got it and when it let go (wall-clock seconds), one line each."""

import sys
import time

from orchestration.store import Store

url, router, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = Store(url)
with store.lock(router, timeout=60):
    print(f"acquired {time.time():.3f}", flush=True)
    time.sleep(seconds)
    print(f"released {time.time():.3f}", flush=True)
store.close()
