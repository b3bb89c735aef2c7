"""What the manager chooses for a redundant pair (`vrpipe create NAME --redundant`): its members' names, the
sync link (a device after the pair's own NICs, a bridge and a /29 of its own from the pair's id) and the
`redundancy` section of its desired state (VRRP router id, the members' sync addresses and priorities).
"""

import ipaddress
import re
from collections.abc import Sequence

from orchestration.commands import Command
from orchestration.store import Network
from vrpipe.errors import SettingsError

# Sync links are /29s of this network, one per pair by its id: keep it off every guest and public network.
SYNC_POOL = ipaddress.IPv4Network("172.30.0.0/16")
SYNC_PREFIX = 29
MEMBERS = ("a", "b")
PRIORITIES = (200, 100)  # member a is MASTER when both start together; neither preempts afterwards
ETH = re.compile(r"eth(\d+)")


def member_names(name: str) -> tuple[str, str]:
    a, b = (f"{name}-{member}" for member in MEMBERS)
    return a, b


def sync_link(pair_id: int) -> tuple[str, str]:
    """The pair's sync bridge and network, from its id."""
    networks = 2 ** (SYNC_PREFIX - SYNC_POOL.prefixlen)
    if not 1 <= pair_id < networks:
        raise SettingsError(f"no sync network left for pair {pair_id}: {SYNC_POOL} holds {networks - 1} pairs")
    network = ipaddress.IPv4Network((int(SYNC_POOL.network_address) + pair_id * 8, SYNC_PREFIX))
    return f"vrsync{pair_id}", str(network)


def sync_device(networks: Sequence[Network]) -> str:
    """The device after the highest ethN of the pair's own NICs (eth0 is the control network)."""
    numbers = [int(m.group(1)) for n in networks if (m := ETH.fullmatch(n.device))]
    return f"eth{max(numbers, default=0) + 1}"


def redundancy(pair_id: int, members: tuple[str, str], device: str, sync_network: str) -> Command:
    """The pair's `redundancy` section: members at the first hosts of the sync network (its highest host is
    the MASTER's own, vr/model.py), the VRRP router id from the pair's id."""
    hosts = list(ipaddress.IPv4Network(sync_network).hosts())
    prefix = ipaddress.IPv4Network(sync_network).prefixlen
    entries = [
        {"name": name, "sync_address": f"{host}/{prefix}", "priority": priority}
        for name, host, priority in zip(members, hosts, PRIORITIES, strict=False)
    ]
    data = {"router_id": (pair_id - 1) % 255 + 1, "sync_device": device, "members": entries}
    return Command("add", "redundancy", data)
