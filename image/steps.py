"""Progress of a long job: each step runs in `Steps.step()`, which logs `[n/total] name`, times it, and on
failure raises StepFailed naming the step (and, through the cause, the command that failed).
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("image")


class StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException):
        self.step = step
        super().__init__(f"step '{step}' failed: {cause}")


class Steps:
    """Numbered, timed steps of one job; `summary()` gives the one-line account at the end."""

    def __init__(self, job: str, total: int):
        self.job, self.total = job, total
        self.times: dict[str, float] = {}
        self.started = time.monotonic()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        number = len(self.times) + 1
        log.info("[%d/%d] %s ...", number, self.total, name)
        start = time.monotonic()
        try:
            yield
        except Exception as e:
            log.error("[%d/%d] %s failed after %.1f s", number, self.total, name, time.monotonic() - start)
            raise StepFailed(name, e) from e
        self.times[name] = time.monotonic() - start
        log.info("[%d/%d] %s: done in %.1f s", number, self.total, name, self.times[name])

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self, outcome: str) -> str:
        slowest = sorted(self.times.items(), key=lambda item: -item[1])[:3]
        detail = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in slowest)
        return f"{self.job}: {outcome} in {self.elapsed:.0f} s ({len(self.times)} steps; slowest: {detail})"
