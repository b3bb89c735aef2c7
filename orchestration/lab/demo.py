"""`invoke demo`: one router on this machine, as network namespaces, running the engine with real
nftables, dnsmasq, haproxy and the metadata service; it applies a sample state, lets three VMs take their
addresses by DHCP, sends a little traffic through it and shows what the router programmed.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from orchestration.deployers.hostnet import kill_processes_in
from orchestration.lab.netlab import SAMPLE_VMS, RouterNet, Vm, make_router_net, sample_state
from orchestration.lab.netns import Namespaces
from vrpipe.run import run

KEPT = Path(tempfile.gettempdir()) / "vrpipe-demo.json"


def _section(title: str) -> None:
    print(f"\n=== {title} ===")


def _show_router(net: RouterNet) -> None:
    _section("nftables: the router's own table (sets and maps hold the per-VM items)")
    print(run(["nft", "-s", "list", "table", "inet", "vr"], ns=net.router).stdout[:2500], "...")
    _section("dnsmasq hosts file")
    print((net.root / "etc/vr/dhcp-hosts").read_text())
    _section("haproxy.cfg (load balancer part)")
    print((net.root / "etc/haproxy/haproxy.cfg").read_text().split("\nfrontend", 1)[-1])


def _show_traffic(net: RouterNet, vms: Sequence[Vm]) -> None:
    _section("traffic")
    for vm in vms:
        proc = net.dhcp(vm)
        got = run(["ip", "-4", "-brief", "address", "show", "dev", "eth0"], ns=vm.ns).stdout.split()
        address = got[2] if len(got) > 2 else "-"
        print(f"{vm.name}: DHCP {'ok' if proc.returncode == 0 else 'FAILED'}, address {address}")
    url = "http://10.1.1.1/latest/meta-data/instance-id"
    metadata = run(["curl", "-sS", "-m", "3", url], ns=vms[0].ns, check=False)
    print(f"vm1 asks the metadata service for its instance-id: {metadata.stdout.strip() or metadata.stderr.strip()}")
    ping = run(["ping", "-c", "1", "-W", "2", "203.0.113.1"], ns=vms[0].ns, check=False)
    print(f"vm1 pings the outside through source NAT: {'ok' if ping.returncode == 0 else 'no answer'}")


def run_demo(keep: bool = False) -> bool:
    namespaces, net = Namespaces("vrdemo"), None
    try:
        net = make_router_net(namespaces)
        vms = [net.add_vm(*vm) for vm in SAMPLE_VMS]
        print(f"router namespace {net.router}, root {net.root}; VMs {', '.join(vm.ns for vm in vms)}")
        code, result = net.apply({"schema": 1, "kind": "state", "state": sample_state(net, vms)})
        _section("vr-apply result")
        print(json.dumps({k: result[k] for k in ("ok", "actions", "timings") if k in result}, indent=1))
        _show_router(net)
        _show_traffic(net, vms)
        _section("vr-health")
        print(net.engine("vr-health").stdout)
        if keep:
            KEPT.write_text(json.dumps(namespaces.created))
            print(f"left running: {' '.join(namespaces.created)} (remove with `invoke demo-down`)")
            namespaces.created = []
        print(f"demo: {'ok' if code == 0 else 'FAILED'}: applied the sample state to router {net.router}")
        return code == 0
    finally:
        namespaces.close()
        if net is not None and not keep:
            shutil.rmtree(net.root, ignore_errors=True)


def teardown_demo() -> None:
    if not KEPT.exists():
        print("demo-down: nothing to remove")
        return
    for name in reversed(json.loads(KEPT.read_text())):
        kill_processes_in(name)
        run(["ip", "netns", "del", name], check=False)
    os.unlink(KEPT)
    print("demo-down: removed the demo's namespaces")
