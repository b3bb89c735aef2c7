"""The router's addresses: brings its devices up, puts the control, guest gateway and public addresses
on them, removes the addresses an earlier state put there and this one dropped, sets the default route
through the public gateway, and turns on IP forwarding. One `ip -batch` run does it all.
"""

import ipaddress
import json
from collections.abc import Mapping, Set
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout
from .model import Interfaces, RouterState
from .run import run

NAME = "interfaces"

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    """Addresses are kernel state, not files: nothing to render."""
    return {}


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    """Nothing to check before the swap: every address and device name was validated."""


def _addresses(interfaces: Interfaces) -> list[tuple[str, ipaddress.IPv4Interface]]:
    pairs = [(interfaces.control.device, interfaces.control.address)] if interfaces.control else []
    pairs += [(g.device, g.gateway) for g in interfaces.guests]
    pairs += [(p.device, a) for p in interfaces.public for a in p.addresses]
    return pairs


def live_addresses() -> set[tuple[str, ipaddress.IPv4Interface]]:
    """(device, address/prefix) of every IPv4 address now configured in this network namespace."""
    links = json.loads(run(["ip", "-j", "-4", "address", "show"]) or "[]")
    return {
        (link["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
        for link in links
        for a in link.get("addr_info", [])
    }


def commands(old: Interfaces, new: Interfaces, live: Set[tuple[str, ipaddress.IPv4Interface]]) -> list[str]:
    """The `ip -batch` lines that take the kernel from the old interfaces to the new ones."""
    wanted = _addresses(new)
    dropped = [pair for pair in _addresses(old) if pair not in wanted and pair in live]
    lines = [f"address del {address} dev {device}" for device, address in dropped]
    lines += [f"link set dev {device} up" for device in dict.fromkeys(device for device, _ in wanted)]
    lines += [f"address replace {address} dev {device}" for device, address in wanted]
    lines += [f"route replace default via {p.gateway} dev {p.device}" for p in new.public[:1] if p.gateway]
    return lines


def activate(change: "Activation") -> str | None:
    if change.old.interfaces == change.new.interfaces and not change.force:
        return None
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    lines = commands(change.old.interfaces, change.new.interfaces, live_addresses())
    run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
    return "configured"
