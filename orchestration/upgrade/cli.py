"""`vrpipe upgrade`: its options (sources, rollout policy, dry run, --to), validated into an UpgradeConfig and
a RolloutPolicy once, the per-router lines and the report; and the package versions `vrpipe list` shows.
`vrpipe upgrade` and `reboot` take the single routers through their rollout first, then each redundant pair
through its rolling operation (pairs.py: BACKUP, handover, old MASTER).
"""

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from vr import contract

from orchestration.manager import Manager
from orchestration.upgrade import apt, pairs
from orchestration.upgrade.inplace import ROUTER_KEYRING, UpgradeConfig, read_versions, upgrade_fleet
from orchestration.upgrade.probes import ProbePolicy
from orchestration.upgrade.reboot import reboot_fleet
from orchestration.upgrade.records import lagging, records
from orchestration.upgrade.rollout import RolloutPolicy
from vrpipe import log

if TYPE_CHECKING:  # orchestration.cli imports this module
    from orchestration.cli import Output


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("upgrade", help="upgrade routers in place through apt (canary, batches, rollback)")
    p.add_argument("names", nargs="*", help="routers to upgrade (default: every router, in creation order)")
    p.add_argument("--dry-run", action="store_true", help="only report what would change; change nothing")
    p.add_argument(
        "--to", metavar="VERSION", help="install this version of our packages (say, an older one the "
        "repository still has) instead of the newest",
    )  # fmt: skip
    p.add_argument("--repo-url", default=UpgradeConfig.repo_url, help="our repository as routers reach it")
    p.add_argument("--channel", action="append", help="our channel(s) to upgrade from (default: stable)")
    p.add_argument("--keyring", default=ROUTER_KEYRING, help="our archive keyring, a path on the router")
    p.add_argument(
        "--security-url", help="Debian's security archive (default: our repository's mirror of each router's "
        f"<codename>-security when it serves one (invoke mirror-security), else {apt.DEBIAN_SECURITY})",
    )  # fmt: skip
    p.add_argument(
        "--security-suite", help="the security suite for every router (default: each router's own release's, "
        "from its /etc/os-release, e.g. trixie-security)",
    )  # fmt: skip
    p.add_argument("--security-keyring", default=apt.DEBIAN_KEYRING, help="a path on the router (for --security-url)")
    p.add_argument("--no-security", action="store_true", help="leave Debian's security suite out")
    p.add_argument("--canary", help="the router upgraded first, alone (default: the first named)")
    p.add_argument("--batch", default="1", help="routers per batch after the canary: N or N%% (default 1)")
    p.add_argument("--failure-budget", type=int, default=0, help="failed routers tolerated (default 0)")
    p.add_argument("--min-free-mib", type=int, default=UpgradeConfig.min_free_mib)
    p.add_argument("--keep", type=int, default=UpgradeConfig.keep,
                   help="versions of each channel the repository keeps (its repo.keep; default 3)")
    p.add_argument("--dpkg-timeout", type=int, default=UpgradeConfig.lock_timeout,
                   help="seconds apt waits for another dpkg to finish (default 120); the router's own lock is "
                   "the global --lock-timeout")


def add_reboot_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("reboot", help="reboot routers, each passing the health gates before the next batch")
    p.add_argument("names", nargs="+", help="routers to reboot, in this order")
    p.add_argument("--rolling", action="store_true", help="one batch at a time (default: the first router, "
                   "then all the others at once)")  # fmt: skip
    p.add_argument("--batch", default="1", help="with --rolling: routers per batch after the first: N or N%% (1)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds a router has, once booted, to pass the gates (120)")  # fmt: skip


def reboot(args: argparse.Namespace, manager: Manager, out: "Output") -> tuple[bool, str]:
    """Do `vrpipe reboot`; return (ok, summary)."""
    manager.store.check_known(args.names)
    batch = args.batch if args.rolling else "100%"
    singles, found = pairs.split(manager, args.names)
    with log.progress(len(singles) + 2 * len(found), "vrpipe: reboot") as done:
        outcomes, stopped = reboot_fleet(manager, singles, batch, args.timeout, done)
        for members in found:
            if stopped is None:
                more, stopped = pairs.reboot_pair(manager, members, args.timeout, done)
                outcomes += more
    out.result({"stopped": stopped, "routers": [o.to_json() for o in outcomes]}, "\n".join(o.line() for o in outcomes))
    rebooted = sum(o.ok for o in outcomes)
    ok = stopped is None and rebooted == len(outcomes)
    return ok, f"reboot: {rebooted} of {len(outcomes)} rebooted" + (f"; stopped: {stopped}" if stopped else "")


