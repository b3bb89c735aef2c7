"""Checks that look at the whole desired state at once: duplicates, conflicts between rules, and references
to addresses the router does not have. Each problem names the command or entry that brought in the item,
through the `origin(section, item)` function the caller passes. A batch checks only what involves the
items it brought and the sections they are in: the persisted rest passed these checks when it was
persisted, against the same interfaces (a batch that sets the interfaces is checked whole).
"""

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, Protocol

from . import vpn
from .fields import PortRange, Problem
from .intervals import MAX_CIDRS, MAX_LAYERS, bounds, layers
from .model import (
    SECTIONS,
    AclRule,
    FirewallRule,
    Interfaces,
    LoadBalancer,
    PortForward,
    PrivateGateway,
    RouterState,
    StaticRoute,
)

ALL = frozenset(SECTIONS)
VPC_SECTIONS = frozenset(("interfaces", "network_acls", "private_gateways", "static_routes"))

PERSISTED = "persisted state"
Origin = Callable[[str, Any], str]  # (section name, item of that section) -> where the document wrote it
New = Callable[[str], Sequence[Any]]  # section name -> its items to check (of that section's dataclass)


class Report(Protocol):
    """check_state's `report`: names the item at fault (and the field), or the one of a conflicting pair."""

    def __call__(
        self, section: str, item: object, error: str, field: str | None = None, other: tuple[str, object] | None = None
    ) -> None: ...


def check_state(
    state: RouterState, origin: Origin, brought: Mapping[str, Sequence[object]] | None = None
) -> list[Problem]:
    """Every cross-item problem of `state`, each located by `origin(section_name, item)`; for a batch, those
    that involve `brought`, the items its commands put in the state by section (None: a whole state)."""
    problems: list[Problem] = []
    if brought is not None and "interfaces" in brought:
        brought = None  # every address is checked against the interfaces
    touched = ALL if brought is None else set(brought)

    def new(section: str) -> Sequence[Any]:
        """The items of `section` that per-item checks look at."""
        return getattr(state, section) if brought is None else brought.get(section, ())

    def report(
        section: str, item: object, error: str, field: str | None = None, other: tuple[str, object] | None = None
    ) -> None:
        """Name the item at fault; in a conflict with `other` (section, item), the one the document brought."""
        where = origin(section, item)
        if other is not None:
            other_where = origin(*other)
            if where.startswith(PERSISTED) and not other_where.startswith(PERSISTED):
                where, other_where = other_where, where
                field = None
            error = f"{error} (conflicts with {other_where})"
        problems.append(Problem(f"{where}.{field}" if field else where, error))

    if "interfaces" in touched:
        _check_interfaces(state.interfaces, report)
    if touched & {"interfaces", "redundancy"} and state.redundancy:
        _check_sync_link(state, report)
    guests = [g.gateway.network for g in state.interfaces.guests]
    public = state.interfaces.public_addresses
    _check_vm_addresses(state, guests, report, new)
    _check_public_addresses(state, public, report, new, touched)
    _check_unique(state, report, touched)
    if touched & {"port_forwarding", "load_balancer"}:
        _check_port_conflicts(state, report)
    if "firewall" in touched:
        _check_firewall_size(state, report)
    if touched & VPC_SECTIONS:
        _check_vpc(state, report, new, whole=brought is None)
    if "network_acls" in touched:
        _check_acl_size(state, report)
    if touched & {"interfaces", "vpn_gateways", "remote_access"}:
        vpn.check_state(state, report)
    return problems


def _check_interfaces(interfaces: Interfaces, report: Report) -> None:
    devices = [i.device for i in (interfaces.control, *interfaces.guests, *interfaces.public) if i]
    for device in {d for d in devices if devices.count(d) > 1}:
        report("interfaces", interfaces, f"device {device} is used by more than one interface", "device")
    networks = [g.gateway.network for g in interfaces.guests]
    for i, net in enumerate(networks):
        for other in networks[i + 1 :]:
            if net.overlaps(other):
                report("interfaces", interfaces, f"guest networks {net} and {other} overlap", "guests")
    for guest in interfaces.guests:
        if guest.gateway.network.prefixlen > 30:
            report("interfaces", interfaces, f"guest network {guest.gateway.network} is too small", "guests")
    addresses = [a.ip for p in interfaces.public for a in p.addresses]
    for ip in {a for a in addresses if addresses.count(a) > 1}:
        report("interfaces", interfaces, f"public address {ip} is listed twice", "public")


