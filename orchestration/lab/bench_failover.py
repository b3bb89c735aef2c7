"""`invoke bench-failover`: a redundant pair of container routers under traffic (long-lived TCP flows
through source NAT and a port forward, a line each way every 100 ms; a new connection through a port
forward and a ping from the VM every 100 ms), measured in one run: the MASTER stopped outright, only its
keepalived killed, then a rolling reboot of the pair. A rolling in-place upgrade of a pair is not built
yet, and the last line says so rather than print a figure. The last line is
`failover_s=<s> flows_kept=<k>/<n> pings_lost=<n> upgrade_pair_failed=<n> reboot_pair_failed=<n>`.
"""

from pathlib import Path

from orchestration.lab import pair_lab
from orchestration.lab.lab import throwaway_lab
from orchestration.upgrade import pairs

PREFIX = "vrfail-"
REBOOT_TIMEOUT = 180.0


def bench_failover(rootfs: Path | str | None = None) -> bool:
    """Print each measurement and the summary line; False when the pair did not come up as it should."""
    with throwaway_lab(rootfs, PREFIX) as (manager, lab):
        print(f"bench-failover: a pair of container routers from {manager.config.rootfs}")
        pair = pair_lab.create_pair(manager, lab, "f1")
        failovers = {
            "master stopped outright": pair_lab.failover(manager, lab, pair, pair_lab.pull_the_plug(manager, lab)),
        }
        # the stopped member back (as BACKUP), then the other kind of failure
        down = next(m for m in pair.members if pairs.role(manager, m) == "down")
        manager.stop(down)
        manager.start(down)
        failovers["keepalived killed"] = pair_lab.failover(manager, lab, pair, pair_lab.kill_keepalived(manager))
        for what, result in failovers.items():
            print(f"  {what}: {result.master_before} -> {result.master_after}: {_describe(result.traffic)}")
        outcomes: list[list[object]] = []

        def reboot() -> None:
            done, stopped = pairs.reboot_pair(manager, pair.members, REBOOT_TIMEOUT, lambda line: print(f"  {line}"))
            outcomes.append([o for o in done if not o.ok])
            if stopped:
                print(f"  rolling reboot stopped: {stopped}")

        rebooted = pair_lab.under_traffic(manager, lab, pair, reboot)
        print(f"  rolling reboot: {_describe(rebooted)}")
    worst = max(r.traffic.seconds for r in failovers.values())
    kept = sum(r.traffic.flows_kept for r in failovers.values())
    flows = sum(r.traffic.flows for r in failovers.values())
    lost = sum(r.traffic.pings_lost for r in failovers.values())
    # failed connections of the rolling reboot: new ones refused or unanswered, and long-lived ones broken
    reboot_failed = rebooted.connections_failed + rebooted.flows - rebooted.flows_kept
    print(
        f"failover_s={worst:.2f} flows_kept={kept}/{flows} pings_lost={lost} "
        f"upgrade_pair_failed=not-measured reboot_pair_failed={reboot_failed}"
    )
    return not any(outcomes[0]) if outcomes else False


def _describe(traffic: pair_lab.Traffic) -> str:
    broken = f" ({'; '.join(traffic.errors)})" if traffic.errors else ""
    return (
        f"cut {traffic.seconds:.2f} s, pings lost {traffic.pings_lost}/{traffic.pings_sent}, "
        f"flows kept {traffic.flows_kept}/{traffic.flows}{broken}, "
        f"new connections failed {traffic.connections_failed}/{traffic.connections}"
    )
