"""The one way repo/ runs a program, and the timed, logged steps a publish is made of.

`run()` takes an argv list (never a shell string), logs it, checks the exit status and raises RepoError
with the program's own complaint; `step()` wraps one build step and logs how long it took.
"""

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("repo")


class RepoError(Exception):
    """Something in building, publishing or verifying the repository failed; the message says what."""


def run(
    argv: list[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (extra env added to ours), capture its output, and raise RepoError if it fails (and check)."""
    words = [str(a) for a in argv]
    log.debug("run: %s", " ".join(words))
    full_env = {**os.environ, **env} if env else None
    try:
        done = subprocess.run(words, env=full_env, cwd=cwd, input=input, capture_output=True, check=False)
    except FileNotFoundError as e:
        raise RepoError(f"{words[0]} is not installed (run ./bootstrap.sh)") from e
    if check and done.returncode != 0:
        complaint = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise RepoError(f"{' '.join(words)} failed with exit status {done.returncode}:\n{complaint}")
    return done


@contextmanager
def step(what: str) -> Iterator[None]:
    """Log the start and the duration of one step of a longer job."""
    log.info("%s ...", what)
    start = time.monotonic()
    yield
    log.info("%s: done in %.2f s", what, time.monotonic() - start)
