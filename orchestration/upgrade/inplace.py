"""In-place upgrades of live routers through apt: for each router, pre-checks, a plan (the simulated upgrade
from our channels and Debian's security suite), the upgrade of exactly the planned versions, post-checks
against the router's state before, and a rollback to the versions it had when they fail; across the fleet,
a rollout (orchestration/upgrade_rollout.py) and a record per router in the store.
"""

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypedDict

from vr import contract

from orchestration.fleet import for_each
from orchestration.manager import Manager
from orchestration.transports import Transport, TransportError
from orchestration.upgrade import apt, checks, probes
from orchestration.upgrade.probes import ProbeCounts, ProbePolicy
from orchestration.upgrade.records import note_release, record
from orchestration.upgrade.rollout import SUCCESS, RolloutPolicy, roll_out
from vrpipe.errors import SettingsError, shown

log = logging.getLogger("vrpipe.upgrade")
DEBIAN_VERSION = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")
READ_PARALLEL = 8  # routers asked for their versions at once
PREVIOUS = "-previous"  # the repository keeps each channel's earlier versions there (repo/config.py)


def history(channel: str, keep: int) -> list[str]:
    """The suites of a channel's earlier versions, newest first, as the repository names them."""
    return [channel + PREVIOUS + (f"-{n}" if n > 1 else "") for n in range(1, keep)]
ROUTER_KEYRING = contract.ARCHIVE_KEYRING  # put there by the template


@dataclass(frozen=True)
class UpgradeConfig:
    """Where routers upgrade from, as they reach it. Our channels come with their -previous suites, from
    which a rollback takes the versions a router had; Debian's security suite is the router's release's
    unless `security` names one (None leaves it out). security_mirror: take it from our own repository
    when that serves the router's `<codename>-security` (`invoke mirror-security`, signed by our key),
    and from `security` only when it does not."""

    repo_url: str = "http://169.254.0.1:8080/"  # the management host on the control network
    channels: tuple[str, ...] = ("stable",)
    keyring: str = ROUTER_KEYRING
    security: apt.SecuritySource | None = apt.SecuritySource()
    security_mirror: bool = False
    min_free_mib: int = 64
    lock_timeout: int = 120  # seconds apt waits for another dpkg to finish
    packages: tuple[str, ...] = apt.OUR_PACKAGES  # the versions the store keeps per router
    to_version: str | None = None  # install this version of our packages (say, an older one) instead
    keep: int = 3  # versions of each channel the repository keeps (repo.keep): -previous, -previous-2, ...
    probes: ProbePolicy = ProbePolicy()  # what the router serves, watched while it upgrades
    ours: apt.AptSource = field(init=False)

    def __post_init__(self) -> None:
        if not self.channels:
            raise SettingsError("name at least one channel to upgrade from")
        if not 2 <= self.keep <= 10:
            raise SettingsError(f"keep {self.keep}: the repository keeps 2 to 10 versions of each channel")
        suites = tuple(s for c in self.channels for s in (c, *history(c, self.keep)))
        object.__setattr__(self, "ours", apt.AptSource(self.repo_url, suites, self.keyring))
        if self.min_free_mib < 0 or self.lock_timeout <= 0:
            raise SettingsError("min_free_mib must be >= 0 and lock_timeout > 0")
        if self.to_version is not None and not DEBIAN_VERSION.match(self.to_version):
            raise SettingsError(f"--to {shown(self.to_version)} is not a Debian version like 1.0.2")

    @property
    def needs_release(self) -> bool:
        """Whether the sources depend on the router's release (its VERSION_CODENAME)."""
        return self.security is not None and (self.security.suite is None or self.security_mirror)

    def mirror(self, codename: str) -> apt.AptSource:
        """Our repository's mirror of the release's security suite."""
        return apt.AptSource(self.repo_url, (f"{codename}-security",), self.keyring)

    def sources(self, codename: str = "", mirrored: bool = False) -> tuple[apt.AptSource, ...]:
        """The apt sources of a router of this release (codename, e.g. "trixie"); mirrored: our repository
        serves its security suite."""
        if not self.security:
            return (self.ours,)
        return (self.ours, self.mirror(codename) if mirrored else self.security.for_release(codename))


