"""The resident engine (vr-engine): keeps the persisted state in memory and applies the documents that
vr-apply and vr-cmd hand it over a Unix socket (their side: vr/resident.py), so one command no longer pays
for re-reading the whole state and importing the engine; it answers vr-health so too (a manager asks every
router every 10 s). When it does not answer, or runs another engine version, they do the work in their own
process; either way one apply runs at a time (the apply lock) with the same guarantees.
"""

import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .layout import Layout
from .resident import receive

if TYPE_CHECKING:
    from .model import RouterState
    from .services import Services

class Memory:
    """The state as last read or applied here, trusted only while the persisted files are the ones it saw
    (any apply in another process, such as a re-apply at boot, writes them anew)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.state: RouterState | None = None
        self.seen: list[tuple[int, int, int] | None] | None = None

    def _files(self) -> list[tuple[int, int, int] | None]:
        stats: list[tuple[int, int, int] | None] = []
        for path in (self.layout.state, self.layout.journal):
            try:
                info = path.stat()
                stats.append((info.st_ino, info.st_size, info.st_mtime_ns))
            except FileNotFoundError:
                stats.append(None)
        return stats

    def read(self) -> "RouterState":
        from . import persist

        seen = self._files()  # before reading: files replaced meanwhile then differ at the next read
        if self.state is None or self.seen != seen:
            self.state, self.seen = persist.read(self.layout), seen
        return self.state

    def keep(self, state: "RouterState") -> None:
        """After an apply here persisted `state`."""
        self.state, self.seen = state, self._files()


def serve(layout: Layout, services: "Services", log: Callable[[Layout, dict[str, Any]], None]) -> NoReturn:
    """Answer requests one at a time until stopped; `log(result)` records each apply."""
    from .apply import apply_document
    from .health import Memo, report

    memory, memo = Memory(layout), Memo()
    layout.engine_socket.parent.mkdir(parents=True, exist_ok=True)
    layout.engine_socket.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(layout.engine_socket))
        os.chmod(layout.engine_socket, 0o600)
        server.listen(16)
        memory.read()  # load while nobody waits
        while True:
            conn, _ = server.accept()
            _reap()
            with conn:
                try:
                    request = json.loads(receive(conn))
                except (OSError, ValueError):
                    continue  # a client gone or not one of ours: nothing was applied
                if not isinstance(request, dict) or request.get("version") != __version__:
                    reply: dict[str, Any] = {"refused": f"this engine is version {__version__}"}
                elif request.get("health"):
                    reply = {**report(layout, services, memory.read(), memo), "resident": True}
                else:
                    reply = {**apply_document(request.get("document"), layout, services, memory), "resident": True}
                    log(layout, reply)
                with contextlib.suppress(OSError):  # the client went away; the apply log has the result
                    conn.sendall(json.dumps(reply).encode())


def _reap() -> None:
    """Collect daemons this process started that have exited since (between applies, so no subprocess
    of an apply is waited for here)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
