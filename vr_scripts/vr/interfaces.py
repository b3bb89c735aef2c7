"""The router's addresses and routes: brings its devices up, puts the control, guest gateway, public and
private gateway addresses on them, removes the addresses and static routes an earlier state put there and
this one dropped, sets the default route through the public gateway and the static routes, and turns on
IP forwarding. One `ip -batch` run does it all.
"""

import ipaddress
import json
from collections.abc import Mapping, Set
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout
from .model import RouterState
from .run import run

NAME = "interfaces"

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    """Addresses are kernel state, not files: nothing to render."""
    return {}


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    """Nothing to check before the swap: every address and device name was validated."""


def _addresses(state: RouterState) -> list[tuple[str, ipaddress.IPv4Interface]]:
    interfaces = state.interfaces
    pairs = [(interfaces.control.device, interfaces.control.address)] if interfaces.control else []
    pairs += [(g.device, g.gateway) for g in interfaces.guests]
    pairs += [(p.device, a) for p in interfaces.public for a in p.addresses]
    pairs += [(g.device, g.address) for g in state.private_gateways]
    return pairs


def live_addresses() -> set[tuple[str, ipaddress.IPv4Interface]]:
    """(device, address/prefix) of every IPv4 address now configured in this network namespace."""
    links = json.loads(run(["ip", "-j", "-4", "address", "show"]) or "[]")
    return {
        (link["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
        for link in links
        for a in link.get("addr_info", [])
    }


def live_routes() -> set[ipaddress.IPv4Network]:
    """Destinations of the routes in the main table (the kernel drops a route with its device's address)."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show"]) or "[]")
    return {ipaddress.IPv4Network(r["dst"]) for r in routes if r["dst"] != "default"}


def commands(
    old: RouterState,
    new: RouterState,
    live: Set[tuple[str, ipaddress.IPv4Interface]],
    routes: Set[ipaddress.IPv4Network],
) -> list[str]:
    """The `ip -batch` lines that take the kernel from the old addresses and routes to the new ones."""
    wanted = _addresses(new)
    kept = {r.cidr for r in new.static_routes}
    lines = [f"route del {r.cidr}" for r in old.static_routes if r.cidr not in kept and r.cidr in routes]
    dropped = [pair for pair in _addresses(old) if pair not in wanted and pair in live]
    lines += [f"address del {address} dev {device}" for device, address in dropped]
    lines += [f"link set dev {device} up" for device in dict.fromkeys(device for device, _ in wanted)]
    lines += [f"address replace {address} dev {device}" for device, address in wanted]
    public = new.interfaces.public
    lines += [f"route replace default via {p.gateway} dev {p.device}" for p in public[:1] if p.gateway]
    lines += [f"route replace {r.cidr} via {r.next_hop}" for r in new.static_routes]
    return lines


def _kernel_state(state: RouterState) -> tuple[object, ...]:
    return state.interfaces, state.private_gateways, state.static_routes


def activate(change: "Activation") -> str | None:
    if _kernel_state(change.old) == _kernel_state(change.new) and not change.force:
        return None
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    lines = commands(change.old, change.new, live_addresses(), live_routes())
    run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
    return "configured"
