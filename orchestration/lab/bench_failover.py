"""`invoke bench-failover`: a redundant pair of container routers under traffic (long-lived TCP flows
through source NAT and a port forward, a line each way every 100 ms; a new connection through a port
forward and a ping from the VM every 100 ms), measured in one run: the MASTER stopped outright, only its
keepalived killed, a rolling reboot of the pair, then a rolling in-place upgrade of it from a throw-away
repository (this checkout's packages published as a newer version). The last line is
`failover_s=<s> flows_kept=<k>/<n> pings_lost=<n> upgrade_pair_failed=<n> reboot_pair_failed=<n>`.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path

from orchestration.lab import pair_lab
from orchestration.lab.lab import Lab, throwaway_lab
from orchestration.manager import Manager
from orchestration.upgrade import pairs

PREFIX = "vrfail-"
REBOOT_TIMEOUT = 180.0


def bench_failover(rootfs: Path | str | None = None) -> bool:
    """Print each measurement and the summary line; False when the pair did not come up as it should."""
    with tempfile.TemporaryDirectory(prefix="vrfail-") as tmp, throwaway_lab(rootfs, PREFIX) as (manager, lab):
        return _bench(manager, lab, Path(tmp))


def _bench(manager: Manager, lab: Lab, work: Path) -> bool:
    print(f"bench-failover: a pair of container routers from {manager.config.rootfs}")
    pair = pair_lab.create_pair(manager, lab, "f1")
    failovers = {"master stopped outright": pair_lab.failover(manager, lab, pair, pair_lab.pull_the_plug(manager, lab))}
    down = next(m for m in pair.members if pairs.role(manager, m) == "down")
    manager.stop(down)  # the stopped member back, as BACKUP; then the other kind of failure
    manager.start(down)
    failovers["keepalived killed"] = pair_lab.failover(manager, lab, pair, pair_lab.kill_keepalived(manager))
    for what, result in failovers.items():
        print(f"  {what}: {result.master_before} -> {result.master_after}: {_describe(result.traffic)}")
    rebooted, reboot_ok = _rolling(manager, lab, pair, "rolling reboot", lambda: pairs.reboot_pair(
        manager, pair.members, REBOOT_TIMEOUT, _indented))
    with pair_lab.newer_version_served(manager, lab, pair, work) as config:
        upgraded, upgrade_ok = _rolling(manager, lab, pair, "rolling upgrade", lambda: pairs.upgrade_pair(
            manager, pair.members, config, _indented))
    worst = max(r.traffic.seconds for r in failovers.values())
    kept = sum(r.traffic.flows_kept for r in failovers.values())
    flows = sum(r.traffic.flows for r in failovers.values())
    lost = sum(r.traffic.pings_lost for r in failovers.values())
    print(
        f"failover_s={worst:.2f} flows_kept={kept}/{flows} pings_lost={lost} "
        f"upgrade_pair_failed={_failed(upgraded)} reboot_pair_failed={_failed(rebooted)}"
    )
    return reboot_ok and upgrade_ok


def _indented(line: str) -> None:
    print(f"  {line}")


def _rolling(
    manager: Manager, lab: Lab, pair: pair_lab.Pair, what: str, operate: Callable[[], tuple[list, str | None]]
) -> tuple[pair_lab.Traffic, bool]:
    """Run a rolling operation under traffic; its traffic and whether every member passed."""
    ok: list[bool] = []

    def action() -> None:
        outcomes, stopped = operate()
        ok.append(stopped is None and all(o.ok for o in outcomes))
        if stopped:
            print(f"  {what} stopped: {stopped}")

    traffic = pair_lab.under_traffic(manager, lab, pair, action)
    print(f"  {what}: {_describe(traffic)}")
    return traffic, bool(ok and ok[0])


def _failed(traffic: pair_lab.Traffic) -> int:
    """Failed connections of a rolling operation: new ones refused or unanswered, long-lived ones broken."""
    return traffic.connections_failed + traffic.flows - traffic.flows_kept


def _describe(traffic: pair_lab.Traffic) -> str:
    broken = f" ({'; '.join(traffic.errors)})" if traffic.errors else ""
    return (
        f"cut {traffic.seconds:.2f} s, pings lost {traffic.pings_lost}/{traffic.pings_sent}, "
        f"flows kept {traffic.flows_kept}/{traffic.flows}{broken}, "
        f"new connections failed {traffic.connections_failed}/{traffic.connections}"
    )