def _check_sync_link(state: RouterState, report: Report) -> None:
    """The sync link is a device and a network of its own: sharing one with traffic would let a guest
    speak VRRP or feed the connection table."""
    interfaces, pair = state.interfaces, state.redundancy
    assert pair is not None  # checked by the caller
    devices = {i.device for i in (interfaces.control, *interfaces.guests, *interfaces.public) if i}
    if pair.sync_device in devices:
        report("redundancy", pair, f"{pair.sync_device} is already one of the router's interfaces", "sync_device")
    sync = pair.members[0].sync_address.network
    used = [g.gateway.network for g in interfaces.guests] + [a.network for p in interfaces.public for a in p.addresses]
    used += [interfaces.control.address.network] if interfaces.control else []
    for net in used:
        if net.overlaps(sync):
            report("redundancy", pair, f"sync network {sync} overlaps {net}", "members")


def _guest_address_error(ip: ipaddress.IPv4Address, guests: Sequence[ipaddress.IPv4Network]) -> str | None:
    for net in guests:
        if ip in net:
            if ip in (net.network_address, net.broadcast_address):
                return f"{ip} is the network or broadcast address of {net}"
            return None
    return f"{ip} is not in any guest network ({', '.join(map(str, guests)) or 'none configured'})"


def _check_vm_addresses(state: RouterState, guests: Sequence[ipaddress.IPv4Network], report: Report, new: New) -> None:
    gateways = {g.gateway.ip for g in state.interfaces.guests}
    vm_fields = [
        ("port_forwarding", "vm_ip"),
        ("static_nat", "vm_ip"),
        ("dhcp", "ip"),
        ("vm_data", "vm_ip"),
    ]
    for section, name in vm_fields:
        for item in new(section):
            ip = getattr(item, name)
            error = _guest_address_error(ip, guests)
            if ip in gateways:
                error = f"{ip} is the router's own gateway address"
            if error:
                report(section, item, error, name)
    for lb in new("load_balancer"):
        for backend in lb.backends:
            error = _guest_address_error(backend.ip, guests)
            if error:
                report("load_balancer", lb, error, "backends")
    for snat in new("source_nat"):
        if not any(snat.guest_cidr.subnet_of(net) for net in guests):
            report("source_nat", snat, f"{snat.guest_cidr} is not within a guest network", "guest_cidr")


def _check_public_addresses(
    state: RouterState, public: Set[ipaddress.IPv4Address], report: Report, new: New, touched: Set[str]
) -> None:
    uses = ("source_nat", "port_forwarding", "static_nat", "load_balancer", "firewall")
    for section in uses:
        for item in new(section):
            if item.public_ip not in public and (section != "firewall" or item.direction == "ingress"):
                report(section, item, f"{item.public_ip} is not one of the router's public addresses", "public_ip")
    one_to_one = {s.public_ip: s for s in state.static_nat}
    for section in ("source_nat", "port_forwarding", "load_balancer"):
        # A new static NAT takes its address from every other use; otherwise only new uses can collide.
        for item in getattr(state, section) if "static_nat" in touched else new(section):
            if item.public_ip in one_to_one:
                other = ("static_nat", one_to_one[item.public_ip])
                report(section, item, f"{item.public_ip} is taken by static NAT", "public_ip", other)


