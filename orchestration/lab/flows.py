"""Long-lived TCP flows for failover tests and benchmarks, run inside network namespaces as
`python -m orchestration.lab.flows`: `echo PORT` echoes every line on every connection; `talk HOST:PORT
INTERVAL` sends a numbered line every INTERVAL seconds on one connection and checks each echo, and when
stopped (SIGTERM) prints {"sent", "echoed", "max_gap_s", "error"} as JSON (error: null while it held).
"""

import json
import signal
import socket
import sys
import threading
import time


def echo(port: str) -> None:
    server = socket.create_server(("0.0.0.0", int(port)))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as lines:
        for line in lines:
            conn.sendall(line)


def talk(target: str, interval: str) -> None:
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    host, port = target.rsplit(":", 1)
    sent = echoed = 0
    max_gap, last = 0.0, time.monotonic()
    error = None
    try:
        conn = socket.create_connection((host, int(port)), timeout=5)
        conn.settimeout(30)  # a failover may hold an echo back for seconds; a reset ends it at once
        with conn, conn.makefile("rb") as lines:
            while not stop:
                sent += 1
                conn.sendall(f"{sent}\n".encode())
                answer = lines.readline()
                if answer != f"{sent}\n".encode():
                    raise ConnectionError(f"echo {answer!r} for line {sent}")
                echoed += 1
                now = time.monotonic()
                max_gap, last = max(max_gap, now - last), now
                time.sleep(float(interval))
    except OSError as err:
        error = f"{type(err).__name__}: {err}"
    print(json.dumps({"sent": sent, "echoed": echoed, "max_gap_s": round(max_gap, 3), "error": error}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(sys.argv[2])
    else:
        talk(sys.argv[2], sys.argv[3])
