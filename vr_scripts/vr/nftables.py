"""Packet filtering and NAT: the router's own nftables table `inet vr`, rendered whole from the state.
Per-VM items live in sets and maps (port forwards keyed by address . protocol . port, CIDRs in interval
sets), so neither a packet nor an apply costs more per rule. Swapped in with one `nft -f` transaction:
the whole table, or only the changed elements when nothing but set and map elements changed.
"""

import ipaddress
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from . import acls, contract, vpn
from .fields import PortRange
from .intervals import Key, Sets, flat_sets, layered_sets
from .layout import Layout
from .model import FirewallRule, PortForward, RouterState
from .redundancy import SYNC_PORT
from .render import Lines
from .render import render as render_template
from .run import CommandFailed, run, succeeds

NAME = "nftables"
TABLE = ("inet", "vr")
Items = TypeVar("Items")
Built = TypeVar("Built")

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    return {layout.nftables: render_template("nftables.nft.j2", **_context(state))}


def _context(state: RouterState) -> dict[str, object]:
    interfaces = state.interfaces
    deny_by_default = state.egress_policy.default == "deny"
    return {
        "ssh_port": contract.SSH_PORT,
        "metrics_port": contract.METRICS_PORT,
        "control_devices": [_quoted(interfaces.control.device)] if interfaces.control else [],
        "guest_devices": [_quoted(g.device) for g in interfaces.guests],
        "public_devices": [_quoted(p.device) for p in interfaces.public],
        "public_addresses": sorted(str(ip) for ip in interfaces.public_addresses),
        **_reused("firewall", state.firewall, _firewall_sets),
        "egress_default": state.egress_policy.default,
        "egress_exception": "accept" if deny_by_default else "drop",
        "egress_default_verdict": "drop" if deny_by_default else "accept",
        "port_forwards": _reused("port_forwarding", state.port_forwarding, _forward_elements),
        "static_nat_in": [f"{s.public_ip} : {s.vm_ip}" for s in state.static_nat],
        "static_nat_out": [f"{s.vm_ip} : {s.public_ip}" for s in state.static_nat],
        "source_nat": [f"{s.guest_cidr} : {s.public_ip}" for s in state.source_nat],
        "load_balancers": [f"{lb.public_ip} . {lb.port}" for lb in state.load_balancer],
        **acls.context(state),
        "acl_chains": _reused("network_acls", state.network_acls, acls.chains),
        "sync": _sync(state),
        **vpn.nft_context(state),
    }


def _sync(state: RouterState) -> dict[str, object] | None:
    """A pair's sync link: VRRP and conntrackd from either member (the peer's, and our own looped back)."""
    if state.redundancy is None:
        return None
    members = ", ".join(str(m.sync_address.ip) for m in state.redundancy.members)
    return {"device": _quoted(state.redundancy.sync_device), "members": members, "port": SYNC_PORT}


# The elements of the three big sections as last rendered, by section, with the very items they came from.
# A batch keeps the sections it does not touch as the same tuples, so the resident engine renders a
# port forward without redoing 10,000 firewall elements; compared by identity, never by value.
_last: dict[str, tuple[object, object]] = {}


def _reused(section: str, items: Items, build: Callable[[Items], Built]) -> Built:
    if section not in _last or _last[section][0] is not items:
        _last[section] = (items, build(items))
    return cast(Built, _last[section][1])


def _forward_elements(forwards: Sequence[PortForward]) -> list[str]:
    return [element for elements in _forwards.pieces(forwards) for element in elements]


def _forward(pf: PortForward, _: object) -> list[str]:
    return [
        f"{pf.public_ip} . {pf.protocol} . {port} : {pf.vm_ip} . {port - pf.public_ports.first + pf.vm_ports.first}"
        for port in range(pf.public_ports.first, pf.public_ports.last + 1)
    ]


_forwards = Lines(_forward)


def _firewall_sets(rules: Sequence[FirewallRule]) -> dict[str, Sets]:
    ingress = [r for r in rules if r.direction == "ingress"]
    egress = [r for r in rules if r.direction == "egress"]
    return {**_firewall_elements("ingress", ingress), **_firewall_elements("egress", egress)}


def _quoted(device: str) -> str:
    return f'"{device}"'