def _check_unique(state: RouterState, report: Report, touched: Set[str]) -> None:
    """Values that must be unique across a section: the second and later holders are reported."""
    unique = [
        ("dhcp", "ip"),
        ("dhcp", "hostname"),
        ("static_nat", "vm_ip"),
    ]
    for section, name in unique:
        if section not in touched:
            continue
        seen: dict[object, object] = {}
        for item in getattr(state, section):
            value = getattr(item, name)
            value = value.lower() if isinstance(value, str) else value
            if value in seen:
                error = f"{getattr(item, name)} is already used by another {section} entry"
                report(section, item, error, name, (section, seen[value]))
            seen.setdefault(value, item)
    frontends: defaultdict[tuple[ipaddress.IPv4Address, int], list[LoadBalancer]] = defaultdict(list)
    for lb in state.load_balancer if "load_balancer" in touched else ():
        frontends[(lb.public_ip, lb.port)].append(lb)
    for (ip, port), lbs in frontends.items():
        for lb in lbs[1:]:
            error = f"{ip}:{port} is already the frontend of {lbs[0].name}"
            report("load_balancer", lb, error, "port", ("load_balancer", lbs[0]))


def _check_port_conflicts(state: RouterState, report: Report) -> None:
    """Port forwards must not overlap each other, nor a load balancer's frontend, on one address."""
    by_address: defaultdict[tuple[ipaddress.IPv4Address, str], list[PortForward]] = defaultdict(list)
    for pf in state.port_forwarding:
        by_address[(pf.public_ip, pf.protocol)].append(pf)
    for rules in by_address.values():
        rules.sort(key=lambda r: bounds(r.public_ports))
        for before, after in zip(rules, rules[1:], strict=False):
            if before.public_ports.overlaps(after.public_ports):
                error = f"{after.public_ports} overlaps {before.public_ports} on {after.public_ip}/{after.protocol}"
                report("port_forwarding", after, error, "public_ports", ("port_forwarding", before))
    for lb in state.load_balancer:
        for pf in by_address.get((lb.public_ip, "tcp"), ()):
            if pf.public_ports.first <= lb.port <= pf.public_ports.last:
                error = f"{lb.public_ip}:{lb.port} is already port-forwarded"
                report("load_balancer", lb, error, "port", ("port_forwarding", pf))


def _check_firewall_size(state: RouterState, report: Report) -> None:
    """Bound what the firewall renders: its CIDR entries, and how deep port ranges nest (one set per level)."""
    entries = 0
    for rule in state.firewall:
        entries += len(rule.cidrs)
        if entries > MAX_CIDRS:
            report("firewall", rule, f"the firewall holds more than {MAX_CIDRS} CIDR entries in all", "cidrs")
            break
    # (direction, public address, protocol) -> (ports, rule) of its rules with ports
    by_key: defaultdict[tuple[str, ipaddress.IPv4Address | None, str], list[tuple[PortRange, FirewallRule]]]
    by_key = defaultdict(list)
    for rule in state.firewall:
        if rule.ports is not None:
            by_key[(rule.direction, rule.public_ip, rule.protocol)].append((rule.ports, rule))
    for (direction, public_ip, protocol), rules in by_key.items():
        layer = layers(ports for ports, _ in rules)
        too_deep = next((r for ports, r in rules if layer[ports] >= MAX_LAYERS), None)
        if too_deep is not None:
            on = f"{public_ip}/{protocol}" if public_ip else f"{direction} {protocol}"
            error = f"port ranges on {on} overlap more than {MAX_LAYERS} deep; merge overlapping rules"
            report("firewall", too_deep, error, "ports")


def _check_vpc(state: RouterState, report: Report, new: New, whole: bool) -> None:
    """Tiers and private gateways name lists that exist; a private gateway has a device and a network of its
    own; a static route's next hop is on one of the router's networks. A batch that removes a list still in
    use is refused by check_removals, naming the remove."""
    lists = {acl.name for acl in state.network_acls}
    interfaces = state.interfaces
    for i, guest in enumerate(interfaces.guests if whole else ()):
        if guest.acl is not None and guest.acl not in lists:
            report("interfaces", interfaces, f"network ACL list {guest.acl} does not exist", f"guests[{i}].acl")
    gateways = state.private_gateways if whole else new("private_gateways")
    _check_private_gateways(state, gateways, lists, report)
    # A new private gateway may be what a persisted route's next hop lies in (or no longer lies in).
    _check_routes(state, state.static_routes if whole or gateways else new("static_routes"), report)


