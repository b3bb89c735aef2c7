"""Two lab routers as two VPN sites (r1: tier 10.1.1.0/24, r2: tier 10.2.1.0/24, one VM each), joined by a
site-to-site tunnel over the lab's public bridge; used by tests/e2e/test_vpn.py and `invoke bench-vpn`.
Run as `python -m orchestration.lab.vpn_lab sink PORT | blast HOST PORT SECONDS` inside a VM namespace
for bulk TCP through the tunnel (blast prints the Mbit/s it sent).
"""

import ipaddress
import socket
import sys
import time
from typing import Any

from orchestration.commands import Command
from orchestration.lab.lab import PUBLIC_GATEWAY, Lab
from orchestration.lab.netlab import Vm
from orchestration.manager import Manager
from vrpipe.run import run

PSK = "site-to-site-shared-secret"
SITES = {
    # router: (index, public address, tier gateway, VM address)
    "r1": (1, "203.0.113.11", "10.1.1.1/24", "10.1.1.10"),
    "r2": (2, "203.0.113.12", "10.2.1.1/24", "10.2.1.10"),
}
PEER = {"r1": "r2", "r2": "r1"}


def tier(name: str) -> str:
    return str(ipaddress.ip_interface(SITES[name][2]).network)


def vm_ip(name: str) -> str:
    return SITES[name][3]


def site_commands(name: str, backend: str = "libipsec") -> list[Command]:
    """A site's interfaces, source NAT for its tier, the IPsec backend and its gateway to the other site."""
    _, public, gateway, _ = SITES[name]
    interfaces = {
        "guests": [{"device": "eth1", "gateway": gateway}],
        "public": [{"device": "eth2", "addresses": [f"{public}/24"], "gateway": PUBLIC_GATEWAY}],
    }
    return [
        Command("add", "interfaces", interfaces),
        Command("add", "source_nat", {"guest_cidr": tier(name), "public_ip": public}),
        Command("add", "ipsec", {"backend": backend}),
        Command("add", "vpn_gateways", gateway_data(name)),
    ]


def gateway_data(name: str, psk: str = PSK) -> dict[str, Any]:
    peer = PEER[name]
    return {
        "name": f"to-{peer}",
        "local_address": SITES[name][1],
        "remote_address": SITES[peer][1],
        "remote_cidrs": [tier(peer)],
        "local_tiers": ["eth1"],
        "psk": psk,
        "dpd_seconds": 5,
    }


def add_site(manager: Manager, lab: Lab, name: str) -> Vm:
    """Router `name` created and started, with one VM on its tier at a fixed address."""
    index, _, gateway, address = SITES[name]
    lab.create_router(name)
    manager.start(name)
    vm = lab.add_vm(name, index, 0)
    run(["ip", "address", "add", f"{address}/24", "dev", "eth0"], ns=vm.ns)
    run(["ip", "link", "set", "eth0", "up"], ns=vm.ns)
    run(["ip", "route", "add", "default", "via", gateway.split("/")[0]], ns=vm.ns)
    return vm


def sink(port: int) -> None:
    """Accept connections and read them to the end, forever."""
    server = socket.create_server(("0.0.0.0", port))
    while True:
        conn, _ = server.accept()
        with conn:
            while conn.recv(1 << 16):
                pass


def blast(host: str, port: int, seconds: float) -> None:
    """Send as fast as TCP lets for `seconds`; print the rate in Mbit/s."""
    chunk, sent = b"\0" * (1 << 16), 0
    with socket.create_connection((host, port), timeout=10) as conn:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            conn.sendall(chunk)
            sent += len(chunk)
        elapsed = time.monotonic() - started
    print(f"{sent * 8 / elapsed / 1e6:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    else:
        blast(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
