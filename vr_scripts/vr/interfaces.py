"""The router's addresses and routes: brings its devices up, puts the control, guest gateway, public and
private gateway addresses on them, removes the addresses and static routes an earlier state put there and
this one dropped (taking down a device it no longer uses), sets the default route through the public
gateway and the static routes, and turns on IP forwarding. One `ip -batch` run does it all. A member of a
redundant pair holds the guest gateways, public and private gateway addresses only while it is MASTER
(vr/redundancy.py).
"""

import ipaddress
import json
from collections.abc import Mapping, Set
from pathlib import Path
from typing import TYPE_CHECKING

from . import redundancy
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


def _addresses(state: RouterState, layout: Layout, holding: bool) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """The addresses this router should have now; `holding`: the virtual ones too (MASTER, or no pair)."""
    interfaces = state.interfaces
    pairs = [(interfaces.control.device, interfaces.control.address)] if interfaces.control else []
    pairs += redundancy.own_addresses(state, layout)
    return pairs + (redundancy.virtual_addresses(state) if holding else [])


def _devices(state: RouterState, layout: Layout) -> list[str]:
    """Every device the router uses, up also on a BACKUP, which holds no address on most of them."""
    return list(dict.fromkeys(device for device, _ in _addresses(state, layout, True)))


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
    layout: Layout,
    live: Set[tuple[str, ipaddress.IPv4Interface]],
    routes: Set[ipaddress.IPv4Network],
) -> list[str]:
    """The `ip -batch` lines that take the kernel from the old state's addresses and routes to the new one's."""
    holding = redundancy.holds_virtual_addresses(new, layout)
    wanted = _addresses(new, layout, holding)
    kept = {r.cidr for r in new.static_routes}
    lines = [f"route del {r.cidr}" for r in old.static_routes if r.cidr not in kept and r.cidr in routes]
    dropped = [pair for pair in _addresses(old, layout, True) if pair not in wanted and pair in live]
    lines += [f"address del {address} dev {device}" for device, address in dropped]
    devices = _devices(new, layout)
    # A device the state let go of goes down, which also takes its IPv6 link-local address: dnsmasq
    # (2.91, bind-dynamic) drops every IPv4 listener when a device vanishes while it lists addresses,
    # as an unplugged NIC with an address does.
    lines += [f"link set dev {device} down" for device in dict.fromkeys(d for d, _ in dropped) if device not in devices]
    lines += [f"link set dev {device} up" for device in devices]
    lines += [f"address replace {address} dev {device}" for device, address in wanted]
    # onlink: a BACKUP has no address on the public network, and the route must hold the moment it has one
    onlink = " onlink" if new.redundancy else ""
    gateways = [p for p in new.interfaces.public[:1] if p.gateway]
    lines += [f"route replace default via {p.gateway} dev {p.device}{onlink}" for p in gateways]
    lines += [f"route replace {r.cidr} via {r.next_hop} dev {_device_of(new, r.next_hop)}{onlink}"
              for r in new.static_routes]
    return lines


def _device_of(state: RouterState, address: ipaddress.IPv4Address) -> str:
    """The device of the network a next hop is on (validated: there is one)."""
    return next(device for device, network in state.connected() if address in network)


def _kernel_state(state: RouterState) -> tuple[object, ...]:
    return state.interfaces, state.redundancy, state.private_gateways, state.static_routes


def activate(change: "Activation") -> str | None:
    old, new = change.old, change.new
    if _kernel_state(old) == _kernel_state(new) and not change.force:
        return None
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    # A BACKUP's haproxy and metadata service listen on addresses it does not hold yet.
    Path("/proc/sys/net/ipv4/ip_nonlocal_bind").write_text("1\n" if new.redundancy else "0\n")
    with redundancy.role_locked(change.layout):
        lines = commands(old, new, change.layout, live_addresses(), live_routes())
        run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
    return "configured"
