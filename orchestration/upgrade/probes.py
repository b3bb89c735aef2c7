"""An upgrade watched while it runs: vr-probe on the router probes what it serves (load balancers, port
forwards, DNS, DHCP, metadata) and follows its conntrack table from before the install until the restarts
are done; the counts go into the router's outcome, and a target unanswered for longer than the policy allows
(or a conntrack table flushed more often) fails the upgrade. The policy speaks of outages rather than of
failed probes: an upgrade of vr-scripts restarts vr-metadata by design, which refuses connections for up to
a second or more.
"""

import json
from dataclasses import dataclass
from typing import Any

from vr import contract

from orchestration.upgrade.checks import CheckFailed, RouterCalls
from vrpipe.errors import SettingsError

NOT_THERE = 127  # the router's vr-scripts predates vr-probe


@dataclass(frozen=True)
class ProbePolicy:
    interval: float = 0.2  # seconds between probe rounds; 0 turns probing off
    # seconds any one target may stay unanswered during one router's upgrade: vr-metadata's restart by
    # vr-scripts' postinst took 0.4-1.4 s with 5 routers upgrading at once on a loaded 2-core machine
    outage: float = 2.0
    flushes: int = 0  # conntrack flushes tolerated during one router's upgrade
    # seconds one probe waits: not the interval, since a router busy installing (a TCG VM most of all)
    # answers in more than 0.2 s while it still serves; a slower answer counts as none
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.interval and not 0.05 <= self.interval <= 10:
            raise SettingsError(f"probe interval {self.interval}: give 0.05 to 10 seconds, or 0 for no probes")
        if self.outage < 0 or self.flushes < 0:
            raise SettingsError(f"probe outage {self.outage} and flushes {self.flushes} must not be negative")
        if not 0.05 <= self.timeout <= 30:
            raise SettingsError(f"probe timeout {self.timeout}: give 0.05 to 30 seconds")


@dataclass(frozen=True)
class ProbeCounts:
    """What vr-probe counted during one router's upgrade."""

    rounds: int
    failures: int
    failed: dict[str, int]  # target -> failed probes, for the targets that failed at least once
    outages: dict[str, float]  # target -> its longest outage in seconds, for the same targets
    errors: dict[str, str]  # target -> its first error
    skipped: dict[str, str]  # targets that did not answer before the upgrade: not watched
    conntrack: dict[str, int] | None  # first, low, high, last entries and flushes

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> "ProbeCounts":
        targets = report["targets"]
        return cls(
            rounds=report["rounds"],
            failures=report["failures"],
            failed={name: t["failed"] for name, t in targets.items() if t["failed"]},
            outages={name: t["longest_outage"] for name, t in targets.items() if t["failed"]},
            errors={name: t["first_error"] for name, t in targets.items() if t["failed"]},
            skipped=report["skipped"],
            conntrack=report["conntrack"],
        )

    def text(self) -> str:
        failed = ", ".join(f"{name} {n}, {self.outages[name]:.1f}s" for name, n in self.failed.items())
        parts = [f"probes: {self.rounds} rounds, {self.failures} failed" + (f" ({failed})" if failed else "")]
        if self.conntrack:
            c = self.conntrack
            flushed = f", {c['flushes']} flush{'es' if c['flushes'] != 1 else ''}" if c["flushes"] else ""
            parts.append(f"conntrack {c['first']} -> {c['last']} entries (low {c['low']}{flushed})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds, "failures": self.failures, "failed": self.failed, "outages": self.outages,
            "errors": self.errors,
            "skipped": self.skipped, "conntrack": self.conntrack,
        }  # fmt: skip


def start(router: RouterCalls, policy: ProbePolicy) -> bool:
    """Leave vr-probe watching on the router; False when its vr-scripts has no vr-probe."""
    argv = [contract.command("vr-probe"), "--start", "--interval", str(policy.interval)]
    argv += ["--timeout", str(policy.timeout)]
    status, out = router.status(argv)
    if status == NOT_THERE:
        return False
    if status != 0:
        raise CheckFailed(f"vr-probe --start failed (exit status {status}): {out.strip()[:200]}")
    return True


def stop(router: RouterCalls) -> ProbeCounts:
    out = router.output([contract.command("vr-probe"), "--stop"], "vr-probe --stop")
    try:
        return ProbeCounts.from_report(json.loads(out))
    except (ValueError, KeyError, TypeError):
        raise CheckFailed(f"vr-probe --stop printed no report: {out.strip()[:200]}") from None


def problems(counts: ProbeCounts, policy: ProbePolicy) -> list[str]:
    """The post-check's word on the probes: targets down for longer than the policy tolerates, and more
    conntrack flushes."""
    found = [
        f"{name} unanswered for {seconds:.1f}s during the upgrade, more than the {policy.outage:g}s allowed "
        f"({counts.failed[name]} probes failed: {counts.errors[name]})"
        for name, seconds in counts.outages.items()
        if seconds > policy.outage
    ]
    flushes = counts.conntrack["flushes"] if counts.conntrack else 0
    if flushes > policy.flushes:
        found.append(f"the conntrack table was flushed {flushes}x during the upgrade ({policy.flushes} allowed)")
    return found
