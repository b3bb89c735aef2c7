"""`vrpipe reboot`: reboots routers (through their deployer: stop, boot, full replay of their state) in the
order of a rollout, the first router alone, then batches; each router must pass the same gates before the
next batch starts: ready, its state re-applied, vr-health ok, the services that ran running again and no
DHCP lease lost, within a timeout. A router that fails a gate stops the rollout. A new kernel is booted once
as a trial (the template's vr-kernel): once the router passed the gates it becomes the default; a router that
came back on its previous kernel (the new one failed to boot) fails. What Debian's /run/reboot-required says
afterwards is recorded (`vrpipe list` shows it).
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestration.manager import Manager
from orchestration.upgrade import apt, checks
from orchestration.upgrade.records import record
from orchestration.upgrade.rollout import RolloutPolicy, roll_out

HEALTH_POLL = 1.0
KERNEL_TRIAL = "/usr/local/sbin/vr-kernel"  # put there by the template (image/files/vr-kernel)


@dataclass(frozen=True)
class RebootOutcome:
    """status: rebooted, failed (a gate failed: the rollout stops), not-reached."""

    name: str
    status: str
    error: str = ""
    seconds: float = 0.0
    reboot_required: tuple[str, ...] = ()
    kernel: str = ""  # the running kernel's release, and what became of a new kernel's trial

    @property
    def ok(self) -> bool:
        return self.status == "rebooted"

    def line(self) -> str:
        still = f"; still reboot required ({', '.join(self.reboot_required)})" if self.reboot_required else ""
        error = f": {self.error}" if self.error else ""
        kernel = f"; kernel {self.kernel}" if self.kernel else ""
        return f"{self.name}: {self.status}{error}{kernel}{still} ({self.seconds:.1f}s)"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "error": self.error or None,
                "seconds": round(self.seconds, 2), "reboot_required": list(self.reboot_required),
                "kernel": self.kernel or None}  # fmt: skip


def reboot_one(manager: Manager, name: str, timeout: float) -> RebootOutcome:
    started = time.monotonic()
    router = checks.RouterCalls(name, manager.transport(name).execute)
    before = checks.take_snapshot(router, apt.OUR_PACKAGES)
    manager.stop(name)
    replay = manager.start(name)
    if not replay.ok:
        error = f"its state was not re-applied: {replay.error}"
        return RebootOutcome(name, "failed", error, time.monotonic() - started)
    router = checks.RouterCalls(name, manager.transport(name).execute)
    problems = _gates(router, before, started + timeout)
    kernel = ""
    if not problems:
        kernel, trial_failed = _settle_kernel(router)
        problems += [trial_failed] if trial_failed else []
    reasons = tuple(checks.reboot_reasons(router))
    record(manager.store, name, checks.installed_versions(router, apt.OUR_PACKAGES), reboot_required=reasons)
    status = "failed" if problems else "rebooted"
    return RebootOutcome(name, status, "; ".join(problems), time.monotonic() - started, reasons, kernel)


def _settle_kernel(router: checks.RouterCalls) -> tuple[str, str]:
    """After a healthy boot: a new kernel on its trial boot becomes the default. Returns (the kernel, as the
    outcome shows it; the problem when the trial failed and the router came back on its previous kernel)."""
    status, out = router.status([KERNEL_TRIAL, "commit"])
    if status == 127:
        return "", ""  # a template from before the trial boots
    try:
        said = json.loads(out)
    except json.JSONDecodeError:
        raise checks.CheckFailed(f"vr-kernel commit failed (exit status {status}): {out.strip()[:200]}") from None
    release, trial = said["release"], said["kernel"]
    if trial == "fell-back":
        return release, f"the new kernel did not come up: the router booted its previous kernel {release} by itself"
    return (f"{release} (new, now the default)" if trial == "committed" else release), ""


def _gates(router: checks.RouterCalls, before: checks.Snapshot, deadline: float) -> list[str]:
    """What is wrong with the router after its reboot, polled until nothing is or the deadline passes."""
    while True:
        after = checks.take_snapshot(router, apt.OUR_PACKAGES)
        problems = checks.health_problems(after.health)
        stopped = sorted(before.active - after.active)
        problems += [f"not running again: {', '.join(stopped)}"] if stopped else []
        lost = sorted(ip for _, ip in before.leases - after.leases)
        problems += [f"DHCP leases lost: {', '.join(lost)}"] if lost else []
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(HEALTH_POLL)


def reboot_fleet(
    manager: Manager, names: list[str], batch: str, timeout: float, progress: Callable[[str], None]
) -> tuple[list[RebootOutcome], str | None]:
    """Reboot names, the first alone, then `batch` at a time (N or N%); returns the outcomes and why the
    rollout stopped (None when it did not)."""

    def make_outcome(name: str, status: str, error: str) -> RebootOutcome:
        return RebootOutcome(name, status, error)

    def one(name: str) -> RebootOutcome:
        return reboot_one(manager, name, timeout)  # the replay at boot takes the router's store lock itself

    return roll_out(names, RolloutPolicy(batch=batch), one, make_outcome, progress)
