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
from collections.abc import Callable
from dataclasses import dataclass

from vr import contract

from orchestration.commands import Command
from orchestration.lab.lab import GUEST_DEVICE, PROJECT, PUBLIC_GATEWAY, Lab, public_ip
from orchestration.lab.netlab import Vm
from orchestration.manager import Manager
from orchestration.store import Network
from vrpipe.errors import VrpipeError
from vrpipe.run import run, spawn

SYNC_DEVICE = "eth3"
PUBLIC_PORT, VM_PORT, OUTSIDE_PORT = 2200, 7000, 9000  # the port forward (lab.vm_commands), the outside echo
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
class Failover:
    """What one failover cost, as measured from the VM and the outside."""

    seconds: float  # from the first unanswered probe to the first answered one
    pings_lost: int
    pings_sent: int
    flows_kept: int
    flows: int
    errors: tuple[str, ...]  # each flow that broke, and how
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
    wait_for_master(manager, pair)
    if not lab.dhcp(vm):
        raise VrpipeError(f"{vm.name} got no lease from the pair")
    _python(vm.ns, "orchestration.lab.flows", "echo", str(VM_PORT))
    _python(lab.public, "orchestration.lab.flows", "echo", str(OUTSIDE_PORT))
    return pair


def _python(ns: str, module: str, *args: str, pipe: bool = False) -> subprocess.Popen[str]:
    return spawn([sys.executable, "-m", module, *args], ns=ns, cwd=PROJECT, pipe=pipe)


def _talk(ns: str, target: str) -> subprocess.Popen[str]:
    """One long-lived flow to target, a line each way every 100 ms."""
    return _python(ns, "orchestration.lab.flows", "talk", target, str(PROBE_INTERVAL), pipe=True)


def role(manager: Manager, member: str) -> str:
    """MASTER, BACKUP, or `down` when the member does not answer."""
    with contextlib.suppress(Exception):  # a member cut off or stopped: that is what `down` says
        status, out = manager.transport(member).execute([contract.command("vr-vrrp"), "status"], timeout=5)
        if status == 0:
            return str(json.loads(out)["role"])
    return "down"


def roles(manager: Manager, pair: Pair) -> dict[str, str]:
    return {member: role(manager, member) for member in pair.members}


def wait_for_master(manager: Manager, pair: Pair, timeout: float = 30, other_than: str | None = None) -> str:
    """The member that is MASTER once exactly one is (and it is not `other_than`)."""
    deadline = time.monotonic() + timeout
    while True:
        now = roles(manager, pair)
        masters = [m for m, r in now.items() if r == "MASTER"]
        if len(masters) == 1 and masters[0] != other_than:
            return masters[0]
        if time.monotonic() > deadline:
            raise VrpipeError(f"pair {pair.name}: no single MASTER within {timeout:.0f}s ({now})")
        time.sleep(0.2)


def failover(manager: Manager, lab: Lab, pair: Pair, breaks: Callable[[str], None], settle: float = 4) -> Failover:
    """Flows and the probe running, `breaks(master)`, then wait for the other member to serve and `settle`
    seconds more; what the VM and the outside saw."""
    master = wait_for_master(manager, pair)
    ping = spawn(["ping", "-n", "-D", "-O", "-i", str(PROBE_INTERVAL), PUBLIC_GATEWAY], ns=pair.vm.ns, pipe=True)
    talks = {
        "source NAT": _talk(pair.vm.ns, f"{PUBLIC_GATEWAY}:{OUTSIDE_PORT}"),
        "port forward": _talk(lab.public, f"{public_ip(0)}:{PUBLIC_PORT}"),
    }
    try:
        time.sleep(3)  # the flows established, and their entries synced to the BACKUP
        breaks(master)
        after = wait_for_master(manager, pair, other_than=master)
        time.sleep(settle)
    finally:
        ping.send_signal(signal.SIGINT)
        for talk in talks.values():
            talk.terminate()
    seconds, lost, sent = probe_gap(ping.communicate(timeout=10)[0])
    results = {what: json.loads(talk.communicate(timeout=10)[0] or NO_REPORT) for what, talk in talks.items()}
    errors = tuple(f"{what}: {r['error']}" for what, r in results.items() if r.get("error"))
    return Failover(seconds, lost, sent, len(talks) - len(errors), len(talks), errors, master, after)


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


def kill_keepalived(manager: Manager) -> Callable[[str], None]:
    def breaks(master: str) -> None:
        manager.transport(master).execute(["systemctl", "kill", "--signal=KILL", "vr-keepalived.service"])

    return breaks


def pull_the_plug(manager: Manager, lab: Lab) -> Callable[[str], None]:
    """The MASTER stops outright: its cables pulled and every process of it killed at once (no goodbye)."""

    def breaks(master: str) -> None:
        router = manager.store.router(master)
        for network in router.networks:
            run(["ip", "link", "set", f"vr{router.id}{network.device}"[:15], "down"], ns=lab.host)
        netns = f"{manager.config.netns_prefix}{master}"
        pids = run(["ip", "netns", "pids", netns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    return breaks
