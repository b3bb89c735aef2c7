"""Run as a separate manager process by the lock tests: take one router's lock in the store at URL, say
"acquired", hold it until a line arrives on standard input, then let go and say "released"."""

import sys

from orchestration.store import Store

url, router = sys.argv[1], sys.argv[2]
store = Store(url)
with store.lock(router, timeout=120):
    print("acquired", flush=True)
    sys.stdin.readline()
print("released", flush=True)
store.close()
