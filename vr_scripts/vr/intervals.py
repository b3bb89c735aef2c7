"""Turns firewall rules into non-overlapping set elements. nftables refuses overlapping elements in an
interval set of concatenations ("File exists"), while users legitimately write overlapping rules
(22 from 10.1.0.0/16 and 20-30 from 10.0.0.0/8): the union is what matters, so render the union.
"""

import ipaddress
from collections import Counter, defaultdict

from .fields import PortRange


def disjoint_boxes(boxes):
    """(PortRange, network) pairs covering exactly the union of `boxes`, none overlapping another."""
    starts, ends = defaultdict(list), defaultdict(list)
    for ports, network in boxes:
        starts[ports.first].append(network)
        ends[ports.last + 1].append(network)
    positions = sorted(set(starts) | set(ends))
    active, runs = Counter(), []
    for position, following in zip(positions, positions[1:], strict=False):
        active.update(starts[position])
        active.subtract(ends[position])
        active += Counter()  # drop networks no longer active
        if not active:
            continue
        networks = tuple(ipaddress.collapse_addresses(active))
        if runs and runs[-1][1] == position - 1 and runs[-1][2] == networks:
            runs[-1][1] = following - 1
        else:
            runs.append([position, following - 1, networks])
    return [(PortRange(first, last), network) for first, last, networks in runs for network in networks]


def collapse(networks):
    return list(ipaddress.collapse_addresses(networks))
