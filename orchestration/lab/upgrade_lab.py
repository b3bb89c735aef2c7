"""Lab set-up for in-place upgrades (`invoke bench-upgrade` and the upgrade tests): a repository served from
inside the hypervisor-host namespace, where routers reach it on the control network; routers with a VM
behind a port forward, a load balancer and source NAT; and traffic through them while they upgrade.
`python -m orchestration.upgrade_lab DIRECTORY HOST:PORT` is the server, run with `ip netns exec`.
"""

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypedDict

from orchestration.commands import Command
from orchestration.fleet import for_each
from orchestration.lab.lab import Lab, public_ip
from orchestration.lab.netlab import Vm
from orchestration.manager import Manager
from vrpipe.errors import VrpipeError
from vrpipe.run import run, spawn

PROJECT = Path(__file__).resolve().parents[2]
REPO_ADDRESS = "169.254.0.1:8080"  # the control gateway, in the hypervisor-host namespace
VM_PORT = 7000
FORWARDED_PORT = 2200  # the lab's port forward to a router's first VM
BALANCED_PORT = 80


class TrafficCounts(TypedDict, total=False):
    """What traffic() counted, filled in when its block ends."""

    connections: int
    failed_connections: int
    errors: list[str]  # the first few
    pings: int
    lost_pings: int


def _python(*args: str) -> list[str]:
    """`python -m ...` of this checkout, as an argv list."""
    return [sys.executable, *args]


def start_repo_server(
    ns: str | None, directory: Path | str, address: str = REPO_ADDRESS, timeout: float = 20.0
) -> subprocess.Popen[str]:
    """repo/serve.py serving `directory` at address inside namespace ns, in its own session (it outlives
    the caller, and goes with the namespace); returns its process once it answers."""
    proc = spawn(_python("-m", "orchestration.lab.upgrade_lab", str(directory), address), ns=ns, cwd=PROJECT,
                 new_session=True)
    probe = ["curl", "-sf", "-o", "/dev/null", "-m", "2", f"http://{address}/dists/"]
    deadline = time.monotonic() + timeout
    while run(probe, ns=ns, check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise VrpipeError(f"the repository server at {address} in {ns} did not come up",
                              hint=f"is {directory} a published repository? (invoke publish-repo)")
        time.sleep(0.1)
    return proc


@contextlib.contextmanager
def repo_served(
    ns: str | None, directory: Path | str, address: str = REPO_ADDRESS, timeout: float = 20.0
) -> Iterator[str]:
    """The repository served for the duration of the block; yields the URL routers use."""
    proc = start_repo_server(ns, directory, address, timeout)
    try:
        yield f"http://{address}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def router_commands(lab: Lab, index: int, vm: Vm) -> list[Command]:
    """The router's networks, its VM (DHCP, metadata, port forward), a load balancer and source NAT."""
    ip = public_ip(index)
    balancer = {"name": "web", "public_ip": ip, "port": BALANCED_PORT, "backends": [{"ip": vm.ip, "port": VM_PORT}]}
    firewall = {"direction": "ingress", "public_ip": ip, "protocol": "tcp", "ports": str(BALANCED_PORT)}
    return [
        *lab.network_commands(index),
        *lab.vm_commands(vm, index, 0),
        Command("add", "source_nat", {"guest_cidr": "10.1.1.0/24", "public_ip": ip}),
        Command("add", "load_balancer", balancer),
        Command("add", "firewall", {**firewall, "cidrs": ["0.0.0.0/0"]}),
    ]


def bring_up(
    manager: Manager,
    lab: Lab,
    names: Sequence[str],
    first_index: int = 1,
    deployer: str = "container",
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Vm]:
    """Create and start routers `names` in parallel, each with a VM answering on VM_PORT that got its
    lease; returns {name: vm}."""
    for name in names:
        lab.create_router(name, deployer)
    started = for_each(names, manager.start, parallel=len(names), progress=progress)
    failed = {n: e for n, e in started.items() if e}
    if failed:
        raise RuntimeError(f"routers did not start: {failed}")
    vms = {}
    for index, name in enumerate(names, first_index):
        vm = lab.add_vm(name, index, 0)
        serve(vm.ns, VM_PORT, vm.name)
        outcome = manager.apply(name, router_commands(lab, index, vm))
        if not outcome.ok:
            raise RuntimeError(f"{name}: {outcome.error}")
        if not lab.dhcp(vm):
            raise RuntimeError(f"{vm.name} got no lease from {name}")
        vms[name] = vm
    return vms


def serve(ns: str, port: int, text: str) -> None:
    """A TCP server in ns answering every connection with text; it goes with the namespace."""
    spawn(_python("-m", "orchestration.lab.traffic", "serve", str(port), text), ns=ns, cwd=PROJECT, new_session=True)


@contextlib.contextmanager
def traffic(public_ns: str, index: int, vm: Vm, interval: float = 0.05) -> Iterator[TrafficCounts]:
    """While the block runs: TCP connections from the public namespace through router `index`'s port
    forward and load balancer, and a ping from the VM through source NAT. Yields a dict that holds the
    counts when the block ends: connections, failed_connections, errors, pings, lost_pings."""
    ip = public_ip(index)
    targets = [f"{ip}:{FORWARDED_PORT}", f"{ip}:{BALANCED_PORT}"]
    loop = _python("-m", "orchestration.lab.traffic", "loop", "600", str(interval), *targets)
    ping = ["ping", "-n", "-i", "0.2", "-w", "600", "203.0.113.1"]
    procs = [spawn(loop, ns=public_ns, cwd=PROJECT, pipe=True), spawn(ping, ns=vm.ns, pipe=True)]
    counts: TrafficCounts = {}
    try:
        yield counts
    finally:
        procs[0].send_signal(signal.SIGTERM)
        procs[1].send_signal(signal.SIGINT)
        loop_out, ping_out = (p.communicate(timeout=30)[0] for p in procs)
    result = json.loads(loop_out)
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", ping_out)
    if summary is None:
        raise VrpipeError(f"ping from {vm.name} through router {index} printed no summary: {ping_out.strip()[-300:]!r}")
    sent, received = map(int, summary.groups())
    counts.update(
        {
            "connections": result["attempts"],
            "failed_connections": result["failed"],
            "errors": result["errors"][:5],
            "pings": sent,
            "lost_pings": sent - received,
        }
    )


if __name__ == "__main__":
    from repo.serve import serve as serve_repo

    serve_repo(Path(sys.argv[1]), sys.argv[2])
