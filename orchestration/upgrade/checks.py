"""A router's condition around an upgrade: a Snapshot (health, nftables ruleset without counters, DHCP
leases, services, package versions, last apply) read through its transport, the pre-checks that decide
whether it may be upgraded (the repository's Release dates among them), and the post-checks that compare
the snapshots before and after.
"""

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from vr import contract

from orchestration.upgrade import apt
from vrpipe.errors import VrpipeError

SERVICES = ("dnsmasq.service", "haproxy.service", "vr-metadata.service", "ssh.service")
LEASES = contract.LEASES_FILE
APPLY_LOG = contract.APPLY_LOG
# The router's state before an upgrade, kept on the router until the upgrade (or its rollback) passes its
# post-checks: while it is there, the last upgrade did not end well and the next run checks against it.
GOOD_SNAPSHOT = "/var/lib/vr/upgrade/last-good.json"
EXPIRY_WARNING = timedelta(days=2)  # a plan warns when a Release's Valid-Until is nearer than this


class CheckFailed(VrpipeError):
    """A router program answered with something other than success; the message says which and why."""


@dataclass(frozen=True)
class Snapshot:
    health: dict[str, Any]
    ruleset: str  # `nft -s list table inet vr`: the rules without counter values
    leases: frozenset[tuple[str, str]]  # (mac, ip) pairs dnsmasq has handed out
    active: frozenset[str]  # the SERVICES that run
    versions: dict[str, str]  # package -> installed version
    last_apply: str  # the last line of the engine's apply log

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "leases": sorted(self.leases), "active": sorted(self.active)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Snapshot":
        leases = frozenset(tuple(lease) for lease in data["leases"])
        return cls(**{**data, "leases": leases, "active": frozenset(data["active"])})


class RouterCalls:
    """Router programs through `execute(argv) -> (status, stdout)` (the router's transport)."""

    def __init__(self, name: str, execute: Callable[[Sequence[str]], tuple[int, str]]):
        self.name, self._execute = name, execute

    def status(self, argv: Sequence[str]) -> tuple[int, str]:
        return self._execute(argv)

    def output(self, argv: Sequence[str], what: str) -> str:
        status, out = self._execute(argv)
        if status != 0:
            detail = "; ".join(apt.problems(out)[:2]) or f"exit status {status}"
            raise CheckFailed(f"{what} failed: {detail}")
        return out

    def read(self, path: str) -> str:
        """A file's text, or "" when it does not exist."""
        status, out = self._execute(["cat", path])
        return out if status == 0 else ""


def take_snapshot(router: RouterCalls, packages: Iterable[str]) -> Snapshot:
    health = _health(router)
    ruleset = router.output(["nft", "-s", "list", "table", "inet", "vr"], "listing the nftables table")
    _, active = router.status(["systemctl", "is-active", *SERVICES])
    states = active.split()
    return Snapshot(
        health=health,
        ruleset=ruleset,
        leases=parse_leases(router.read(LEASES)),
        active=frozenset(s for s, state in zip(SERVICES, states, strict=False) if state == "active"),
        versions=installed_versions(router, packages),
        last_apply=router.read(APPLY_LOG).strip().rsplit("\n", 1)[-1],
    )


def keep_good(router: RouterCalls, copy: Callable[[str, str], None], snapshot: Snapshot) -> None:
    """Keep snapshot on the router as its last good state (copy(text, path) writes a file there)."""
    router.output(["mkdir", "-p", GOOD_SNAPSHOT.rsplit("/", 1)[0]], "making the snapshot directory")
    copy(json.dumps(snapshot.to_json()), GOOD_SNAPSHOT)


def last_good(router: RouterCalls) -> Snapshot | None:
    """The snapshot an upgrade that did not end well left on the router, or None."""
    text = router.read(GOOD_SNAPSHOT)
    try:
        return Snapshot.from_json(json.loads(text)) if text else None
    except (ValueError, KeyError, TypeError):
        raise CheckFailed(f"{GOOD_SNAPSHOT} on the router is damaged: remove it after checking the router") from None


def installed_versions(router: RouterCalls, packages: Iterable[str]) -> dict[str, str]:
    """{package: version} as dpkg has them on the router (see apt.parse_versions)."""
    return apt.parse_versions(router.status(apt.versions_query(packages))[1])


def _health(router: RouterCalls) -> dict[str, Any]:
    out = router.output([contract.command("vr-health")], "vr-health")
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise CheckFailed(f"vr-health printed no JSON: {out.strip()[:200]}") from None


def parse_leases(text: str) -> frozenset[tuple[str, str]]:
    """dnsmasq's lease file: `expiry mac ip hostname client-id` per line."""
    return frozenset((w[1], w[2]) for w in (line.split() for line in text.splitlines()) if len(w) >= 3)


def free_mib(router: RouterCalls, path: str = "/var") -> int:
    out = router.output(["df", "-Pk", path], f"df {path}")
    return int(out.strip().splitlines()[-1].split()[3]) // 1024


def dpkg_pending(router: RouterCalls) -> str:
    """What `dpkg --audit` reports (half-installed or half-configured packages); "" when all is well."""
    return router.output(["dpkg", "--audit"], "dpkg --audit").strip()