@dataclass(frozen=True)
class UpgradeOutcome:
    """What happened to one router. status: planned (dry run), up-to-date, upgraded, skipped (a pre-check
    failed; untouched), failed, rolled-back, rollback-failed, not-reached."""

    name: str
    status: str
    changes: tuple[apt.PackageChange, ...] = ()
    reboot_required: tuple[str, ...] = ()
    restarts: tuple[str, ...] = ()
    error: str = ""
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    probes: ProbeCounts | None = None  # what vr-probe counted while it upgraded

    @property
    def ok(self) -> bool:
        return self.status in SUCCESS

    def line(self) -> str:
        changes = ", ".join(map(str, self.changes)) or "no changes"
        extra = [f"reboot required ({', '.join(self.reboot_required)})"] if self.reboot_required else []
        extra += [f"restarts {', '.join(self.restarts)}"] if self.restarts else []
        extra += [self.probes.text()] if self.probes else []
        extra += [self.error] if self.error else []
        extra += [f"warning: {w}" for w in self.warnings]
        return f"{self.name}: {self.status}: {'; '.join([changes, *extra])} ({self.seconds:.1f}s)"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "changes": [c.to_json() for c in self.changes],
            "reboot_required": list(self.reboot_required),
            "restarts": list(self.restarts),
            "error": self.error or None,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 2),
            "versions": self.versions,
            "probes": self.probes.to_json() if self.probes else None,
        }


class Renewed(TypedDict, total=False):
    """What _restart_stale found, as fields of the router's UpgradeOutcome."""

    restarts: tuple[str, ...]
    reboot_required: tuple[str, ...]


