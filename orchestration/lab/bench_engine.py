"""`invoke bench-engine`: the engine's apply time on a router namespace with real nftables, dnsmasq,
haproxy and metadata service, for a whole N-VM state, the same state again (nothing changes), one
incremental batch command, and one command in per-command mode (vr-cmd).
"""

import json
import time
from collections.abc import Mapping
from typing import Any

from orchestration.lab.netlab import RouterNet, make_router_net
from orchestration.lab.netns import Namespaces
from orchestration.lab.workload import fleet_state, vm_commands


def _timed_apply(net: RouterNet, document: Mapping[str, Any]) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    code, result = net.apply(document)
    return time.perf_counter() - started, code, result


def _line(label: str, seconds: float, result: Mapping[str, Any]) -> None:
    phases = " ".join(f"{k}={v:.3f}" for k, v in result.get("timings", {}).items())
    print(f"{label:<34} {seconds:7.3f} s   ok={result.get('ok')}   {phases}")


def bench_engine(vms: int = 1000) -> bool:
    """Print each phase's time; return False if any apply failed. The last line is apply_<N>_vms_s=."""
    with Namespaces("vrb") as namespaces:
        net = make_router_net(namespaces)
        state = {"schema": 1, "kind": "state", "state": fleet_state(vms)}
        print(f"engine benchmark: {vms} VMs ({vms} DHCP entries, vm_data sets, port forwards, firewall rules)")
        whole, code1, result1 = _timed_apply(net, state)
        _line("whole state, first apply", whole, result1)
        again, code2, result2 = _timed_apply(net, state)
        _line("same state again (no change)", again, result2)
        batch = {"schema": 1, "kind": "batch", "commands": vm_commands([vms])[:1]}
        incremental, code3, result3 = _timed_apply(net, batch)
        _line("one incremental batch command", incremental, result3)
        command = vm_commands([vms + 1])[2]
        started = time.perf_counter()
        proc = net.engine("vr-cmd", command["type"], command["op"], json.dumps(command["data"]))
        single = time.perf_counter() - started
        _line("one command, per-command mode", single, json.loads(proc.stdout))
        health = json.loads(net.engine("vr-health").stdout)
        print(
            f"router health: ok={health['ok']} nftables elements: {health['nftables']['port_forwards']} port forwards"
        )
        ok = not any((code1, code2, code3, proc.returncode)) and health["ok"]
        print(f"incremental_change_s={incremental:.3f}")
        print(f"apply_{vms}_vms_s={whole:.3f}")
        return ok
