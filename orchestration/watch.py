"""`vrpipe watch`: asks every running router for its health on an interval, records each answer and its
time in the store, and marks a router unhealthy after a number of failed checks in a row (an answer with
a failed check, or no answer). Optionally recreates a router that turned unhealthy (off by default).
"""

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orchestration.commands import Query
from orchestration.manager import Manager
from orchestration.store import Health
from vrpipe.errors import SettingsError, VrpipeError, shown

ACTIONS = ("none", "recreate")


@dataclass(frozen=True)
class WatchOptions:
    interval: float = 10.0  # seconds from the start of one round of checks to the next
    unhealthy_after: int = 2  # failed checks in a row; with the interval, how soon a failure is known
    parallel: int = 16  # routers checked at a time
    timeout: float = 8.0  # seconds one check may take before it counts as failed
    action: str = "none"  # what to do with a router that turned unhealthy: none or recreate

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0:
            raise SettingsError(f"interval {self.interval} and timeout {self.timeout} must be above 0 seconds")
        if self.unhealthy_after < 1 or self.parallel < 1:
            raise SettingsError("--unhealthy-after and --parallel must be 1 or more")
        if self.action not in ACTIONS:
            raise SettingsError(f"unknown action {shown(self.action)}: use {' or '.join(ACTIONS)}")


@dataclass(frozen=True)
class Checked:
    """One router's check: its health now and the health it had before."""

    name: str
    before: str | None
    health: Health

    @property
    def changed(self) -> bool:
        return self.health.state != self.before


def verdict(report: dict[str, object]) -> tuple[bool, str | None]:
    """(ok, what is wrong) from a vr-health report."""
    if report.get("ok"):
        return True, None
    problems = report.get("problems")
    if isinstance(problems, list) and problems:
        return False, "; ".join(str(p) for p in problems)
    return False, str(report.get("error") or "unhealthy, no reason given")


class Watcher:
    def __init__(self, manager: Manager, options: WatchOptions, report: Callable[[str], None] = lambda m: None):
        self.manager, self.options, self.report = manager, options, report
        self.pool = ThreadPoolExecutor(max_workers=options.parallel)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def check(self, name: str) -> Checked:
        """Ask one router for its health and record the answer."""
        before = self.manager.store.router(name).health.state
        try:
            reply = self.manager.transport(name).run(Query.HEALTH.argv, timeout=self.options.timeout)
            ok, detail = verdict(json.loads(reply.out))
        except (VrpipeError, json.JSONDecodeError) as err:
            ok, detail = False, f"no health report: {err}"
        health = self.manager.store.record_health(name, ok, detail, self.options.unhealthy_after)
        checked = Checked(name, before, health)
        if checked.changed:
            self.report(f"{name}: {health.state}" + (f" ({detail})" if detail and not ok else ""))
            if health.state == "unhealthy" and self.options.action == "recreate":
                self._recreate(name)
        return checked

    def _recreate(self, name: str) -> None:
        self.report(f"{name}: recreating it (--action recreate)")
        try:
            self.manager.recreate(name, self.report)
        except VrpipeError as err:
            self.report(f"{name}: recreate failed: {err}")

    def round(self, names: Sequence[str] | None = None) -> list[Checked]:
        """One check of each running router (of `names`, or all), `parallel` at a time."""
        routers = [r.name for r in self.manager.store.routers() if r.status == "running"]
        chosen = [n for n in routers if names is None or n in names]
        return list(self.pool.map(self.check, chosen))

    def run(
        self, names: Sequence[str] | None = None, rounds: int | None = None, stop: threading.Event | None = None
    ) -> list[Checked]:
        """Rounds every `interval` seconds until `rounds` are done or `stop` is set; returns the last round."""
        stop = stop or threading.Event()
        last: list[Checked] = []
        done = 0
        while not stop.is_set() and (rounds is None or done < rounds):
            started = time.monotonic()
            last = self.round(names)
            done += 1
            if rounds is None or done < rounds:
                stop.wait(max(0.0, self.options.interval - (time.monotonic() - started)))
        return last
