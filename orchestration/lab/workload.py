"""Synthetic router workloads for benchmarks and load tests: the desired state of a router serving N VMs
(a DHCP entry, a metadata set, a port forward and a firewall rule per VM), as engine sections.
"""

import base64
import ipaddress
from collections.abc import Iterable
from typing import Any

GUEST_NETWORK = ipaddress.IPv4Network("10.128.0.0/16")
PUBLIC_IP = "203.0.113.10"


def vm_address(i: int) -> str:
    return str(GUEST_NETWORK.network_address + 10 + i)


def vm_mac(i: int) -> str:
    return "02:00:" + ":".join(f"{b:02x}" for b in (i + 10).to_bytes(4, "big"))


def vm_sections(i: int) -> dict[str, dict[str, Any]]:
    """The four items one VM brings, keyed by section."""
    ip = vm_address(i)
    source = str(ipaddress.IPv4Network(f"198.51.{i % 256}.0/24"))
    return {
        "dhcp": {"mac": vm_mac(i), "ip": ip, "hostname": f"vm{i}"},
        "vm_data": {
            "vm_ip": ip,
            "metadata": {"instance-id": f"i-{i:06d}", "local-hostname": f"vm{i}", "availability-zone": "zone1"},
            "public_keys": [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{i:08d} user@vm{i}"],
            "user_data": base64.b64encode(f"#cloud-config\nhostname: vm{i}\n".encode()).decode(),
            "password": f"pw{i:06d}",
        },
        "port_forwarding": {
            "public_ip": PUBLIC_IP,
            "protocol": "tcp",
            "public_ports": str(20000 + i),
            "vm_ip": ip,
            "vm_ports": "22",
        },
        "firewall": {
            "direction": "ingress",
            "public_ip": PUBLIC_IP,
            "protocol": "tcp",
            "ports": str(20000 + i),
            "cidrs": [source],
        },
    }


def interfaces(
    control_ip: str = "169.254.10.2",
    control_device: str = "eth0",
    guest_device: str = "eth1",
    public_device: str = "eth2",
) -> dict[str, Any]:
    return {
        "control": {"device": control_device, "address": f"{control_ip}/16"},
        "guests": [
            {"device": guest_device, "gateway": f"{GUEST_NETWORK.network_address + 1}/{GUEST_NETWORK.prefixlen}"}
        ],
        "public": [{"device": public_device, "addresses": [f"{PUBLIC_IP}/24"], "gateway": "203.0.113.1"}],
    }


def fleet_state(vms: int, **interface_names: str) -> dict[str, Any]:
    """A whole state with `vms` VMs (vms <= 40000, so ports and addresses stay distinct)."""
    state: dict[str, Any] = {
        "interfaces": interfaces(**interface_names),
        "source_nat": [{"guest_cidr": str(GUEST_NETWORK), "public_ip": PUBLIC_IP}],
    }
    for section in ("dhcp", "vm_data", "port_forwarding", "firewall"):
        state[section] = [vm_sections(i)[section] for i in range(vms)]
    return state


def vm_commands(indices: Iterable[int]) -> list[dict[str, Any]]:
    """Batch commands adding every item of the VMs with these indices."""
    return [{"op": "add", "type": s, "data": d} for i in indices for s, d in vm_sections(i).items()]
