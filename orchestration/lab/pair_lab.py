"""A redundant pair in the lab, for the failover tests and `invoke bench-failover`: two container routers
sharing a guest bridge, the public bridge and a sync bridge, one VM behind them, long-lived TCP flows
through source NAT and through a port forward, and a ping probe every 100 ms; `failover()` breaks the
MASTER one way or another and reports how long the VM was cut off and whether every flow held.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestration.commands import Command
from orchestration.lab.bench_upgrade import BENCH_KEYRING
from orchestration.lab.lab import GUEST_DEVICE, PROJECT, PUBLIC_GATEWAY, Lab, public_ip
from orchestration.lab.netlab import Vm
from orchestration.lab.security_fix import installed_version
from orchestration.lab.upgrade_lab import repo_served
from orchestration.manager import Manager
from orchestration.store import Network
from orchestration.upgrade import pairs
from orchestration.upgrade.inplace import UpgradeConfig
from repo import signing
from repo.config import RepoConfig
from repo.publish import publish
from vrpipe.errors import VrpipeError
from vrpipe.run import run, spawn

SYNC_DEVICE = "eth3"
PUBLIC_PORT, VM_PORT, OUTSIDE_PORT = 2200, 7000, 9000  # the port forward (lab.vm_commands), the outside echo
CONNECT_PORT, CONNECT_VM_PORT = 2300, 7100  # a second port forward, for new connections
PROBE_INTERVAL = 0.1
ADVERT_MS = 500
NO_REPORT = '{"error": "ended without a report"}'


@dataclass
class Pair:
    """The two members (`name`a, `name`b) and the VM behind them."""

    name: str
    members: tuple[str, str]
    vm: Vm


@dataclass(frozen=True)
class Traffic:
    """What the VM and the outside saw while something happened to the pair."""

    seconds: float  # the longest cut: from the first unanswered probe to the first answered one
    pings_lost: int
    pings_sent: int
    flows_kept: int
    flows: int
    errors: tuple[str, ...]  # each flow that broke, and how
    connections_failed: int  # new connections through the port forward, one every 100 ms
    connections: int


@dataclass(frozen=True)
class Failover:
    traffic: Traffic
    master_before: str
    master_after: str


def redundancy(name: str) -> dict[str, object]:
    members = [
        {"name": f"{name}a", "sync_address": "172.31.255.1/29", "priority": 200},
        {"name": f"{name}b", "sync_address": "172.31.255.2/29", "priority": 100},
    ]
    return {"router_id": 51, "sync_device": SYNC_DEVICE, "advert_ms": ADVERT_MS, "members": members}


def pair_commands(lab: Lab, name: str, vm: Vm) -> list[Command]:
    """One desired state for both members: the lab's networks, the pair, source NAT and the VM's entries."""
    commands = lab.network_commands(0)
    commands.append(Command("add", "redundancy", redundancy(name)))
    commands.append(Command("add", "source_nat", {"guest_cidr": "10.1.1.0/24", "public_ip": public_ip(0)}))
    forward = {"public_ip": public_ip(0), "protocol": "tcp", "public_ports": str(CONNECT_PORT), "vm_ip": vm.ip}
    commands.append(Command("add", "port_forwarding", {**forward, "vm_ports": str(CONNECT_VM_PORT)}))
    rule = {"direction": "ingress", "public_ip": public_ip(0), "protocol": "tcp", "cidrs": ["0.0.0.0/0"]}
    commands.append(Command("add", "firewall", {**rule, "ports": str(CONNECT_PORT)}))
    return commands + lab.vm_commands(vm, 0, 0)


def create_pair(manager: Manager, lab: Lab, name: str) -> Pair:
    """Both members booted and given the same state; the VM with its lease and an echo server."""
    members = (f"{name}a", f"{name}b")
    vm = lab.add_vm(name, 0, 0)
    networks = [Network(GUEST_DEVICE, f"g-{name}"[:15]), Network("eth2", "pub"), Network(SYNC_DEVICE, f"s-{name}"[:15])]
    for member in members:
        manager.create(member, networks)
    for member in members:
        manager.start(member)
        outcome = manager.apply(member, pair_commands(lab, name, vm))
        if not outcome.ok:
            raise VrpipeError(f"{member} refused the pair's state: {outcome.error}")
    pair = Pair(name, members, vm)
    pairs.wait_for_master(manager, members)
    if not lab.dhcp(vm):
        raise VrpipeError(f"{vm.name} got no lease from the pair")
    _python(vm.ns, "orchestration.lab.flows", "echo", str(VM_PORT))
    _python(vm.ns, "orchestration.lab.traffic", "serve", str(CONNECT_VM_PORT), vm.name)
    _python(lab.public, "orchestration.lab.flows", "echo", str(OUTSIDE_PORT))
    return pair


def _python(ns: str, module: str, *args: str, pipe: bool = False) -> subprocess.Popen[str]:
    return spawn([sys.executable, "-m", module, *args], ns=ns, cwd=PROJECT, pipe=pipe)


def _talk(ns: str, target: str) -> subprocess.Popen[str]:
    """One long-lived flow to target, a line each way every 100 ms."""
    return _python(ns, "orchestration.lab.flows", "talk", target, str(PROBE_INTERVAL), pipe=True)


def under_traffic(manager: Manager, lab: Lab, pair: Pair, action: Callable[[], None]) -> Traffic:
    """Flows, a new connection through the port forward every 100 ms and the ping probe running while
    `action()` runs; what the VM and the outside saw."""
    ping = spawn(["ping", "-n", "-D", "-O", "-i", str(PROBE_INTERVAL), PUBLIC_GATEWAY], ns=pair.vm.ns, pipe=True)
    talks = {
        "source NAT": _talk(pair.vm.ns, f"{PUBLIC_GATEWAY}:{OUTSIDE_PORT}"),
        "port forward": _talk(lab.public, f"{public_ip(0)}:{PUBLIC_PORT}"),
    }
    target = f"{public_ip(0)}:{CONNECT_PORT}"
    connects = _python(lab.public, "orchestration.lab.traffic", "loop", "3600", str(PROBE_INTERVAL), target, pipe=True)
    try:
        time.sleep(3)  # the flows established, and their entries synced to the BACKUP
        action()
    finally:
        ping.send_signal(signal.SIGINT)
        for process in (*talks.values(), connects):
            process.terminate()
    seconds, lost, sent = probe_gap(ping.communicate(timeout=10)[0])
    results = {what: json.loads(talk.communicate(timeout=10)[0] or NO_REPORT) for what, talk in talks.items()}
    errors = tuple(f"{what}: {r['error']}" for what, r in results.items() if r.get("error"))
    loop = json.loads(connects.communicate(timeout=10)[0] or '{"attempts": 0, "failed": -1}')
    return Traffic(seconds, lost, sent, len(talks) - len(errors), len(talks), errors, loop["failed"], loop["attempts"])


def failover(manager: Manager, lab: Lab, pair: Pair, breaks: Callable[[str], None], settle: float = 4) -> Failover:
    """`breaks(master)` under traffic, then wait for the other member to serve and `settle` seconds more."""
    master = pairs.wait_for_master(manager, pair.members)
    after: list[str] = []

    def action() -> None:
        breaks(master)
        after.append(pairs.wait_for_master(manager, pair.members, other_than=master))
        time.sleep(settle)

    return Failover(under_traffic(manager, lab, pair, action), master, after[0] if after else "none")


def probe_gap(output: str) -> tuple[float, int, int]:
    """From `ping -D -O` output: the longest run of unanswered probes in seconds (probes missed times the
    interval: from the first unanswered one to the first answered after it), how many were lost, sent."""
    answered = {int(m) for m in re.findall(r"bytes from .* icmp_seq=(\d+)", output)}
    sent_match = re.search(r"(\d+) packets transmitted", output)
    sent = int(sent_match.group(1)) if sent_match else max(answered, default=0)
    longest = run_length = 0
    for seq in range(1, sent + 1):
        run_length = 0 if seq in answered else run_length + 1
        longest = max(longest, run_length)
    return round(longest * PROBE_INTERVAL, 2), sent - len(answered & set(range(1, sent + 1))), sent


def host_end(manager: Manager, member: str, device: str) -> str:
    """The host end of a member's NIC in the lab's host namespace: pulling it is pulling the cable."""
    return f"vr{manager.store.router(member).id}{device}"[:15]  # the container deployer's naming


def kill_keepalived(manager: Manager) -> Callable[[str], None]:
    def breaks(master: str) -> None:
        manager.transport(master).execute(["systemctl", "kill", "--signal=KILL", "vr-keepalived.service"])

    return breaks


def pull_the_plug(manager: Manager, lab: Lab) -> Callable[[str], None]:
    """The MASTER stops outright: its cables pulled and every process of it killed at once (no goodbye)."""

    def breaks(master: str) -> None:
        for network in manager.store.router(master).networks:
            run(["ip", "link", "set", host_end(manager, master, network.device), "down"], ns=lab.host)
        netns = f"{manager.config.netns_prefix}{master}"
        pids = run(["ip", "netns", "pids", netns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    return breaks


@contextlib.contextmanager
def newer_version_served(manager: Manager, lab: Lab, pair: Pair, work: Path) -> Iterator[UpgradeConfig]:
    """This checkout's packages published as a newer version (after the members' own, what a rollback
    goes back to) in a throw-away repository under `work` whose key the members trust, served to them."""
    assert manager.config.rootfs is not None  # lab routers are containers from a rootfs
    base = installed_version(manager.config.rootfs, "vr-scripts")
    repo = RepoConfig(dir=work / "repo", gnupghome=work / "gnupg")
    try:
        publish(repo, version=base)
        key = run(["gpg", "--batch", "--homedir", str(repo.gnupghome), "--armor", "--export"]).stdout
        for member in pair.members:
            manager.transport(member).copy(key, BENCH_KEYRING)
        publish(repo, version=f"{base}+pair1")
        with repo_served(lab.host, repo.public) as url:
            yield UpgradeConfig(repo_url=url, keyring=BENCH_KEYRING, security=None)
    finally:
        signing.stop_agent(repo.gnupghome)
