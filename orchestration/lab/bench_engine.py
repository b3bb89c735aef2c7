"""`invoke bench-engine`: the engine's apply time on a router namespace with real nftables, dnsmasq,
haproxy and metadata service, for a whole N-VM state, the same state again (nothing changes), one
incremental batch command, and one command in per-command mode (vr-cmd); `--scale` runs N = 100, 1,000
and 10,000 in one go and adds the engine's peak RSS. The resident engine (vr-engine) runs, as on a
router, unless `--in-process` asks for every command to apply in its own process.
"""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestration.lab.netlab import VR_SCRIPTS, RouterNet, make_router_net
from orchestration.lab.netns import Namespaces
from orchestration.lab.workload import fleet_state, vm_commands
from vrpipe.run import spawn

SCALE = (100, 1000, 10000)


@dataclass
class Figures:
    """One router size: wall times of the applies and vr-cmd, the engine's own time for the batch command."""

    vms: int
    whole: float
    again: float
    incremental: float  # the engine's phases summed
    incremental_wall: float
    vrcmd: float
    rss_mib: float  # the largest peak RSS any of the engine's runs reported
    ok: bool


def _timed(run: Callable[[], tuple[int, dict[str, Any]]]) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    code, result = run()
    return time.perf_counter() - started, code, result


def _line(label: str, seconds: float, result: Mapping[str, Any]) -> None:
    phases = " ".join(f"{k}={v:.3f}" for k, v in result.get("timings", {}).items())
    print(f"{label:<34} {seconds:7.3f} s   ok={result.get('ok')}   {phases}")


def _vr_cmd(net: RouterNet, command: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    proc = net.engine("vr-cmd", command["type"], command["op"], json.dumps(command["data"]))
    return proc.returncode, json.loads(proc.stdout)


def start_engine(net: RouterNet) -> None:
    """vr-engine in the router namespace (the namespace's removal stops it); waits for its socket."""
    argv = ["env", f"VR_ROOT={net.root}", "VR_SERVICES=process", str(VR_SCRIPTS / "bin" / "vr-engine")]
    spawn(argv, ns=net.router, new_session=True)
    socket_path = net.root / "run/vr/engine.sock"
    deadline = time.monotonic() + 30
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # bound, then listening


def measure(vms: int, resident: bool = True) -> Figures:
    """Apply an N-VM state to a fresh router namespace, then the same again and one change each way."""
    with Namespaces("vrb") as namespaces:
        net = make_router_net(namespaces)
        if resident:
            start_engine(net)
        state = {"schema": 1, "kind": "state", "state": fleet_state(vms)}
        mode = "resident engine" if resident else "in-process"
        print(f"engine benchmark: {vms} VMs ({vms} DHCP entries, vm_data sets, port forwards, firewall rules), {mode}")
        whole, code1, result1 = _timed(lambda: net.apply(state))
        _line("whole state, first apply", whole, result1)
        again, code2, result2 = _timed(lambda: net.apply(state))
        _line("same state again (no change)", again, result2)
        batch = {"schema": 1, "kind": "batch", "commands": vm_commands([vms])[:1]}
        incremental_wall, code3, result3 = _timed(lambda: net.apply(batch))
        _line("one incremental batch command", incremental_wall, result3)
        vrcmd, code4, result4 = _timed(lambda: _vr_cmd(net, vm_commands([vms + 1])[2]))
        _line("one command, per-command mode", vrcmd, result4)
        health = json.loads(net.engine("vr-health").stdout)
        print(f"router health: ok={health['ok']} nftables: {health['nftables']['port_forwards']} port forwards")
        results = (result1, result2, result3, result4)
        rss = max(r.get("peak_rss_mib", 0) for r in results)
        incremental = sum(result3.get("timings", {}).values())
        print(f"engine time of the batch command {incremental:.4f} s; engine peak RSS {rss:.1f} MiB")
        ok = not any((code1, code2, code3, code4)) and health["ok"]
        return Figures(vms, whole, again, incremental, incremental_wall, vrcmd, rss, ok)


def _summary(figures: Mapping[int, Figures]) -> None:
    print()
    print(f"{'VMs':>6} {'whole':>8} {'again':>8} {'incr.':>8} {'vr-cmd':>8} {'RSS MiB':>8}")
    for f in figures.values():
        print(f"{f.vms:>6} {f.whole:8.3f} {f.again:8.3f} {f.incremental:8.4f} {f.vrcmd:8.3f} {f.rss_mib:8.1f}")
    big, small = figures[SCALE[-1]], figures[SCALE[0]]
    print(
        f"apply_{big.vms}_vms_s={big.whole:.3f} again_{big.vms}_s={big.again:.3f} "
        f"incremental_{big.vms}_s={big.incremental:.4f} incremental_{small.vms}_s={small.incremental:.4f} "
        f"vrcmd_{big.vms}_s={big.vrcmd:.3f} rss_{big.vms}_mib={big.rss_mib:.0f}"
    )


def bench_engine(vms: int = 1000, scale: bool = False, in_process: bool = False) -> bool:
    """Print each phase's time; return False if any apply failed. The last line is apply_<N>_vms_s=
    (with --scale: the figures of 10,000 and 100 VMs, in the line the issue asks for)."""
    figures = {n: measure(n, resident=not in_process) for n in (SCALE if scale else (vms,))}
    if scale:
        _summary(figures)
    else:
        print(f"incremental_change_s={figures[vms].incremental_wall:.3f}")
        print(f"apply_{vms}_vms_s={figures[vms].whole:.3f}")
    return all(f.ok for f in figures.values())
