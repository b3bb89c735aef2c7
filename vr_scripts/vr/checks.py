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
from .model import SECTIONS, FirewallRule, Interfaces, LoadBalancer, PortForward, RouterState

ALL = frozenset(SECTIONS)

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
    guests = [g.gateway.network for g in state.interfaces.guests]
    public = state.interfaces.public_addresses
    _check_vm_addresses(state, guests, report, new)
    _check_public_addresses(state, public, report, new, touched)
    _check_unique(state, report, touched)
    if touched & {"port_forwarding", "load_balancer"}:
        _check_port_conflicts(state, report)
    if "firewall" in touched:
        _check_firewall_size(state, report)
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
