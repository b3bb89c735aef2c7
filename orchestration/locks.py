"""A fair lock between processes on one host (the per-router lock beside an SQLite store): waiters are
served in the order they came. Each waiter holds an flock on its own ticket file in the lock's folder;
the holder is the live ticket with the lowest number, so a process that lets go and asks again queues
behind those already waiting, and a killed waiter's ticket (no flock held any more) is swept away.
"""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

POLL = 0.02


class Timeout(Exception):
    """The lock stayed held by others past the timeout."""


@contextlib.contextmanager
def _ticket(folder: Path) -> Iterator[Path]:
    """A new ticket, flock held: numbered and made visible under the counter's flock, so that whoever draws
    a higher number afterwards already sees it (were it visible only later, the two would both hold the lock)."""
    with open(folder / ".counter", "a+") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        number = int(counter.read().strip() or 0) + 1
        counter.seek(0)
        counter.truncate()
        counter.write(f"{number}\n")
        counter.flush()
        mine = folder / f"{number:012d}.ticket"
        pending = folder / f".{number:012d}.{os.getpid()}"
        handle = open(pending, "w")  # noqa: SIM115 - held until the lock is let go
        # Locked before it is visible: nobody may take a ticket in the making for a dead one.
        fcntl.flock(handle, fcntl.LOCK_EX)
        pending.rename(mine)
    try:
        yield mine
    finally:
        mine.unlink(missing_ok=True)
        handle.close()


def _alive(ticket: Path) -> bool:
    """Whether the ticket's owner still holds it; a dead owner's ticket is removed."""
    try:
        with open(ticket) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except FileNotFoundError:
        return False
    ticket.unlink(missing_ok=True)
    return False


@contextlib.contextmanager
def fair_lock(folder: Path, timeout: float) -> Iterator[None]:
    """Hold the lock of `folder` (made if missing); raise Timeout after `timeout` seconds of waiting."""
    folder.mkdir(parents=True, exist_ok=True)
    with _ticket(folder) as mine:
        deadline = time.monotonic() + timeout
        while any(_alive(t) for t in sorted(folder.glob("*.ticket")) if t.name < mine.name):
            if time.monotonic() > deadline:
                raise Timeout(f"held by others for {timeout:.0f}s")
            time.sleep(POLL)
        yield