DEFAULT_PROBES = ProbePolicy()  # the manager settings' defaults


def config_from(
    args: argparse.Namespace, probes: ProbePolicy = DEFAULT_PROBES
) -> tuple[UpgradeConfig, RolloutPolicy]:
    security = None
    if not args.no_security:
        url = args.security_url or apt.DEBIAN_SECURITY
        security = apt.SecuritySource(url, args.security_suite, args.security_keyring)
    config = UpgradeConfig(
        repo_url=args.repo_url,
        channels=tuple(args.channel or ("stable",)),
        keyring=args.keyring,
        security=security,
        security_mirror=not args.security_url and not args.security_suite,
        min_free_mib=args.min_free_mib,
        lock_timeout=args.dpkg_timeout,
        to_version=args.to,
        keep=args.keep,
        probes=probes,
    )
    return config, RolloutPolicy(args.canary, args.batch, args.failure_budget)


def run(args: argparse.Namespace, manager: Manager, out: "Output") -> tuple[bool, str]:
    """Do `vrpipe upgrade`; return (ok, summary)."""
    settings = manager.config
    config, policy = config_from(args, ProbePolicy(
        settings.upgrade_probe_interval, settings.upgrade_probe_outage, settings.upgrade_probe_flushes,
        settings.upgrade_probe_timeout,
    ))
    names = args.names or [r.name for r in manager.store.routers()]
    manager.store.check_known(names)
    routers = "1 router" if len(names) == 1 else f"{len(names)} routers"
    target = f" to {config.to_version}" if config.to_version else ""
    out.progress(f"{'planning' if args.dry_run else 'upgrading'} {routers}{target} from {config.repo_url}")
    singles, found = pairs.split(manager, names)
    if args.dry_run:  # a plan changes nothing: each member on its own
        singles, found = [m for name in names for m in manager.members(name)], []
    with log.progress(len(singles) + 2 * len(found), "vrpipe: upgrade") as done:
        report = upgrade_fleet(manager, singles, config, policy, args.dry_run, done)
        for members in found:
            if report.stopped is None:
                more, stopped = pairs.upgrade_pair(manager, members, config, done)
                report = dataclasses.replace(report, outcomes=(*report.outcomes, *more), stopped=stopped)
    for warning in dict.fromkeys(w for o in report.outcomes for w in o.warnings):
        out.progress(f"warning: {warning}")
    out.result(report.to_json(), "\n".join(o.line() for o in report.outcomes))
    return report.ok, report.summary()


def versions_columns(manager: Manager, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to `vrpipe list` rows each router's package versions (recorded by an upgrade, else read from
    the running router), where they come from, its last upgrade, and whether its vr-scripts lags."""
    known = records(manager.store)
    recorded = {name: r.packages for name, r in known.items() if r.packages}
    unread = [row["name"] for row in rows if row["status"] == "running" and row["name"] not in recorded]
    read = read_versions(manager, unread)
    behind = lagging({**recorded, **read})
    for row in rows:
        name, record = row["name"], known.get(row["name"])
        row["packages"] = read.get(name) or recorded.get(name, {})
        row["versions_from"] = "router" if name in read else "record" if name in recorded else None
        row["last_upgrade"] = record.outcome if record else None
        row["upgraded_at"] = record.upgraded_at.isoformat() if record and record.upgraded_at else None
        row["lags"] = name in behind
        row["reboot_required"] = record.reboot_required if record else None
    return rows


def version_text(row: dict[str, Any]) -> str:
    packages = row["packages"]
    engine = packages.get(contract.ENGINE_PACKAGE, "?")
    base = packages.get(contract.BASE_PACKAGE, "?")
    last = f" last upgrade {row['last_upgrade']}" if row["last_upgrade"] else ""
    reboot = f" reboot required ({', '.join(row['reboot_required'])})" if row.get("reboot_required") else ""
    return f"vr-scripts {engine}{' (lags)' if row['lags'] else ''} vr-base {base}{last}{reboot}"