def _firewall_elements(direction: str, rules: Sequence[FirewallRule]) -> dict[str, Sets]:
    """The sets of one direction: rules with ports (in layers, see intervals.py), protocol-only rules (icmp),
    protocol all. Ingress elements read public address . protocol [. port] . source; egress destination .
    protocol [. port]."""
    with_ports: defaultdict[Key, dict[PortRange, list[ipaddress.IPv4Network]]] = defaultdict(dict)
    protocol_only: defaultdict[Key, list[ipaddress.IPv4Network]] = defaultdict(list)
    any_protocol: defaultdict[Key, list[ipaddress.IPv4Network]] = defaultdict(list)
    for rule in rules:
        address = (rule.public_ip,) if direction == "ingress" else ()
        if rule.protocol == "all":
            any_protocol[address].extend(rule.cidrs)
        elif rule.ports is None:
            protocol_only[(*address, rule.protocol)].extend(rule.cidrs)
        else:
            with_ports[(*address, rule.protocol)].setdefault(rule.ports, []).extend(rule.cidrs)

    def element(key: Key, cidr: ipaddress.IPv4Network, *ports: PortRange) -> str:
        parts = (*key, *ports, cidr) if direction == "ingress" else (cidr, *key, *ports)
        return " . ".join(map(str, parts))

    return {
        # Always a layer 0 and a shard 0, so the table's set names do not depend on the rules.
        f"{direction}_ports": layered_sets(f"{direction}_ports", with_ports, element),
        f"{direction}_protocols": flat_sets(f"{direction}_protocols", protocol_only, element),
        f"{direction}_any": flat_sets(f"{direction}_any", any_protocol, element),
    }


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    """Check the whole table, or, when only set and map elements changed, the element update alone against
    the live table (and keep it for activate)."""
    path = change.layout.nftables
    update = None if change.force else element_update(change.previous.get(path), staged[path].read_text())
    if update is not None:
        try:
            run(["nft", "-c", "-f", "/dev/stdin"], input=update)
            change.plans[NAME] = update
            return
        except CommandFailed:
            pass  # the live table is not what the previous file says: check and load the whole file
    run(["nft", "-c", "-f", str(staged[path])])


def activate(change: "Activation") -> str | None:
    """Load the rendered table, or only its changed elements; a state document or a re-apply loads it
    whole even when the file is unchanged."""
    path = change.layout.nftables
    if path not in change.changed and not change.force:
        return None
    update = change.plans.get(NAME)
    if update is not None:
        try:
            run(["nft", "-f", "/dev/stdin"], input=update)
            return "updated"
        except CommandFailed:
            pass  # the live table changed since the check: the whole file puts it right
    if path.exists():
        run(["nft", "-f", str(path)])
        return "loaded"
    # Rolling back to a router that had no rules yet: remove the table this apply created.
    run(["nft", "delete", "table", *TABLE], check=False)
    return "removed"


def element_update(before: str | None, after: str) -> str | None:
    """An nft transaction taking the table of file `before` to that of file `after` by deleting and adding
    set and map elements, or None when anything else differs (a set, a rule, a policy). Both are files this
    module rendered: one element per line, inside an `elements = {` block."""
    if before is None:
        return None
    shape_before, old = _parsed(before)
    shape_after, new = _parsed(after)
    if shape_before != shape_after:
        return None
    deletes: list[str] = []
    adds: list[str] = []
    for name, elements in new.items():
        kept, wanted = set(old[name]), set(elements)
        gone = [e.split(" : ")[0] for e in old[name] if e not in wanted]  # a map's element is deleted by key
        added = [e for e in elements if e not in kept]
        deletes += [f"delete element {' '.join(TABLE)} {name} {{ {', '.join(gone)} }}"] if gone else []
        adds += [f"add element {' '.join(TABLE)} {name} {{ {', '.join(added)} }}"] if added else []
    # Deletes first: an added interval may overlap one it replaces (CIDRs collapsed differently).
    return "\n".join(deletes + adds) + "\n" if deletes or adds else None


_last_parsed: dict[str, object] = {}  # the file parsed last and its parse: the next apply's `before` is that very file


def _parsed(text: str) -> tuple[list[str], dict[str, list[str]]]:
    if _last_parsed.get("text") != text:
        _last_parsed.update(text=text, parse=_elements(text))
    return cast(tuple[list[str], dict[str, list[str]]], _last_parsed["parse"])


def _elements(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The file's lines other than set elements, and each set's or map's elements in order."""
    shape: list[str] = []
    elements: dict[str, list[str]] = {}
    name, inside = "", False  # the set or map whose elements follow
    for line in text.splitlines():
        words = line.split()
        if inside:
            if words == ["}"]:
                inside = False
            else:
                elements[name].append(line.strip().rstrip(","))
        elif words == ["elements", "=", "{"]:
            inside = True
        else:
            if words[:1] in (["set"], ["map"]):
                name = words[1]
                elements[name] = []
            shape.append(line)
    return shape, elements


def loaded() -> bool:
    """Whether the router's table is in the kernel (terse: without listing its elements)."""
    return succeeds(["nft", "-t", "list", "table", *TABLE])


def counts() -> dict[str, int]:
    """Elements per set and map of the router's table, for vr-health."""
    listing = json.loads(run(["nft", "-j", "list", "table", *TABLE]))
    result: dict[str, int] = {}
    for entry in listing.get("nftables", []):
        for kind in ("set", "map"):
            if kind in entry:
                result[entry[kind]["name"]] = len(entry[kind].get("elem", []))
    return result