def health_problems(health: Mapping[str, Any]) -> list[str]:
    if health.get("ok"):
        return []
    return [f"vr-health not ok: {'; '.join(health.get('problems', [])) or 'no reason given'}"]


def pre_check_problems(snapshot: Snapshot, free: int, min_free: int) -> list[str]:
    problems = health_problems(snapshot.health)
    if free < min_free:
        problems.append(f"only {free} MiB free on /var, {min_free} MiB needed")
    return problems


def rollback_problem(where: str, release: apt.Release, newer: datetime) -> str:
    return (
        f"{where}: its Release is dated {release.date:%Y-%m-%d %H:%M:%S} UTC, older than the one of "
        f"{newer:%Y-%m-%d %H:%M:%S} UTC seen before: refused (an older copy of the repository?)"
    )


def expiry_warning(where: str, release: apt.Release, now: datetime) -> str | None:
    """A warning when the Release's signature runs out within EXPIRY_WARNING, else None."""
    if release.valid_until is None or release.valid_until - now >= EXPIRY_WARNING:
        return None
    hours = (release.valid_until - now).total_seconds() / 3600
    return (
        f"{where}: its Release is valid only until {release.valid_until:%Y-%m-%d %H:%M} UTC ({hours:.0f} hours): "
        "refresh its signature (invoke publish-repo --refresh)"
    )


def post_check_problems(before: Snapshot, after: Snapshot, expected: Mapping[str, str]) -> list[str]:
    """What differs after an upgrade (or a rollback) that should not: `expected` are the package
    versions it should have left installed."""
    problems = health_problems(after.health)
    wrong = {p: after.versions.get(p, "not installed") for p, v in expected.items() if after.versions.get(p) != v}
    if wrong:
        text = ", ".join(f"{p} is {v}, not {expected[p]}" for p, v in wrong.items())
        problems.append(f"versions not as planned: {text}")
    stopped = sorted(before.active - after.active)
    if stopped:
        problems.append(f"no longer active: {', '.join(stopped)}")
    if same_ruleset(after.ruleset) != same_ruleset(before.ruleset):
        problems.append("the nftables ruleset changed")
    lost = sorted(before.leases - after.leases)
    if lost:
        problems.append(f"DHCP leases lost: {', '.join(ip for _, ip in lost)}")
    engine = expected.get(contract.ENGINE_PACKAGE)
    if engine and after.health.get("version") != engine:
        problems.append(f"vr-health reports version {after.health.get('version')}, not {engine}")
    if engine and engine != before.versions.get(contract.ENGINE_PACKAGE) and not reapplied(after.last_apply, engine):
        problems.append(f"the persisted state was not re-applied by vr-scripts {engine}")
    return problems


REBOOT_FLAG = "/run/reboot-required"  # Debian's: written by the kernel's, libc's (and our) maintainer scripts


def reboot_reasons(router: RouterCalls) -> list[str]:
    """Why the router needs a reboot by Debian's own account: the packages in /run/reboot-required.pkgs
    ([] when /run/reboot-required is not there)."""
    if router.status(["test", "-e", REBOOT_FLAG])[0] != 0:
        return []
    return sorted(set(router.read(f"{REBOOT_FLAG}.pkgs").split())) or ["(no package named)"]


def restart_stale(router: RouterCalls) -> dict[str, Any] | None:
    """Run vr-restart-stale on the router: its JSON report, or None when the router's vr-scripts predates it
    (a rollback to an old version)."""
    status, out = router.status([contract.command("vr-restart-stale")])
    if status == 127:
        return None
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise CheckFailed(f"vr-restart-stale printed no JSON (exit status {status}): {out.strip()[:200]}") from None


def stale_problems(report: Mapping[str, Any]) -> list[str]:
    """What the post-check refuses: a unit whose renewal failed, and a listed service still running old code
    after it (other units still running old code are a reboot's job, reported but not refused)."""
    problems = [f"{u['unit']}: {u['action']} failed: {u['error']}" for u in report["units"] if not u["ok"]]
    for process in report["still_old"]:
        if process["unit"] in SERVICES:
            files = ", ".join(process["files"])
            problems.append(f"{process['unit']} still runs old code ({process['command']}[{process['pid']}]: {files})")
    return problems


def reapplied(log_line: str, version: str) -> bool:
    """True when the apply log's line records a successful re-apply by this engine version."""
    _, _, text = log_line.partition(" {")
    try:
        entry = json.loads("{" + text)
    except json.JSONDecodeError:
        return False
    return entry.get("ok") is True and entry.get("kind") == "reapply" and entry.get("version") == version


ELEMENTS = re.compile(r"elements = \{(.*?)\}", re.S)


def same_ruleset(listing: str) -> str:
    """A ruleset listing with each set's elements sorted: nft lists them in the order they went in, and an
    element-level update adds them in another order than a whole load of the same state does."""
    def sorted_elements(found: re.Match[str]) -> str:
        elements = sorted(e.strip() for e in found.group(1).replace("\n", " ").split(",") if e.strip())
        return "elements = { " + ", ".join(elements) + " }"

    return ELEMENTS.sub(sorted_elements, listing)
