"""The one way the host side logs and shows progress: `setup()` once per entry point (one format for the
whole run); `Steps` for long jobs: each step logs `[n/total] name`, is timed, and on failure raises
StepFailed naming the step, and `summary()` gives the job's one-line account; `progress()` for work on
many routers. On a terminal both draw a progress bar (tqdm) with the log lines above it; otherwise they
print plain lines.
"""

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

from .errors import VrpipeError

log = logging.getLogger("vrpipe")


def _on_terminal() -> bool:
    return sys.stderr.isatty()


class _AboveTheBar(logging.StreamHandler):
    """Writes each log line through tqdm, so that a progress bar on the terminal stays whole."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def setup(verbose: bool = False, level: int = logging.INFO) -> None:
    """Log to stderr in one format, `part: message`: DEBUG with verbose, `level` otherwise."""
    handler = _AboveTheBar() if _on_terminal() else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else level, handlers=[handler], force=True)
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per schema migration otherwise


def _bar(total: int, label: str) -> tqdm | None:
    if not _on_terminal() or total < 2:
        return None
    return tqdm(total=total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[str], None]]:
    """Yields `done(message)`, called once per finished item: a bar on a terminal, a line otherwise."""
    bar = _bar(total, label)

    def done(message: str) -> None:
        if bar is None:
            print(f"{label}: {message}", file=sys.stderr, flush=True)
        else:
            bar.write(f"{label}: {message}", file=sys.stderr)
            bar.update(1)

    try:
        yield done
    finally:
        if bar is not None:
            bar.close()


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
        self.bar = _bar(total, job)

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
        if self.bar is not None:
            self.bar.update(1)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self, outcome: str) -> str:
        if self.bar is not None:
            self.bar.close()
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