class Failed(Exception):
    """Ends one router's upgrade with this status and message."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class RouterUpgrade:
    """One router's upgrade through its transport (`execute(argv, input=None) -> (status, stdout)`)."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        config: UpgradeConfig,
        note_release: Callable[[str, str, datetime], datetime | None],
    ):
        """note_release(url, channel, date) -> None, or the newer Release date seen before (refused)."""
        self.name, self.config = name, config
        self.transport, self.note_release = transport, note_release
        self.router = checks.RouterCalls(name, transport.execute)
        self.changes: tuple[apt.PackageChange, ...] = ()
        self.warnings: list[str] = []
        self.probed: ProbeCounts | None = None

    def run(self, dry_run: bool) -> UpgradeOutcome:
        started, stage = time.monotonic(), "pre-checks"
        try:
            before = self._prepare(dry_run)
            stage = "planning"
            outcome = self._plan(dry_run, before)
            if dry_run or not self.changes:
                return self._done(outcome, started)
            stage = "upgrading"
            return self._done(self._upgrade(before, outcome), started)
        except TransportError as err:
            if stage == "upgrading":
                message = f"connection lost while upgrading ({err}); the upgrade goes on on the router: run it again"
                return self._done(UpgradeOutcome(self.name, "failed", self.changes, error=message), started)
            return self._done(UpgradeOutcome(self.name, "skipped", error=f"{stage}: {err}"), started)
        except (checks.CheckFailed, Failed) as err:
            status = getattr(err, "status", "failed" if stage == "upgrading" else "skipped")
            return self._done(UpgradeOutcome(self.name, status, self.changes, error=f"{stage}: {err}"), started)

    def _done(self, outcome: UpgradeOutcome, started: float) -> UpgradeOutcome:
        versions = outcome.versions or self._versions()
        seconds = time.monotonic() - started
        return replace(outcome, seconds=seconds, versions=versions, warnings=tuple(self.warnings), probes=self.probed)

    def _versions(self) -> dict[str, str]:
        try:
            return checks.installed_versions(self.router, self.config.packages)
        except TransportError:
            return {}

    # the steps

    def _prepare(self, dry_run: bool) -> checks.Snapshot:
        """Wait out an upgrade still running, finish what dpkg left undone, check the repository
        (reachable, signature valid) and the router; returns the snapshot before."""
        self._wait_idle()
        self.router.output(["mkdir", "-p", apt.SOURCES_DIR], "making the sources directory")
        codename = self._codename()
        sources = self.config.sources(codename, self._mirror_served(codename))
        self.transport.copy(apt.sources_text(sources), apt.SOURCES_FILE)
        pending = checks.dpkg_pending(self.router)
        if pending and not dry_run:
            log.info("%s: dpkg has unfinished work, running dpkg --configure -a", self.name)
            self.router.status(apt.configure_pending())
            pending = checks.dpkg_pending(self.router)
        if pending:
            raise Failed("skipped", f"dpkg has unfinished packages: {' '.join(pending.split())[:300]}")
        self.router.output(apt.update(self.config.lock_timeout), "repository check (apt-get update)")
        self._check_releases()
        before = checks.take_snapshot(self.router, self.config.packages)
        if not dry_run:
            self._check_last_good(before)
        problems = checks.pre_check_problems(before, checks.free_mib(self.router), self.config.min_free_mib)
        if problems:
            raise Failed("skipped", "; ".join(problems))
        return before

    def _check_last_good(self, now: checks.Snapshot) -> None:
        """After an upgrade that did not end well (its snapshot is still on the router; dpkg was finished
        above, which may have rolled it forward), the router must match its state before that upgrade, at
        the versions it has now, before anything else is said about it."""
        good = checks.last_good(self.router)
        if good is None:
            return
        problems = checks.post_check_problems(good, now, {p: v for p, v in now.versions.items() if p in good.versions})
        if problems:
            raise Failed("failed", f"the last upgrade did not end well and the router differs from its state "
                         f"before it: {'; '.join(problems)}")  # fmt: skip
        log.info("%s: the last upgrade did not end well; the router matches its state before it", self.name)
        self.warnings.append("the last upgrade did not end well: checked against the state before it, ok")
        self.router.output(["rm", "-f", checks.GOOD_SNAPSHOT], "removing the last good snapshot")

    def _check_releases(self) -> None:
        """Refuse a channel whose Release is older than one seen before (apt takes an older, validly
        signed Release on a router that has none yet); warn when its Valid-Until is near."""
        url = self.config.repo_url
        for channel in self.config.channels:
            release = self._release_file(channel)
            newer = self.note_release(url, channel, release.date)
            if newer:
                raise Failed("skipped", checks.rollback_problem(f"{url} {channel}", release, newer))
            warning = checks.expiry_warning(f"{url} {channel}", release, datetime.now(UTC))
            self.warnings += [warning] if warning else []

    def _release_file(self, channel: str) -> apt.Release:
        """The channel's Release as apt on the router accepted it."""
        url = self.config.repo_url
        text = self.router.read(apt.list_file(url, channel)) or self.router.read(apt.list_file(url, channel, "Release"))
        try:
            return apt.parse_release(text)
        except ValueError as err:
            raise checks.CheckFailed(f"{url} {channel}: apt kept no usable Release file: {err}") from None

    def _codename(self) -> str:
        """The router's release codename, when the sources need it."""
        if not self.config.needs_release:
            return ""
        codename = apt.release_codename(self.router.read(apt.OS_RELEASE))
        if not codename:
            raise Failed("skipped", f"{apt.OS_RELEASE} names no VERSION_CODENAME: give --security-suite")
        return codename

    def _mirror_served(self, codename: str) -> bool:
        """Whether the router reaches our repository's mirror of its security suite (when asked to)."""
        if not (self.config.security and self.config.security_mirror):
            return False
        url = f"{self.config.repo_url}dists/{codename}-security/InRelease"
        served = self.router.status(apt.served_query(url))[0] == 0
        log.info("%s: Debian security fixes from %s", self.name, url if served else self.config.security.url)
        return served

    def _plan(self, dry_run: bool, before: checks.Snapshot) -> UpgradeOutcome:
        if self.config.to_version:
            self.changes = self._changes_to(self.config.to_version, before.versions)
        else:
            out = self.router.output(apt.simulate(self.config.lock_timeout), "simulated upgrade")
            self.changes = tuple(apt.parse_simulation(out))
        installed = [c.package for c in self.changes if c.old]
        restarts = self._active_units(installed) if installed else ()
        status = "planned" if dry_run else "up-to-date"
        return UpgradeOutcome(self.name, status, self.changes, tuple(apt.reboot_required(self.changes)), restarts)

    def _changes_to(self, version: str, installed: Mapping[str, str]) -> tuple[apt.PackageChange, ...]:
        """Our packages at exactly `version`, which the repository must still have (its channels and their
        -previous suites)."""
        out = self.router.output(apt.available_query(self.config.packages), "listing the versions available")
        available = apt.parse_available(out)
        missing = [p for p in self.config.packages if version not in available.get(p, ())]
        if missing:
            found = ", ".join(f"{p} {' '.join(sorted(available.get(p, ()))) or '(none)'}" for p in missing)
            raise Failed("skipped", f"version {version} is not in the repository: it has {found}")
        wanted = [p for p in self.config.packages if installed.get(p) != version]
        return tuple(apt.PackageChange(p, installed.get(p, ""), version) for p in wanted)

    def _active_units(self, packages: Iterable[str]) -> tuple[str, ...]:
        """The running services these packages ship (oneshot units have nothing to restart)."""
        units = apt.service_units(self.router.output(apt.unit_files_query(packages), "listing package files"))
        if not units:
            return ()
        shown = self.router.output(apt.units_state(units), "systemctl show")
        return tuple(apt.restartable(shown))

    def _upgrade(self, before: checks.Snapshot, planned: UpgradeOutcome) -> UpgradeOutcome:
        """Install the planned versions, renew what still runs old code, all of it watched by the probes; on
        any failed post-check (the probes' among them), roll back to the versions before."""
        checks.keep_good(self.router, self.transport.copy, before)
        watching = self._start_probes()
        status, out = self.router.status(apt.install(self.changes, self.config.lock_timeout))
        self._wait_idle()
        renewed, stale = self._restart_stale()
        watched = self._stop_probes() if watching else []
        problems = self._post_checks(before, {c.package: c.new for c in self.changes}, status, out) + stale + watched
        if not problems:
            self.router.output(["rm", "-f", checks.GOOD_SNAPSHOT], "removing the last good snapshot")
            return replace(planned, status="upgraded", **renewed)
        failure = "; ".join(problems)
        log.warning("%s: upgrade failed (%s), rolling back", self.name, failure)
        self._finish_dpkg()
        status, out = self.router.status(apt.install(self.changes, self.config.lock_timeout, downgrade=True))
        self._wait_idle()
        previous = {c.package: c.old for c in self.changes if c.old}
        problems = self._post_checks(before, previous, status, out) + self._restart_stale()[1]
        if problems:
            raise Failed("rollback-failed", f"{failure}; the rollback failed too: {'; '.join(problems)}")
        self.router.output(["rm", "-f", checks.GOOD_SNAPSHOT], "removing the last good snapshot")
        raise Failed("rolled-back", f"{failure}; rolled back to {', '.join(f'{p} {v}' for p, v in previous.items())}")

    def _start_probes(self) -> bool:
        """Leave vr-probe watching the router, when the policy asks for it and the router has it."""
        if not self.config.probes.interval:
            return False
        if probes.start(self.router, self.config.probes):
            return True
        self.warnings.append("vr-probe is not on the router (vr-scripts too old): the upgrade was not watched")
        return False

    def _stop_probes(self) -> list[str]:
        """End vr-probe's watch; the problems the policy finds in its counts."""
        self.probed = probes.stop(self.router)
        return probes.problems(self.probed, self.config.probes)

    def _restart_stale(self) -> tuple[Renewed, list[str]]:
        """Renew the services still running replaced code (vr-restart-stale on the router). Returns the
        outcome's restarts and reboot_required as it saw them, and the problems for the post-check."""
        report = checks.restart_stale(self.router)
        if report is None:
            self.warnings.append("vr-restart-stale is not on the router (vr-scripts too old): nothing restarted")
            return {"reboot_required": tuple(checks.reboot_reasons(self.router))}, []
        done = [u for u in report["units"] if u["action"] != "none"]
        if any(u["unit"] == "ssh.service" for u in done):
            # our connection is a session of the old sshd: reconnect, so that it ends too
            getattr(self.transport, "close", lambda: None)()
        for unit in report["units"]:
            log.info("%s: %s: %s (%s; %s)", self.name, unit["unit"], unit["action"], unit["why"], unit["how"])
        old_units = sorted({f"{p['unit'] or p['command']} (old code)" for p in report["still_old"]})
        renewed: Renewed = {
            "restarts": tuple(f"{u['unit']} ({u['action']})" for u in done),
            "reboot_required": tuple(checks.reboot_reasons(self.router)) + tuple(old_units),
        }
        return renewed, checks.stale_problems(report)

    def _finish_dpkg(self) -> None:
        """An interrupted dpkg (killed, or a failed maintainer script) refuses every install until it is
        finished: finish it before a rollback installs the versions before."""
        if checks.dpkg_pending(self.router):
            log.info("%s: dpkg was interrupted, running dpkg --configure -a before the rollback", self.name)
            self.router.status(apt.configure_pending())
            self._wait_idle()

    def _post_checks(
        self, before: checks.Snapshot, expected: Mapping[str, str], apt_status: int, apt_output: str
    ) -> list[str]:
        problems = []
        if apt_status != 0:
            said = apt.problems(self.router.read(apt.LOG_FILE) or apt_output)[-3:]
            problems.append(f"apt-get failed (exit status {apt_status}): {' | '.join(said)}")
        pending = checks.dpkg_pending(self.router)
        if pending:
            problems.append(f"dpkg left unfinished packages: {' '.join(pending.split())[:200]}")
        after = checks.take_snapshot(self.router, self.config.packages + tuple(expected))
        return problems + checks.post_check_problems(before, after, expected)

    def _wait_idle(self) -> None:
        """Wait (bounded) until no upgrade runs on the router, e.g. one left by a cut connection."""
        if self.router.status(apt.wait_idle(self.config.lock_timeout))[0] != 0:
            raise checks.CheckFailed(f"an earlier upgrade still runs after {self.config.lock_timeout}s")


