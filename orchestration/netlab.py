"""A router network on this machine made of namespaces: a router running the engine with real nftables,
dnsmasq, haproxy and the metadata service (VR_SERVICES=process), a management namespace on its control
link, guest VMs on a bridge behind its guest device, and a public namespace acting as the outside world.
"""

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Link, Namespaces, run

VR_SCRIPTS = Path(__file__).resolve().parent.parent / "vr_scripts"
CONTROL_DEVICE, GUEST_DEVICE, PUBLIC_DEVICE = "eth0", "eth1", "eth2"


@dataclass
class Vm:
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
    public_ips: tuple = ("203.0.113.10", "203.0.113.11", "203.0.113.12")
    vms: list = field(default_factory=list)

    def interfaces(self):
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

    def add_vm(self, name, mac, ip):
        """A VM namespace on the guest bridge; its address comes later, from DHCP or `set_address`."""
        ns = self.namespaces.add(name)
        self.namespaces.veth(Link(ns, "eth0"), Link(self.router, f"p{len(self.vms)}{name}"[:15]), mac_a=mac)
        run(["ip", "link", "set", f"p{len(self.vms)}{name}"[:15], "master", GUEST_DEVICE], ns=self.router)
        vm = Vm(name, ns, mac, ip)
        self.vms.append(vm)
        return vm

    def engine(self, command, *args, input=None, check=False):
        """Run one of the router's commands (vr-apply, vr-cmd, ...) inside the router namespace."""
        env = ["env", f"VR_ROOT={self.root}", "VR_SERVICES=process"]
        argv = [*env, str(VR_SCRIPTS / "bin" / command), *args]
        return run(argv, ns=self.router, input=input, check=check, timeout=120)

    def apply(self, document):
        proc = self.engine("vr-apply", "-", input=json.dumps(document))
        return proc.returncode, json.loads(proc.stdout)


def make_router_net(namespaces, root=None):
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
