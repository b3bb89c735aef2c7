"""The one way the host side logs: `setup()` once per entry point (one format for the whole run), and
`Steps` for long jobs: each step logs `[n/total] name`, is timed, and on failure raises StepFailed naming
the step; `summary()` gives the job's one-line account. A step inside another is numbered within it.
"""

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import VrpipeError

log = logging.getLogger("vrpipe")


def setup(verbose: bool = False, level: int = logging.INFO) -> None:
    """Log to stderr in one format, `part: message`: DEBUG with verbose, `level` otherwise."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else level,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


class StepFailed(VrpipeError):
    def __init__(self, step: str, cause: BaseException):
        self.step = step
        hint = cause.hint if isinstance(cause, VrpipeError) else ""
        super().__init__(f"step '{step}' failed: {cause}", hint)


class Steps:
    """Numbered, timed steps of one job (total: how many there will be, or 0 when not known)."""

    def __init__(self, job: str, total: int = 0, logger: logging.Logger = log):
        self.job, self.total, self.log = job, total, logger
        self.times: dict[str, float] = {}
        self.started = time.monotonic()

    def _label(self, number: int) -> str:
        return f"[{number}/{self.total}]" if self.total else f"[{number}]"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        label = self._label(len(self.times) + 1)
        self.log.info("%s %s ...", label, name)
        start = time.monotonic()
        try:
            yield
        except Exception as e:
            self.log.error("%s %s failed after %.1f s", label, name, time.monotonic() - start)
            raise StepFailed(name, e) from e
        self.times[name] = time.monotonic() - start
        self.log.info("%s %s: done in %.1f s", label, name, self.times[name])

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self, outcome: str) -> str:
        slowest = sorted(self.times.items(), key=lambda item: -item[1])[:3]
        detail = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest)
        return f"{self.job}: {outcome} in {self.elapsed:.1f} s ({len(self.times)} steps; slowest: {detail})"


@contextmanager
def step(what: str, logger: logging.Logger = log) -> Iterator[None]:
    """One timed step outside a numbered job (a publish's export, a package build)."""
    logger.info("%s ...", what)
    start = time.monotonic()
    yield
    logger.info("%s: done in %.2f s", what, time.monotonic() - start)
