"""The order of a fleet upgrade: a canary router alone first, then batches (a count or a percentage of
the rest) upgraded in parallel; a failure budget for routers that could not be upgraded, and a stop at the
first router whose new version failed (rolled back). Routers the rollout does not reach stay as they are.
"""

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from orchestration.fleet import for_each
from vrpipe.errors import SettingsError, VrpipeError, shown

BATCH = re.compile(r"^(?P<size>[1-9][0-9]*)(?P<percent>%?)$")
# A router that got the new version and failed with it: the version is suspect, nobody else gets it.
STOPS_ROLLOUT = ("rolled-back", "rollback-failed")
# Outcomes that are no failure at all.
SUCCESS = ("upgraded", "up-to-date", "planned", "rebooted")


class Outcome(Protocol):
    """What the rollout needs of one router's outcome (UpgradeOutcome, RebootOutcome)."""

    @property
    def name(self) -> str: ...

    @property
    def status(self) -> str: ...

    def line(self) -> str: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


@dataclass(frozen=True)
class RolloutPolicy:
    canary: str | None = None  # None: the first router named
    batch: str = "1"  # routers per batch after the canary: a count ("5") or a percentage ("25%")
    failure_budget: int = 0  # failed routers tolerated before the rollout stops

    def __post_init__(self) -> None:
        found = BATCH.match(self.batch)
        if not found or (found["percent"] and int(found["size"]) > 100):
            raise SettingsError(f"batch {shown(self.batch)} must be a count like 5 or a percentage like 25%")
        if self.failure_budget < 0:
            raise SettingsError(f"failure budget {self.failure_budget} must not be negative")

    def batch_size(self, remaining: int) -> int:
        found = BATCH.match(self.batch)
        assert found  # checked in __post_init__
        size = int(found["size"])
        return max(1, math.ceil(remaining * size / 100)) if found["percent"] else size


def waves(names: Iterable[str], policy: RolloutPolicy) -> list[list[str]]:
    """[[canary], batch, batch, ...] over the names, each name once, in the order given."""
    names = list(dict.fromkeys(names))
    if not names:
        return []
    canary = policy.canary or names[0]
    if canary not in names:
        raise SettingsError(f"canary {shown(canary)} is not one of the routers to upgrade")
    rest = [n for n in names if n != canary]
    size = policy.batch_size(len(rest)) if rest else 1
    return [[canary], *(rest[i : i + size] for i in range(0, len(rest), size))]


def stop_reason(outcomes: Iterable[Outcome], policy: RolloutPolicy, canary: str) -> str | None:
    """Why the rollout must not go on after these outcomes, or None."""
    failed = [o for o in outcomes if o.status not in SUCCESS]
    bad_version = [o.name for o in failed if o.status in STOPS_ROLLOUT]
    if bad_version:
        return f"the new version failed on {', '.join(bad_version)}"
    if any(o.name == canary for o in failed):
        return f"the canary {canary} failed"
    if len(failed) > policy.failure_budget:
        routers = "1 router" if len(failed) == 1 else f"{len(failed)} routers"
        return f"{routers} failed, more than the failure budget of {policy.failure_budget}"
    return None


def roll_out(
    names: Sequence[str],
    policy: RolloutPolicy,
    upgrade_one: Callable[[str], OutcomeT],
    make_outcome: Callable[[str, str, str], OutcomeT],
    progress: Callable[[str], None],
    finished: Callable[[OutcomeT], None] = lambda outcome: None,
) -> tuple[list[OutcomeT], str | None]:
    """Upgrade wave after wave with upgrade_one(name) -> outcome; returns (outcomes in the order of names,
    stop reason or None). An exception from upgrade_one (say, the router's lock is held by another vrpipe)
    is that router's `failed` outcome, counted by the budget like any other. Routers after a stop get
    `not-reached`. make_outcome(name, status, error) builds those two; finished(outcome) is called as each
    router the rollout reached is done."""
    plan = waves(names, policy)
    outcomes: dict[str, OutcomeT] = {}
    reason: str | None = None
    total = sum(map(len, plan))

    def one(name: str) -> None:
        try:
            outcome = upgrade_one(name)
        except Exception as err:  # noqa: BLE001 - whatever it was, it is this router's failure
            outcome = make_outcome(name, "failed", failure_text(err))
        outcomes[name] = outcome
        progress(f"[{len(outcomes)}/{total}] {outcome.line()}")
        finished(outcome)

    for wave in plan:
        if reason:
            outcomes.update({name: make_outcome(name, "not-reached", "") for name in wave})
            continue
        for_each(wave, one, len(wave))
        reason = stop_reason(outcomes.values(), policy, plan[0][0])
    return [outcomes[name] for name in dict.fromkeys(names)], reason


def failure_text(err: Exception) -> str:
    """An operator's error says what is wrong by itself; anything else is a bug, named by its type."""
    return str(err) if isinstance(err, VrpipeError) else f"{type(err).__name__}: {err}"
