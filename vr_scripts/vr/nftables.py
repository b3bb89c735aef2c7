"""Packet filtering and NAT: the router's own nftables table `inet vr`, rendered whole from the state.
Per-VM items live in sets and maps (port forwards keyed by address . protocol . port, CIDRs in interval
sets), so neither a packet nor an apply costs more per rule. Swapped in with one `nft -f` transaction.
"""

import json
from collections import defaultdict

from .intervals import collapse, layers
from .render import render as render_template
from .run import run, succeeds

NAME = "nftables"
TABLE = ("inet", "vr")


def render(state, layout):
    return {layout.nftables: render_template("nftables.nft.j2", **_context(state))}


def _context(state):
    interfaces = state.interfaces
    ingress = [r for r in state.firewall if r.direction == "ingress"]
    egress = [r for r in state.firewall if r.direction == "egress"]
    deny_by_default = state.egress_policy.default == "deny"
    return {
        "control_devices": [_quoted(interfaces.control.device)] if interfaces.control else [],
        "guest_devices": [_quoted(g.device) for g in interfaces.guests],
        "public_devices": [_quoted(p.device) for p in interfaces.public],
        "public_addresses": sorted(str(ip) for ip in interfaces.public_addresses),
        **_firewall_elements("ingress", ingress),
        **_firewall_elements("egress", egress),
        "egress_default": state.egress_policy.default,
        "egress_exception": "accept" if deny_by_default else "drop",
        "egress_default_verdict": "drop" if deny_by_default else "accept",
        "port_forwards": [
            f"{pf.public_ip} . {pf.protocol} . {port} : {pf.vm_ip} . {port - pf.public_ports.first + pf.vm_ports.first}"
            for pf in state.port_forwarding
            for port in range(pf.public_ports.first, pf.public_ports.last + 1)
        ],
        "static_nat_in": [f"{s.public_ip} : {s.vm_ip}" for s in state.static_nat],
        "static_nat_out": [f"{s.vm_ip} : {s.public_ip}" for s in state.static_nat],
        "source_nat": [f"{s.guest_cidr} : {s.public_ip}" for s in state.source_nat],
        "load_balancers": [f"{lb.public_ip} . {lb.port}" for lb in state.load_balancer],
    }


def _quoted(device):
    return f'"{device}"'


def _firewall_elements(direction, rules):
    """The sets of one direction: rules with ports (in layers, see intervals.py), protocol-only rules (icmp),
    protocol all. Ingress elements read public address . protocol [. port] . source; egress destination .
    protocol [. port]."""
    with_ports, protocol_only, any_protocol = defaultdict(dict), defaultdict(list), defaultdict(list)
    for rule in rules:
        address = (rule.public_ip,) if direction == "ingress" else ()
        if rule.protocol == "all":
            any_protocol[address].extend(rule.cidrs)
        elif rule.ports is None:
            protocol_only[(*address, rule.protocol)].extend(rule.cidrs)
        else:
            with_ports[(*address, rule.protocol)].setdefault(rule.ports, []).extend(rule.cidrs)

    def element(key, cidr, *ports):
        parts = (*key, *ports, cidr) if direction == "ingress" else (cidr, *key, *ports)
        return " . ".join(map(str, parts))

    port_layers = defaultdict(list)
    for key, by_ports in sorted(with_ports.items()):
        layer = layers(by_ports)
        for ports, cidrs in sorted(by_ports.items()):
            port_layers[layer[ports]].extend(element(key, cidr, ports) for cidr in collapse(cidrs))
    return {
        # Always a layer 0, so the table's set names do not depend on the rules.
        f"{direction}_ports": [port_layers[n] for n in range(max(port_layers, default=0) + 1)],
        f"{direction}_protocols": [
            element(key, cidr) for key, cidrs in sorted(protocol_only.items()) for cidr in collapse(cidrs)
        ],
        f"{direction}_any": [
            element(key, cidr) for key, cidrs in sorted(any_protocol.items()) for cidr in collapse(cidrs)
        ],
    }


def check(staged, layout):
    run(["nft", "-c", "-f", str(staged[layout.nftables])])


def activate(change):
    """Load the rendered table; a state document or a re-apply loads it even when the file is unchanged."""
    path = change.layout.nftables
    if path not in change.changed and not change.force:
        return None
    if path.exists():
        run(["nft", "-f", str(path)])
        return "loaded"
    # Rolling back to a router that had no rules yet: remove the table this apply created.
    run(["nft", "delete", "table", *TABLE], check=False)
    return "removed"


def loaded():
    """Whether the router's table is in the kernel (terse: without listing its elements)."""
    return succeeds(["nft", "-t", "list", "table", *TABLE])


def counts():
    """Elements per set and map of the router's table, for vr-health."""
    listing = json.loads(run(["nft", "-j", "list", "table", *TABLE]))
    result = {}
    for entry in listing.get("nftables", []):
        for kind in ("set", "map"):
            if kind in entry:
                result[entry[kind]["name"]] = len(entry[kind].get("elem", []))
    return result
