"""`vrpipe upgrade`: its options (sources, rollout policy, dry run), validated into an UpgradeConfig and a
RolloutPolicy once, the per-router lines and the report; and the package versions `vrpipe list` shows.
"""

from vr import contract

from orchestration.upgrade import apt
from orchestration.upgrade.inplace import DEBIAN_KEYRING, ROUTER_KEYRING, UpgradeConfig, upgrade_fleet
from orchestration.upgrade.records import lagging, records
from orchestration.upgrade.rollout import RolloutPolicy


def add_parser(sub):
    p = sub.add_parser("upgrade", help="upgrade routers in place through apt (canary, batches, rollback)")
    p.add_argument("names", nargs="*", help="routers to upgrade (default: every router, in creation order)")
    p.add_argument("--dry-run", action="store_true", help="only report what would change; change nothing")
    p.add_argument("--repo-url", default=UpgradeConfig.repo_url, help="our repository as routers reach it")
    p.add_argument("--channel", action="append", help="our channel(s) to upgrade from (default: stable)")
    p.add_argument("--keyring", default=ROUTER_KEYRING, help="our archive keyring, a path on the router")
    p.add_argument("--security-url", default="http://deb.debian.org/debian-security/")
    p.add_argument("--security-suite", default="trixie-security")
    p.add_argument("--security-keyring", default=DEBIAN_KEYRING, help="a path on the router")
    p.add_argument("--no-security", action="store_true", help="leave Debian's security suite out")
    p.add_argument("--canary", help="the router upgraded first, alone (default: the first named)")
    p.add_argument("--batch", default="1", help="routers per batch after the canary: N or N%% (default 1)")
    p.add_argument("--failure-budget", type=int, default=0, help="failed routers tolerated (default 0)")
    p.add_argument("--min-free-mib", type=int, default=UpgradeConfig.min_free_mib)
    p.add_argument("--lock-timeout", type=int, default=UpgradeConfig.lock_timeout, help="seconds to wait for dpkg")


def config_from(args):
    security = None
    if not args.no_security:
        security = apt.AptSource(args.security_url, (args.security_suite,), args.security_keyring)
    config = UpgradeConfig(
        repo_url=args.repo_url,
        channels=tuple(args.channel or ("stable",)),
        keyring=args.keyring,
        security=security,
        min_free_mib=args.min_free_mib,
        lock_timeout=args.lock_timeout,
    )
    return config, RolloutPolicy(args.canary, args.batch, args.failure_budget)


def run(args, manager, out):
    """Do `vrpipe upgrade`; return (ok, summary)."""
    config, policy = config_from(args)
    names = args.names or [r.name for r in manager.store.routers()]
    for name in names:
        manager.store.router(name)  # an unknown name fails here, before any router is touched
    out.progress(f"{'planning' if args.dry_run else 'upgrading'} {len(names)} routers from {config.repo_url}")
    report = upgrade_fleet(manager, names, config, policy, args.dry_run, out.progress)
    out.result(report.to_json(), "\n".join(o.line() for o in report.outcomes))
    return report.ok, report.summary()


def versions_columns(manager, rows):
    """Add each router's package versions, last upgrade and whether it lags to `vrpipe list` rows."""
    known = records(manager.store)
    behind = lagging(known)
    for row in rows:
        record = known.get(row["name"])
        row["packages"] = record.packages if record else {}
        row["last_upgrade"] = record.outcome if record else None
        row["upgraded_at"] = record.upgraded_at.isoformat() if record and record.upgraded_at else None
        row["lags"] = row["name"] in behind
    return rows


def version_text(row):
    engine = row["packages"].get(contract.ENGINE_PACKAGE, "?")
    last = f" last upgrade {row['last_upgrade']}" if row["last_upgrade"] else ""
    return f"vr-scripts {engine}{' (lags)' if row['lags'] else ''}{last}"
