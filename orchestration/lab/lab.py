"""A lab on this machine: N routers as system containers, each with guest VMs (network namespaces that take
their address from the router with a real DHCP client) and one public namespace playing the outside world
(203.0.113.1). Used by `invoke lab` / `invoke lab-down`, the orchestration tests and `invoke bench-apply`.
"""

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestration.commands import Command
from orchestration.deployers.hostnet import ensure_host, kill_processes_in, plug
from orchestration.fleet import for_each
from orchestration.lab.netlab import Vm
from orchestration.manager import Manager
from orchestration.settings import ManagerConfig
from orchestration.store import Network, Router
from vrpipe.errors import VrpipeError
from vrpipe.run import run

DHCLIENT_SCRIPT = Path(__file__).parent / "files" / "dhclient-script"
PUBLIC_BRIDGE, PUBLIC_GATEWAY = "pub", "203.0.113.1"
GUEST_DEVICE, PUBLIC_DEVICE = "eth1", "eth2"
RECORD = "lab.json"
PROJECT = Path(__file__).resolve().parents[2]
LAB_DIR = PROJECT / "build" / "lab"
LAB_PREFIX = "vrlab-"


def public_ip(index: int) -> str:
    return f"203.0.113.{10 + index}"


def vm_mac(router_index: int, vm_index: int) -> str:
    return f"02:00:00:{router_index:02x}:00:{vm_index + 10:02x}"


class Lab:
    """Namespaces named `<prefix>...` around the manager's routers; every one made is recorded in the
    state directory so that `down()` (or another process) removes exactly those."""

    def __init__(self, manager: Manager, prefix: str):
        self.manager, self.prefix = manager, prefix
        self.host = manager.config.host_netns
        self.public = f"{prefix}pub"
        self.record = manager.config.state_dir / RECORD
        self._guard = threading.Lock()

    def _namespaces(self) -> list[str]:
        return json.loads(self.record.read_text()) if self.record.exists() else []

    def _add_namespace(self, name: str) -> None:
        with self._guard:
            run(["ip", "netns", "add", name])
            self.record.parent.mkdir(parents=True, exist_ok=True)
            self.record.write_text(json.dumps([*self._namespaces(), name]))
        run(["ip", "link", "set", "lo", "up"], ns=name)

    def up_public(self) -> None:
        ensure_host(self.host)
        self._add_namespace(self.public)
        plug(self.host, PUBLIC_BRIDGE, f"{self.prefix}pub"[:15], self.public, "pub0")
        run(["ip", "address", "add", f"{PUBLIC_GATEWAY}/24", "dev", "pub0"], ns=self.public)

    def create_router(self, name: str, deployer: str = "container") -> Router:
        """A router with a guest network (its own host bridge) and a leg on the public bridge."""
        networks = [Network(GUEST_DEVICE, f"g-{name}"[:15]), Network(PUBLIC_DEVICE, PUBLIC_BRIDGE)]
        return self.manager.create(name, networks, deployer=deployer)

    def network_commands(self, index: int, egress: str = "allow") -> list[Command]:
        """The router's guest and public interfaces and egress policy, as commands."""
        interfaces = {
            "guests": [{"device": GUEST_DEVICE, "gateway": "10.1.1.1/24", "domain": "cloud.internal"}],
            "public": [{"device": PUBLIC_DEVICE, "addresses": [f"{public_ip(index)}/24"], "gateway": PUBLIC_GATEWAY}],
        }
        return [Command("add", "interfaces", interfaces), Command("add", "egress_policy", {"default": egress})]

    def add_vm(self, router: str, router_index: int, vm_index: int) -> Vm:
        """A VM namespace plugged into the router's guest bridge; its address comes from DHCP."""
        name = f"{self.prefix}{router}-vm{vm_index}"
        self._add_namespace(name)
        mac = vm_mac(router_index, vm_index)
        plug(self.host, f"g-{router}"[:15], f"{self.prefix[:4]}{router_index}v{vm_index}"[:15], name, "eth0", mac)
        return Vm(name, name, mac, f"10.1.1.{vm_index + 10}")

    def add_host(self, name: str, bridge: str, mac: str, address: str, gateway: str) -> Vm:
        """A namespace on a host bridge with a fixed address/prefix and `gateway` as its default route: a VM
        of a VPC tier, or a customer's router behind a private gateway."""
        ns = f"{self.prefix}{name}"
        self._add_namespace(ns)
        plug(self.host, bridge, f"{self.prefix[:4]}{name}"[:15], ns, "eth0", mac)
        run(["ip", "address", "add", address, "dev", "eth0"], ns=ns)
        run(["ip", "route", "add", "default", "via", gateway], ns=ns)
        return Vm(name, ns, mac, address.split("/")[0])

    def vm_commands(self, vm: Vm, router_index: int, vm_index: int) -> list[Command]:
        """What one VM needs on its router: DHCP, metadata, a port forward and the firewall rule for it."""
        port = 2200 + vm_index
        address = public_ip(router_index)
        return [
            Command("add", "dhcp", {"mac": vm.mac, "ip": vm.ip, "hostname": f"vm{vm_index}"}),
            Command(
                "add", "vm_data", {"vm_ip": vm.ip, "metadata": {"instance-id": vm.name, "local-hostname": vm.name}}
            ),
            Command(
                "add",
                "port_forwarding",
                {
                    "public_ip": address,
                    "protocol": "tcp",
                    "public_ports": str(port),
                    "vm_ip": vm.ip,
                    "vm_ports": "7000",
                },
            ),
            Command(
                "add",
                "firewall",
                {
                    "direction": "ingress",
                    "public_ip": address,
                    "protocol": "tcp",
                    "ports": str(port),
                    "cidrs": ["0.0.0.0/0"],
                },
            ),
        ]

    def dhcp(self, vm: Vm, state_dir: Path | str | None = None) -> bool:
        """Run a real DHCP client once in the VM; True when it got a lease."""
        files = Path(state_dir or self.manager.config.state_dir) / "dhclient"
        files.mkdir(exist_ok=True)
        argv = ["dhclient", "-1", "-4", "-sf", str(DHCLIENT_SCRIPT), "-lf", str(files / f"{vm.name}.leases")]
        argv += ["-pf", str(files / f"{vm.name}.pid"), "eth0"]
        return run(argv, ns=vm.ns, check=False, timeout=60).returncode == 0

    def down(self) -> None:
        """Destroy every pair and router in the store, then remove the lab's namespaces (and what runs in them)."""
        for pair in self.manager.store.pairs():
            self.manager.destroy(pair.name)
        for router in self.manager.store.routers():
            self.manager.destroy(router.name)
        for name in reversed(self._namespaces()):
            kill_processes_in(name)
            run(["ip", "netns", "del", name], check=False)
        self.record.unlink(missing_ok=True)
        host = self.host
        if host in run(["ip", "netns", "list"]).stdout.split():
            kill_processes_in(host)
            run(["ip", "netns", "del", host], check=False)


