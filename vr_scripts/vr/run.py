"""Every subprocess the engine starts goes through `run()`: an argv list (never a shell), checked, timed
and logged, with its stderr kept so a failure can say what the tool said.
"""

import logging
import subprocess
import time
from collections.abc import Sequence

log = logging.getLogger("vr")


class CommandFailed(Exception):
    def __init__(self, argv: Sequence[str], returncode: int | str, stderr: str) -> None:
        self.argv, self.returncode, self.stderr = argv, returncode, stderr.strip()
        outcome = "timed out" if returncode == "timeout" else f"exited with {returncode}"
        super().__init__(f"{argv[0]} {outcome}: {self.stderr[-2000:] or 'no message'}")


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
    """Run argv; return its stdout. Raise CommandFailed (with stderr) when it fails and check is set."""
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as expired:
        # A hung tool (say, a unit whose start waits on boot ordering) is a failure like any other.
        raise CommandFailed(argv, "timeout", f"no answer within {timeout}s") from expired
    log.debug("ran %s in %.3fs -> %d", argv, time.monotonic() - started, proc.returncode)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout


def succeeds(argv: Sequence[str], timeout: float = 60) -> bool:
    """Whether argv exits 0: for questions such as `systemctl is-active`, where failing is an answer."""
    return subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode == 0
