"""A bounded loop of TCP connections for upgrade tests: `traffic_loop.py SECONDS INTERVAL HOST:PORT...`
connects to each target in turn, counts a connection as good when it gets an answer, and on SIGTERM (or
after SECONDS) prints {"attempts": n, "failed": n, "errors": [...]} as JSON."""

import json
import signal
import socket
import sys
import time


def attempt(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=2) as conn:
            conn.settimeout(2)
            return None if conn.recv(200) else "empty answer"
    except OSError as err:
        return str(err)


def main(seconds, interval, targets):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    counts = {"attempts": 0, "failed": 0, "errors": []}
    deadline = time.monotonic() + seconds
    while not stop and time.monotonic() < deadline:
        for target in targets:
            error = attempt(*target.rsplit(":", 1))
            counts["attempts"] += 1
            if error:
                counts["failed"] += 1
                counts["errors"].append(f"{target}: {error}")
        time.sleep(interval)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
