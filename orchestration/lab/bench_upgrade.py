"""`invoke bench-upgrade`: on lab routers booted from the template, one router upgraded in place versus the
same router recreated from the template with a full replay (time, and failed connections during each),
then a fleet upgraded in batches, then a Debian libssl fix (the template's libssl rebuilt as a newer version,
in the repository's security channel) rolled out to that fleet with traffic through every router. The
repository is a throw-away one with a key of its own, which each lab router is given first. Last lines:
upgrade_one_s=<s> recreate_one_s=<s> upgrade_20_s=<s> failed_connections=<n>, then
libssl_fix_20_s=<s> restarted_units=<n> old_code_processes=<n> failed_connections=<n> (old_code_processes:
processes still mapping the old library afterwards).
"""

import contextlib
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from orchestration.lab.lab import Lab
from orchestration.lab.netlab import Vm
from orchestration.lab.security_fix import installed_version, old_library_processes, publish_into, rebuilt_libssl
from orchestration.lab.upgrade_lab import TrafficCounts, bring_up, repo_served, traffic
from orchestration.manager import Manager
from orchestration.settings import ManagerConfig
from orchestration.upgrade.apt import SecuritySource
from orchestration.upgrade.inplace import UpgradeConfig, upgrade_fleet
from orchestration.upgrade.rollout import RolloutPolicy
from repo import signing
from repo.config import RepoConfig
from repo.publish import publish
from vrpipe.run import run

TEMPLATE_ROOTFS = Path(__file__).resolve().parents[2] / "build" / "template" / "rootfs"
BENCH_KEYRING = "/etc/apt/keyrings/vrpipe-bench.asc"
FLEET_TRAFFIC_INTERVAL = 0.5  # seconds between connections per router while the whole fleet takes the fix


def bench_upgrade(routers: int = 20, batch: str = "25%", rootfs: Path = TEMPLATE_ROOTFS) -> bool:
    """Run the benchmark; print progress, the figures and the summary line; False when anything failed."""
    base = installed_version(rootfs, "vr-scripts")
    if not base:
        print(f"bench-upgrade: {rootfs} has no vr-scripts installed by dpkg: run `invoke build-template` first")
        return False
    with tempfile.TemporaryDirectory(prefix="vrbench-") as tmp:
        work = Path(tmp)
        repo = RepoConfig(dir=work / "repo", gnupghome=work / "gnupg")
        publish(repo, version=base)  # the version routers have: what a rollback would go back to
        prefix = f"vrb{os.getpid() % 100000}"
        hv = f"{prefix}hv"
        manager = Manager(
            ManagerConfig(work / "manager", rootfs=rootfs, host_netns=hv, ssh_netns=hv, netns_prefix=f"{prefix}-")
        )
        lab = Lab(manager, prefix)
        try:
            lab.up_public()
            with repo_served(lab.host, repo.public) as url:
                config = UpgradeConfig(repo_url=url, keyring=BENCH_KEYRING, security=None)
                ok, vms = _bench(manager, lab, repo, config, base, routers, batch)
                security = SecuritySource(url, "security", BENCH_KEYRING)  # the repository's channel plays Debian's
                fix = UpgradeConfig(repo_url=url, keyring=BENCH_KEYRING, security=security)
                return _libssl_fix(manager, lab, vms, repo, fix, rootfs, work, batch) and ok
        finally:
            lab.down()
            manager.close()
            signing.stop_agent(repo.gnupghome)