def _check_private_gateways(
    state: RouterState, gateways: Sequence[PrivateGateway], lists: Set[str], report: Report
) -> None:
    interfaces = state.interfaces
    devices = {i.device for i in (interfaces.control, *interfaces.guests, *interfaces.public) if i}
    networks = [g.gateway.network for g in interfaces.guests]
    for gateway in gateways:
        if gateway.acl not in lists:
            report("private_gateways", gateway, f"network ACL list {gateway.acl} does not exist", "acl")
        if gateway.device in devices:
            report("private_gateways", gateway, f"device {gateway.device} is already an interface", "device")
        others = networks + [g.address.network for g in state.private_gateways if g is not gateway]
        overlapping = next((net for net in others if net.overlaps(gateway.address.network)), None)
        if overlapping is not None:
            report("private_gateways", gateway, f"{gateway.address.network} overlaps {overlapping}", "address")


def _check_routes(state: RouterState, routes: Sequence[StaticRoute], report: Report) -> None:
    interfaces = state.interfaces
    own = {g.gateway.ip for g in interfaces.guests} | interfaces.public_addresses
    own |= {g.address.ip for g in state.private_gateways}
    for route in routes:
        if route.next_hop in own:
            error = f"next hop {route.next_hop} is one of the router's own addresses"
            report("static_routes", route, error, "next_hop")
        elif _unreachable(state, route):
            shown = ", ".join(str(network) for _, network in state.connected()) or "none configured"
            report("static_routes", route, f"next hop {route.next_hop} is not in any network ({shown})", "next_hop")


def _unreachable(state: RouterState, route: StaticRoute) -> bool:
    return not any(route.next_hop in network for _, network in state.connected())


def check_removals(state: RouterState, removed: Sequence[tuple[str, str, tuple[object, ...]]]) -> list[Problem]:
    """Removes of a batch, as (where, section, key), that would leave a name dangling: a network ACL list
    that a tier or a private gateway of the resulting `state` still names, a private gateway that the next
    hop of a static route needs."""
    users: defaultdict[str, list[str]] = defaultdict(list)  # list name -> what names it
    for guest in state.interfaces.guests:
        if guest.acl is not None:
            users[guest.acl].append(f"tier {guest.device}")
    for gateway in state.private_gateways:
        users[gateway.acl].append(f"private gateway {gateway.device}")
    stranded = [r for r in state.static_routes if _unreachable(state, r)]
    problems = []
    for where, section, key in removed:
        name = str(key[0])
        if section == "network_acls" and users.get(name):
            used = ", ".join(users[name])
            error = f"network ACL list {name} is still used by {used}; move them to another list first"
            problems.append(Problem(f"{where}.data.name", error))
        if section == "private_gateways" and stranded:
            routes = ", ".join(f"{r.cidr} via {r.next_hop}" for r in stranded)
            error = f"static routes {routes} would have no network left; remove them first"
            problems.append(Problem(f"{where}.data.device", error))
    return problems


def _check_acl_size(state: RouterState, report: Report) -> None:
    """Bound what the lists render, as for the firewall: CIDR entries in all, and how deep port ranges nest."""
    entries = 0
    for acl in state.network_acls:
        entries += sum(len(rule.cidrs) for rule in acl.rules)
        if entries > MAX_CIDRS:
            error = f"the network ACL lists hold more than {MAX_CIDRS} CIDR entries in all"
            report("network_acls", acl, error, "rules")
            return
        by_kind: defaultdict[tuple[str, str], list[AclRule]] = defaultdict(list)
        for rule in acl.rules:
            if rule.ports is not None:
                by_kind[(rule.traffic_type, rule.protocol)].append(rule)
        for (traffic_type, protocol), rules in by_kind.items():
            layer = layers(r.ports for r in rules if r.ports is not None)
            if max(layer.values()) >= MAX_LAYERS:
                deep = f"overlap more than {MAX_LAYERS} deep; merge overlapping rules"
                error = f"{traffic_type} {protocol} port ranges {deep}"
                report("network_acls", acl, error, "rules")
