"""Rolling operations on a redundant pair (`vrpipe reboot`/`upgrade` of both members): the BACKUP first,
then a handover (the MASTER gives mastership away with `vr-vrrp handover` and the BACKUP, synced, takes
it), then the old MASTER; through the same rollout (first alone, stop on a failure) and per-router gates
as single routers. Also how the manager reads a member's VRRP role, and which of the routers named to
`vrpipe upgrade`/`reboot` are pairs.
"""

import contextlib
import json
import time
from collections.abc import Callable, Sequence

from vr import contract

from orchestration.manager import Manager
from orchestration.upgrade.inplace import UpgradeConfig, UpgradeOutcome, upgrade_fleet
from orchestration.upgrade.reboot import RebootOutcome, reboot_one
from orchestration.upgrade.rollout import OutcomeT, RolloutPolicy, roll_out
from vrpipe.errors import VrpipeError

HANDOVER_TIMEOUT = 30.0
POLL = 0.2


def role(manager: Manager, member: str) -> str:
    """MASTER, BACKUP, or `down` when the member does not answer."""
    with contextlib.suppress(Exception):  # cut off, stopped, booting: all of that is `down` here
        status, out = manager.transport(member).execute([contract.command("vr-vrrp"), "status"], timeout=5)
        if status == 0:
            return str(json.loads(out)["role"])
    return "down"


def split(manager: Manager, names: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The single routers among these names, in order, and the pairs (named by the pair's or a member's
    name), each once."""
    singles: list[str] = []
    found: list[tuple[str, str]] = []
    for name in names:
        pair = manager.store.pair(name) or manager.store.pair(manager.store.router(name).pair or "")
        if pair is None:
            singles.append(name)
        elif pair.members not in found:
            found.append(pair.members)
    return singles, found


def roles(manager: Manager, members: tuple[str, str]) -> dict[str, str]:
    return {member: role(manager, member) for member in members}


def wait_for_master(
    manager: Manager, members: tuple[str, str], timeout: float = HANDOVER_TIMEOUT, other_than: str | None = None
) -> str:
    """The member that is MASTER once exactly one is (and it is not `other_than`)."""
    deadline = time.monotonic() + timeout
    while True:
        now = roles(manager, members)
        masters = [m for m, r in now.items() if r == "MASTER"]
        if len(masters) == 1 and masters[0] != other_than:
            return masters[0]
        if time.monotonic() > deadline:
            raise VrpipeError(f"pair {' and '.join(members)}: no single MASTER within {timeout:.0f}s ({now})")
        time.sleep(POLL)


def hand_over(manager: Manager, members: tuple[str, str], master: str) -> str:
    """Make the other member MASTER: `master` gives mastership away until the other has it, then is
    eligible again (as BACKUP: no preemption). Returns the new MASTER."""
    vrrp = contract.command("vr-vrrp")
    manager.transport(master).execute([vrrp, "handover"])
    try:
        return wait_for_master(manager, members, other_than=master)
    finally:
        manager.transport(master).execute([vrrp, "resume"])


def rolling(
    manager: Manager,
    members: tuple[str, str],
    operate: Callable[[str], OutcomeT],
    make_outcome: Callable[[str, str, str], OutcomeT],
    progress: Callable[[str], None],
) -> tuple[list[OutcomeT], str | None]:
    """`operate` on the BACKUP, then hand over, then `operate` on the old MASTER; the outcomes and why the
    rollout stopped (None when it did not)."""
    master = wait_for_master(manager, members)
    backup = next(m for m in members if m != master)

    def one(name: str) -> OutcomeT:
        if name == master:
            progress(f"{master}: handing over to {backup}")
            hand_over(manager, members, master)
        return operate(name)

    return roll_out([backup, master], RolloutPolicy(batch="1"), one, make_outcome, progress)


def reboot_pair(
    manager: Manager, members: tuple[str, str], timeout: float, progress: Callable[[str], None]
) -> tuple[list[RebootOutcome], str | None]:
    """A rolling reboot of a pair, each member through `reboot_one`'s gates."""

    def make_outcome(name: str, status: str, error: str) -> RebootOutcome:
        return RebootOutcome(name, status, error)

    return rolling(manager, members, lambda name: reboot_one(manager, name, timeout), make_outcome, progress)


def upgrade_pair(
    manager: Manager, members: tuple[str, str], config: UpgradeConfig, progress: Callable[[str], None]
) -> tuple[list[UpgradeOutcome], str | None]:
    """A rolling in-place upgrade of a pair, each member with the checks and rollback of a single router
    (its packages' maintainer scripts then restart keepalived and conntrackd only on a BACKUP)."""

    def one(name: str) -> UpgradeOutcome:  # a rollout of one: the pair's rollout says how it went
        return upgrade_fleet(manager, [name], config, RolloutPolicy()).outcomes[0]

    def make_outcome(name: str, status: str, error: str) -> UpgradeOutcome:
        return UpgradeOutcome(name, status, error=error)

    return rolling(manager, members, one, make_outcome, progress)