def _bench(
    manager: Manager, lab: Lab, repo: RepoConfig, config: UpgradeConfig, base: str, routers: int, batch: str
) -> tuple[bool, dict[str, Vm]]:
    print(f"bench-upgrade: routers from {manager.config.rootfs} (vr-scripts {base}); Debian security left out")
    key = run(["gpg", "--batch", "--homedir", str(repo.gnupghome), "--armor", "--export"]).stdout
    vms = bring_up(manager, lab, ["b01"])
    _trust(manager, ["b01"], key)
    publish(repo, version=f"{base}+bench1")
    one, one_counts, one_ok = _upgrade(manager, lab, vms, ["b01"], config, RolloutPolicy())
    _figures("upgrade one router in place", one, one_counts)
    recreate, recreate_counts = _recreate(manager, lab, vms, "b01")
    _figures("recreate it from the template with a full replay", recreate, recreate_counts)
    names = [f"b{i:02d}" for i in range(1, routers + 1)]
    print(f"starting {routers - 1} more routers")
    vms.update(bring_up(manager, lab, names[1:], first_index=2))
    _trust(manager, names, key)
    publish(repo, version=f"{base}+bench2")
    fleet, fleet_counts, fleet_ok = _upgrade(manager, lab, vms, names, config, RolloutPolicy(batch=batch))
    _figures(f"upgrade {routers} routers (canary, then batches of {batch})", fleet, fleet_counts)
    failed = one_counts["failed_connections"] + fleet_counts["failed_connections"]
    print(f"upgrade_one_s={one:.1f} recreate_one_s={recreate:.1f} upgrade_{routers}_s={fleet:.1f}", end=" ")
    print(f"failed_connections={failed}")
    return one_ok and fleet_ok, vms


def _libssl_fix(
    manager: Manager, lab: Lab, vms: Mapping[str, Vm], repo: RepoConfig, config: UpgradeConfig, rootfs: Path,
    work: Path, batch: str,
) -> bool:
    """The fleet of _bench takes a rebuilt libssl from the security channel while every router forwards."""
    names, routers = list(vms), len(vms)
    deb, old, fixed = rebuilt_libssl(rootfs, work)
    publish_into(repo, deb)
    print(f"libssl fix: {old} -> {fixed} to {routers} routers, traffic through each")
    with contextlib.ExitStack() as stack:
        counted = [stack.enter_context(traffic(lab.public, index, vms[name], FLEET_TRAFFIC_INTERVAL))
                   for index, name in enumerate(names, 1)]  # fmt: skip
        started = time.monotonic()
        report = upgrade_fleet(manager, names, config, RolloutPolicy(batch=batch), progress=print)
        seconds = time.monotonic() - started
    print(report.summary())
    restarted = sum(len(o.restarts) for o in report.outcomes)
    old_code = sum(len(old_library_processes(manager, name)) for name in names)
    failed = sum(c["failed_connections"] for c in counted)
    connections = sum(c["connections"] for c in counted)
    print(f"libssl fix: {failed}/{connections} connections failed, "
          f"{sum(c['lost_pings'] for c in counted)}/{sum(c['pings'] for c in counted)} pings lost")  # fmt: skip
    print(f"libssl_fix_{routers}_s={seconds:.1f} restarted_units={restarted} old_code_processes={old_code} "
          f"failed_connections={failed}")  # fmt: skip
    return report.ok and old_code == 0


def _trust(manager: Manager, names: Iterable[str], key: str) -> None:
    """Give the routers the bench repository's key (ASCII-armoured, which apt's Signed-By reads)."""
    for name in names:
        manager.transport(name).copy(key, BENCH_KEYRING)


def _upgrade(
    manager: Manager,
    lab: Lab,
    vms: Mapping[str, Vm],
    names: Sequence[str],
    config: UpgradeConfig,
    policy: RolloutPolicy,
) -> tuple[float, TrafficCounts, bool]:
    """Upgrade `names` while traffic runs through the first router; (seconds, traffic counts, ok)."""
    with traffic(lab.public, 1, vms[names[0]]) as counts:
        started = time.monotonic()
        report = upgrade_fleet(manager, names, config, policy, progress=print)
        seconds = time.monotonic() - started
    print(report.summary())
    return seconds, counts, report.ok


def _recreate(manager: Manager, lab: Lab, vms: Mapping[str, Vm], name: str) -> tuple[float, TrafficCounts]:
    """`vrpipe recreate`: a new router from the template, booted and fully replayed."""
    with traffic(lab.public, 1, vms[name]) as counts:
        started = time.monotonic()
        manager.recreate(name)
        seconds = time.monotonic() - started
    return seconds, counts


def _figures(what: str, seconds: float, counts: TrafficCounts) -> None:
    print(
        f"{what}: {seconds:.1f} s, {counts['failed_connections']}/{counts['connections']} connections failed, "
        f"{counts['lost_pings']}/{counts['pings']} pings lost"
    )