def lab_config(
    rootfs: Path | str | None = None, state_dir: Path | str = LAB_DIR, prefix: str = LAB_PREFIX
) -> ManagerConfig:
    """A lab's manager settings: its own state directory and namespaces (named `prefix`...)."""
    if rootfs is None:
        from image.build import Template

        rootfs = Template(PROJECT / "build" / "template").rootfs_dir
    rootfs = Path(rootfs)  # `invoke lab --rootfs` passes it as text: the manager needs a Path
    if not (rootfs / "opt/vr/bin/vr-apply").exists():
        raise VrpipeError(f"{rootfs} holds no router rootfs", hint="build the template first: invoke build-template")
    host = f"{prefix}hv"
    return ManagerConfig(Path(state_dir), rootfs=rootfs, host_netns=host, ssh_netns=host, netns_prefix=prefix)


def lab_up(
    routers: int,
    vms: int,
    rootfs: Path | str | None = None,
    repo: Path | None = None,
    progress: Callable[[str], None] = print,
) -> str:
    """Start a lab of `routers` routers with `vms` VMs each, every VM with its lease, and our repository
    (the served tree `repo`, if given) on the control network at 169.254.0.1:8080; returns the summary."""
    from orchestration.lab.upgrade_lab import REPO_ADDRESS, start_repo_server

    started = time.monotonic()
    config = lab_config(rootfs)
    if (config.state_dir / RECORD).exists():
        raise VrpipeError(f"a lab is already up in {config.state_dir}", hint="invoke lab-down first")
    config.save()
    with Manager(config) as manager:
        lab = Lab(manager, LAB_PREFIX)
        lab.up_public()
        served = ""
        if repo is not None and Path(repo).is_dir():
            start_repo_server(lab.host, repo)
            served = f"; our repository at http://{REPO_ADDRESS}/"

        def bring_up(name: str) -> None:
            index = int(name[1:])
            lab.create_router(name)
            manager.start(name)
            guests = [lab.add_vm(name, index, i) for i in range(vms)]
            commands = lab.network_commands(index)
            for i, vm in enumerate(guests):
                commands += lab.vm_commands(vm, index, i)
            outcome = manager.apply(name, commands)
            if not outcome.ok:
                raise VrpipeError(outcome.error or "the router refused the commands")
            missing = [vm.name for vm in guests if not lab.dhcp(vm)]
            if missing:
                raise VrpipeError(f"no DHCP lease for {', '.join(missing)}")

        results = for_each([f"r{i}" for i in range(1, routers + 1)], bring_up, 4, progress)
    failed = [name for name, error in results.items() if error]
    summary = (
        f"lab: {routers - len(failed)}/{routers} routers up with {vms} VMs each in {time.monotonic() - started:.0f}s"
        f"{served} (VRPIPE_STATE_DIR={config.state_dir} vrpipe list; invoke lab-down removes it)"
    )
    if failed:
        why = "; ".join(f"{name}: {results[name]}" for name in failed)
        raise VrpipeError(f"{summary}: {why}", hint="invoke lab-down; each router's console.log is in the lab folder")
    return summary


def lab_down(state_dir: Path | str = LAB_DIR, progress: Callable[[str], None] = print) -> str:
    """Remove the lab: its routers, namespaces and state directory contents (keeps nothing running)."""
    if not (Path(state_dir) / "config.json").exists():
        return f"lab-down: no lab in {state_dir}"
    config = ManagerConfig.load(state_dir)
    with Manager(config) as manager:
        count = len(manager.store.routers())
        Lab(manager, LAB_PREFIX).down()
    for leftover in ("vrpipe.db", "config.json"):
        (Path(state_dir) / leftover).unlink(missing_ok=True)
    return f"lab-down: removed {count} routers and the lab's namespaces"


@contextlib.contextmanager
def throwaway_lab(rootfs: Path | str | None, prefix: str) -> Iterator[tuple[Manager, Lab]]:
    """A manager and its lab (public namespace up) in a temporary state directory, for a benchmark;
    every router, namespace and file of it is removed afterwards."""
    state_dir = tempfile.mkdtemp(prefix="vrpipe-bench-")
    try:
        with Manager(lab_config(rootfs, state_dir, prefix)) as manager:
            lab = Lab(manager, prefix)
            try:
                lab.up_public()
                yield manager, lab
            finally:
                lab.down()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
