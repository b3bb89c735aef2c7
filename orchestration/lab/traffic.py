"""TCP traffic for lab benchmarks and tests, run inside network namespaces as `python -m orchestration.traffic`:
`serve PORT TEXT` answers every connection with TEXT; `loop SECONDS INTERVAL HOST:PORT...` connects to each
target in turn, counts a connection as good when it is answered, and when stopped (SIGTERM) or after
SECONDS prints {"attempts": n, "failed": n, "errors": [...]} as JSON.
"""

import contextlib
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence


def serve(port: str, text: str) -> None:
    server = socket.create_server(("0.0.0.0", int(port)))
    while True:
        conn, (peer, _) = server.accept()
        with conn, contextlib.suppress(OSError):  # a client gone first (vr-probe connects and closes at once)
            conn.sendall(f"{text} from {peer}\n".encode())


def attempt(host: str, port: str) -> str | None:
    """None when host:port answered, else why not."""
    try:
        with socket.create_connection((host, int(port)), timeout=2) as conn:
            conn.settimeout(2)
            answered = conn.recv(200)
            # Closed with a reset: no TIME_WAIT left behind, so a loop of thousands a second does not run
            # out of ports or fill the router's connection table and slow itself down as it goes.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return None if answered else "empty answer"
    except OSError as err:
        return str(err)


def loop(seconds: str, interval: str, targets: Sequence[str]) -> None:
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    attempts, errors = 0, []
    deadline = time.monotonic() + float(seconds)
    while not stop and time.monotonic() < deadline:
        for target in targets:
            error = attempt(*target.rsplit(":", 1))
            attempts += 1
            if error:
                errors.append(f"{target}: {error}")
        time.sleep(float(interval))
    print(json.dumps({"attempts": attempts, "failed": len(errors), "errors": errors}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(*sys.argv[2:4])
    else:
        loop(sys.argv[2], sys.argv[3], sys.argv[4:])
