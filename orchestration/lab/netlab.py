"""A router network on this machine made of namespaces: a router running the engine with real nftables,
dnsmasq, haproxy and the metadata service (VR_SERVICES=process), a management namespace on its control
link, guest VMs on a bridge behind its guest device, and a public namespace acting as the outside world.
"""

import base64
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.lab.netns import Link, Namespaces
from vrpipe.run import run

VR_SCRIPTS = Path(__file__).resolve().parents[2] / "vr_scripts"
DHCLIENT_SCRIPT = Path(__file__).resolve().parent / "files" / "dhclient-script"
CONTROL_DEVICE, GUEST_DEVICE, PUBLIC_DEVICE = "eth0", "eth1", "eth2"
SAMPLE_VMS = (
    ("vm1", "02:00:0a:01:01:05", "10.1.1.5"),
    ("vm2", "02:00:0a:01:01:06", "10.1.1.6"),
    ("vm3", "02:00:0a:01:01:07", "10.1.1.7"),
)
USER_DATA = "#cloud-config\nhostname: vm1\n"


@dataclass(frozen=True)
class Vm:
    """A VM of the lab: a network namespace with one NIC (eth0) behind a router."""

    name: str
    ns: str
    mac: str
    ip: str


@dataclass
class RouterNet:
    """Addresses of the sample network: control 169.254.0.0/16, guests 10.1.1.0/24, public 203.0.113.0/24."""

    namespaces: Namespaces
    root: Path
    router: str
    manager: str
    public: str
    control_ip: str = "169.254.10.2"
    manager_ip: str = "169.254.10.1"
    gateway: str = "10.1.1.1"
    public_gateway: str = "203.0.113.1"
    public_ips: tuple[str, ...] = ("203.0.113.10", "203.0.113.11", "203.0.113.12")
    vms: list[Vm] = field(default_factory=list)

    def interfaces(self) -> dict[str, Any]:
        return {
            "control": {"device": CONTROL_DEVICE, "address": f"{self.control_ip}/16"},
            "guests": [{"device": GUEST_DEVICE, "gateway": f"{self.gateway}/24", "domain": "cloud.internal"}],
            "public": [
                {
                    "device": PUBLIC_DEVICE,
                    "addresses": [f"{ip}/24" for ip in self.public_ips],
                    "gateway": self.public_gateway,
                }
            ],
        }

    def add_vm(self, name: str, mac: str, ip: str) -> Vm:
        """A VM namespace on the guest bridge; its address comes later, from DHCP or `set_address`."""
        ns = self.namespaces.add(name)
        self.namespaces.veth(Link(ns, "eth0"), Link(self.router, f"p{len(self.vms)}{name}"[:15]), mac_a=mac)
        run(["ip", "link", "set", f"p{len(self.vms)}{name}"[:15], "master", GUEST_DEVICE], ns=self.router)
        vm = Vm(name, ns, mac, ip)
        self.vms.append(vm)
        return vm

    def dhcp(self, vm: Vm) -> subprocess.CompletedProcess[str]:
        """Run a real DHCP client in the VM's namespace; it configures the address dnsmasq hands out."""
        files = self.root / "vm-dhclient"
        files.mkdir(exist_ok=True)
        argv = ["dhclient", "-1", "-4", "-sf", str(DHCLIENT_SCRIPT)]
        argv += ["-lf", str(files / f"{vm.name}.leases"), "-pf", str(files / f"{vm.name}.pid"), "eth0"]
        return run(argv, ns=vm.ns, check=False, timeout=60)

    def engine(
        self, command: str, *args: str, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the router's commands (vr-apply, vr-cmd, ...) inside the router namespace."""
        env = ["env", f"VR_ROOT={self.root}", "VR_SERVICES=process"]
        argv = [*env, str(VR_SCRIPTS / "bin" / command), *args]
        return run(argv, ns=self.router, input=input, check=check, timeout=120)

    def apply(self, document: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        proc = self.engine("vr-apply", "-", input=json.dumps(document))
        return proc.returncode, json.loads(proc.stdout)


def make_router_net(namespaces: Namespaces, root: Path | str | None = None) -> RouterNet:
    """Namespaces and links for one router; the router's root directory holds everything it writes."""
    root = Path(root or tempfile.mkdtemp(prefix="vr-root-"))
    os.chmod(root, 0o755)
    router, manager, public = (namespaces.add(role) for role in ("r", "m", "pub"))
    net = RouterNet(namespaces, root, router, manager, public)
    namespaces.veth(Link(router, CONTROL_DEVICE), Link(manager, "ctl0"))
    run(["ip", "address", "add", f"{net.manager_ip}/16", "dev", "ctl0"], ns=manager)
    namespaces.bridge(router, GUEST_DEVICE)
    namespaces.veth(Link(router, PUBLIC_DEVICE), Link(public, "pub0"))
    run(["ip", "address", "add", f"{net.public_gateway}/24", "dev", "pub0"], ns=public)
    return net


def sample_state(net: RouterNet, vms: Sequence[Vm]) -> dict[str, Any]:
    """A state with DHCP, metadata, firewall, port forwarding, static NAT, source NAT and a load balancer."""
    vm1, vm2, vm3 = vms
    any_source = ["0.0.0.0/0"]
    return {
        "interfaces": net.interfaces(),
        "egress_policy": {"default": "deny"},
        "source_nat": [{"guest_cidr": "10.1.1.0/24", "public_ip": "203.0.113.10"}],
        "firewall": [
            {
                "direction": "ingress",
                "public_ip": "203.0.113.10",
                "protocol": "tcp",
                "ports": "2201-2202",
                "cidrs": any_source,
            },
            {"direction": "ingress", "public_ip": "203.0.113.10", "protocol": "tcp", "ports": 80, "cidrs": any_source},
            {
                "direction": "ingress",
                "public_ip": "203.0.113.11",
                "protocol": "tcp",
                "ports": 7000,
                "cidrs": any_source,
            },
            {"direction": "egress", "protocol": "tcp", "ports": 9000, "cidrs": ["203.0.113.0/24"]},
            {"direction": "egress", "protocol": "icmp", "cidrs": ["203.0.113.1/32"]},
        ],
        "port_forwarding": [
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2201", "vm_ip": vm1.ip, "vm_ports": 7000},
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2202", "vm_ip": vm2.ip, "vm_ports": 7000},
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2203", "vm_ip": vm2.ip, "vm_ports": 7000},
        ],
        "static_nat": [{"public_ip": "203.0.113.11", "vm_ip": vm3.ip}],
        "load_balancer": [
            {
                "name": "web",
                "public_ip": "203.0.113.10",
                "port": 80,
                "backends": [{"ip": vm1.ip, "port": 7000}, {"ip": vm2.ip, "port": 7000}],
                "health_check": {"interval_ms": 500},
            }
        ],
        "dhcp": [{"mac": vm.mac, "ip": vm.ip, "hostname": vm.name} for vm in vms],
        "vm_data": [
            {
                "vm_ip": vm1.ip,
                "metadata": {"instance-id": "i-vm1", "local-hostname": "vm1", "availability-zone": "zone1"},
                "public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample vm1@test"],
                "user_data": base64.b64encode(USER_DATA.encode()).decode(),
                "password": "pw-of-vm1",
            },
            {"vm_ip": vm2.ip, "metadata": {"instance-id": "i-vm2"}},
        ],
    }
