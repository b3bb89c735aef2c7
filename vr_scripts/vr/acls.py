"""VPC network ACL lists as nftables chains: one chain per list and traffic type (`acl/NAME/ingress`,
`acl/NAME/egress`), jumped to through the verdict maps `acl_to` (by output device: traffic into a tier or
private gateway network) and `acl_from` (by input device: traffic out of it). First match in rule number
order decides; what no rule matches is dropped (CloudStack's semantics). An allow returns, so forward goes
on to the other network's list; a tunnel's traffic can be sent through the same chains with these maps.
"""

import ipaddress
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .fields import PortRange
from .intervals import Key, Sets, flat_sets, layered_sets
from .model import AclRule, NetworkAcl, RouterState

TRAFFIC_TYPES = ("ingress", "egress")
VERDICTS = {"allow": "return", "deny": "drop"}
ALL_CODES = PortRange(0, 255)  # an ICMP type without a code: every code
# kind -> (set type, what the packet is matched by, with {address} its saddr or daddr)
KINDS = {
    "ports": ("inet_proto . inet_service . ipv4_addr", "meta l4proto . th dport . ip {address}"),
    "protocols": ("inet_proto . ipv4_addr", "meta l4proto . ip {address}"),
    "icmp": ("icmp_type . icmp_code . ipv4_addr", "icmp type . icmp code . ip {address}"),
    "any": ("ipv4_addr", "ip {address}"),
}


@dataclass(frozen=True)
class AclSet:
    name: str
    type: str
    elements: list[str]


@dataclass(frozen=True)
class AclLine:
    match: str
    set: str
    verdict: str


@dataclass(frozen=True)
class AclChain:
    name: str
    sets: list[AclSet]
    lines: list[AclLine]


def chain_name(acl: str, traffic_type: str) -> str:
    return f"acl/{acl}/{traffic_type}"


def chains(acls: Sequence[NetworkAcl]) -> list[AclChain]:
    """Every list's two chains. Consecutive rules with the same action are one run: their order among
    themselves does not matter, so a run is a few set lookups, however many rules and CIDRs it has."""
    result = []
    for acl in acls:
        for traffic_type in TRAFFIC_TYPES:
            name = chain_name(acl.name, traffic_type)
            rules = [r for r in acl.rules if r.traffic_type == traffic_type]
            address = "saddr" if traffic_type == "ingress" else "daddr"
            sets: list[AclSet] = []
            lines: list[AclLine] = []
            runs = itertools.groupby(rules, key=lambda r: r.action)
            for n, (action, run) in enumerate(runs):
                for kind, named in _run_sets(f"{name}/{n}", list(run)).items():
                    set_type, match = KINDS[kind]
                    for set_name, elements in named:
                        if elements:
                            sets.append(AclSet(set_name, set_type, elements))
                            lines.append(AclLine(match.format(address=address), set_name, VERDICTS[action]))
            result.append(AclChain(name, sets, lines))
    return result


def _run_sets(prefix: str, rules: Sequence[AclRule]) -> dict[str, Sets]:
    """The sets of one run, by kind; elements read protocol [. port] . CIDR or type . code . CIDR."""
    ports: defaultdict[Key, dict[PortRange, list[ipaddress.IPv4Network]]] = defaultdict(dict)
    icmp: defaultdict[Key, dict[PortRange, list[ipaddress.IPv4Network]]] = defaultdict(dict)
    protocols: defaultdict[Key, list[ipaddress.IPv4Network]] = defaultdict(list)
    anything: defaultdict[Key, list[ipaddress.IPv4Network]] = defaultdict(list)
    for rule in rules:
        if rule.protocol == "all":
            anything[()].extend(rule.cidrs)
        elif rule.ports is not None:
            ports[(rule.protocol,)].setdefault(rule.ports, []).extend(rule.cidrs)
        elif rule.icmp_type is not None:
            codes = ALL_CODES if rule.icmp_code is None else PortRange(rule.icmp_code, rule.icmp_code)
            icmp[(rule.icmp_type,)].setdefault(codes, []).extend(rule.cidrs)
        else:
            protocols[(rule.protocol,)].extend(rule.cidrs)

    def element(key: Key, cidr: ipaddress.IPv4Network, *ranges: PortRange) -> str:
        return " . ".join(map(str, (*key, *ranges, cidr)))

    return {
        "ports": layered_sets(f"{prefix}/ports", ports, element),
        "icmp": layered_sets(f"{prefix}/icmp", icmp, element),
        "protocols": flat_sets(f"{prefix}/protocols", protocols, element),
        "any": flat_sets(f"{prefix}/any", anything, element),
    }


def context(state: RouterState) -> dict[str, object]:
    """The template's VPC values besides the chains: which devices have a list, and which list each jumps to."""
    attached = [(g.device, g.acl) for g in state.interfaces.guests if g.acl is not None]
    attached += [(g.device, g.acl) for g in state.private_gateways]
    return {
        "acl_devices": [f'"{device}"' for device, _ in attached],
        "acl_to": [f'"{device}" : jump {chain_name(acl, "ingress")}' for device, acl in attached],
        "acl_from": [f'"{device}" : jump {chain_name(acl, "egress")}' for device, acl in attached],
        "private_source_nat": [f'"{g.device}" : {g.address.ip}' for g in state.private_gateways if g.source_nat],
    }
