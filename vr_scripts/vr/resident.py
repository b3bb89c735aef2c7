"""The client side of the resident engine (vr-engine, vr/engine.py): hand it a document to apply, or ask it
for the health report. Standard library only and nothing of the engine, so that vr-health, which a manager
runs on every router every 10 s, costs a router little more than a Python start.
"""

import json
import os
import socket
from typing import Any

from . import __version__

ENGINE_SOCKET = "run/vr/engine.sock"  # under the router's root (VR_ROOT)
HEALTH_WAIT = 5.0  # seconds vr-health waits for the engine (an apply may hold it) before working alone
ABANDONED = {
    "ok": False,
    "error": "the resident engine stopped before it answered; the old or the new state is in force",
}


def socket_path() -> str:
    return os.path.join(os.environ.get("VR_ROOT", "/"), ENGINE_SOCKET)


def send(document: Any) -> dict[str, Any] | None:
    """Have the resident engine apply `document`: its result, or None when it does not take it (not running,
    another version), and the caller applies it itself."""
    try:
        reply = _ask({"version": __version__, "document": document}, timeout=None)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except OSError:
        return dict(ABANDONED)  # taken, then the connection broke: the apply may have happened
    if not reply:
        return dict(ABANDONED)
    result = json.loads(reply)
    return None if "refused" in result else result


def health() -> dict[str, Any] | None:
    """The resident engine's health report, or None when it gives none (not running, another version,
    busy with a long apply): the caller then makes it itself."""
    try:
        result = json.loads(_ask({"version": __version__, "health": True}, timeout=HEALTH_WAIT))
    except (OSError, ValueError):
        return None
    # An engine of the same version from before health requests would take this one for an empty document:
    # only a report with its checks is one.
    return result if isinstance(result, dict) and isinstance(result.get("checks"), list) else None


def _ask(request: dict[str, Any], timeout: float | None) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path())
        conn.sendall(json.dumps(request).encode())
        conn.shutdown(socket.SHUT_WR)
        return receive(conn)


def receive(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
