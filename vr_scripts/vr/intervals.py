"""Packs firewall and network ACL rules into interval sets whose elements never overlap, which nftables
requires of a set of concatenations ("File exists"), while users legitimately write overlapping rules (22
from 10.1.0.0/16 and 20-30 from 10.0.0.0/8). Rules with the same port range share one collapsed list of
CIDRs; distinct port ranges that overlap go to different layers (one set each), so the elements stay
linear in rules and CIDRs.
The kernel's set type for concatenated intervals (pipapo) costs O(n) per inserted element, so a layer of
many elements is split into shards of about SHARD_SIZE: loading then costs linear in the elements.
"""

import heapq
import ipaddress
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from .fields import PortRange

Sets = list[tuple[str, list[str]]]  # (set name, its elements), per shard
Key = tuple[ipaddress.IPv4Address | str | int | None, ...]  # what an element starts with: (public address,) protocol
Element = Callable[..., str]  # (key, cidr, *ports) -> the text of one set element

# Bounds on what one state may render, checked with the rest of the state before anything changes.
MAX_LAYERS = 32  # port ranges nested deeper than this on one address and protocol are refused
MAX_CIDRS = 100_000  # CIDR entries over all firewall rules
SHARD_SIZE = 1024  # 10,000 elements in one set load in 0.8 s, 20,000 in 3 s; in sets of 1,024 about 0.1 s


def layers(ranges: Iterable[PortRange]) -> dict[PortRange, int]:
    """A layer number for each distinct PortRange in `ranges`, such that ranges sharing a layer do not
    overlap; as few layers as the ranges nest deep (greedy interval colouring, by first port)."""
    free: list[int] = []
    layer: dict[PortRange, int] = {}
    ending: list[tuple[int, int]] = []  # ending: (last port, layer) of the range each busy layer ends with
    for ports in sorted(set(ranges), key=bounds):
        while ending and ending[0][0] < ports.first:
            heapq.heappush(free, heapq.heappop(ending)[1])
        number = heapq.heappop(free) if free else len(ending)
        layer[ports] = number
        heapq.heappush(ending, (ports.last, number))
    return layer


def bounds(ports: PortRange) -> tuple[int, int]:
    return ports.first, ports.last  # a plain tuple sorts in C; the dataclass's own order runs Python code


def collapse(networks: Sequence[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    """The networks sorted, with overlaps removed and sibling halves merged, as ipaddress.collapse_addresses
    gives them; which is slow (10 CIDRs: 0.2 ms), so networks that are already disjoint and have no two
    halves of one larger network are only sorted."""
    if len(networks) == 1:  # the common case
        return list(networks)
    spans = sorted((int(n.network_address), n.num_addresses, n) for n in networks)
    starts = {(start, size) for start, size, _ in spans}
    end = -1
    for start, size, _ in spans:
        if start <= end or (start ^ size, size) in starts and size < 1 << 32:
            return list(ipaddress.collapse_addresses(networks))
        end = start + size - 1
    return [n for _, _, n in spans]


def shards(elements: Sequence[str]) -> list[list[str]]:
    """`elements` spread over as few sets as keep each near SHARD_SIZE (a power of two of them, so the
    count changes rarely); an element's shard follows from its text alone, so an element update stays one."""
    count = 1
    while len(elements) > count * SHARD_SIZE:
        count *= 2
    spread: list[list[str]] = [[] for _ in range(count)]
    for element in elements:
        spread[zlib.crc32(element.encode()) % count].append(element)
    return spread


def layered_sets(
    prefix: str, groups: Mapping[Key, Mapping[PortRange, Sequence[ipaddress.IPv4Network]]], element: Element
) -> Sets:
    """Sets of elements with a port (or ICMP code) range: overlapping ranges in layers, each layer in shards,
    named prefix_layer_shard."""
    port_layers: defaultdict[int, list[str]] = defaultdict(list)
    for key, by_ports in sorted(groups.items()):
        layer = layers(by_ports)
        for ports in sorted(by_ports, key=bounds):
            port_layers[layer[ports]].extend(element(key, cidr, ports) for cidr in collapse(by_ports[ports]))
    return [
        (f"{prefix}_{n}_{i}", part)
        for n in range(max(port_layers, default=0) + 1)
        for i, part in enumerate(shards(port_layers[n]))
    ]


def flat_sets(prefix: str, groups: Mapping[Key, Sequence[ipaddress.IPv4Network]], element: Element) -> Sets:
    return named_sets(prefix, [element(key, cidr) for key, cidrs in sorted(groups.items()) for cidr in collapse(cidrs)])


def named_sets(prefix: str, elements: Sequence[str]) -> Sets:
    return [(f"{prefix}_{i}", part) for i, part in enumerate(shards(elements))]