@dataclass(frozen=True)
class UpgradeReport:
    outcomes: tuple[UpgradeOutcome, ...]
    stopped: str | None
    dry_run: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(o.ok for o in self.outcomes)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no routers"
        stop = f"; stopped: {self.stopped}" if self.stopped else ""
        return f"upgrade{' --dry-run' if self.dry_run else ''}: {text}{stop}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "stopped": self.stopped, "routers": [o.to_json() for o in self.outcomes]}


def upgrade_fleet(
    manager: Manager,
    names: Sequence[str],
    config: UpgradeConfig,
    policy: RolloutPolicy,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> UpgradeReport:
    """Upgrade (or with dry_run, plan) these routers by the rollout policy; each under its lock, each
    outcome recorded in the store (a dry run records nothing), and the versions of the routers a stopped
    rollout did not reach recorded too."""
    started = time.monotonic()

    def upgrade_one(name: str) -> UpgradeOutcome:
        with manager.store.lock(name, manager.config.lock_timeout):
            return RouterUpgrade(name, manager.transport(name), config, note).run(dry_run)

    def note(url: str, channel: str, date: datetime) -> datetime | None:
        return note_release(manager.store, url, channel, date)

    def finished(outcome: UpgradeOutcome) -> None:
        if not dry_run:
            reboot = outcome.reboot_required if outcome.status == "upgraded" else None  # else: as it was
            record(manager.store, outcome.name, outcome.versions, outcome.status, outcome.error or None, reboot)

    def make_outcome(name: str, status: str, error: str) -> UpgradeOutcome:
        return UpgradeOutcome(name, status, error=error)

    outcomes, stopped = roll_out(names, policy, upgrade_one, make_outcome, progress, finished)
    if stopped and not dry_run:
        outcomes = _note_not_reached(manager, outcomes, config.packages)
    return UpgradeReport(tuple(outcomes), stopped, dry_run, time.monotonic() - started)


def _note_not_reached(
    manager: Manager, outcomes: Iterable[UpgradeOutcome], packages: Iterable[str]
) -> list[UpgradeOutcome]:
    """Read and record the versions of the routers the rollout did not reach (one dpkg-query each, in
    parallel; a router that does not answer keeps what the store knew): `vrpipe list` shows them, and
    which ones lag."""
    found = read_versions(manager, [o.name for o in outcomes if o.status == "not-reached"], packages)
    for name, versions in found.items():
        record(manager.store, name, versions)
    return [replace(o, versions=found.get(o.name, o.versions)) for o in outcomes]


def read_versions(
    manager: Manager, names: Sequence[str], packages: Iterable[str] = apt.OUR_PACKAGES
) -> dict[str, dict[str, str]]:
    """{name: {package: version}} of the routers among names that answer, asked in parallel."""
    found: dict[str, dict[str, str]] = {}

    def read(name: str) -> None:
        found[name] = checks.installed_versions(checks.RouterCalls(name, manager.transport(name).execute), packages)

    for_each(names, read, READ_PARALLEL)
    return {name: found[name] for name in names if found.get(name)}
