"""Packs firewall rules into interval sets whose elements never overlap, which nftables requires of a set of
concatenations ("File exists"), while users legitimately write overlapping rules (22 from 10.1.0.0/16 and
20-30 from 10.0.0.0/8). Rules with the same port range share one collapsed list of CIDRs; distinct port
ranges that overlap go to different layers (one set each), so the elements stay linear in rules and CIDRs.
The kernel's set type for concatenated intervals (pipapo) costs O(n) per inserted element, so a layer of
many elements is split into shards of about SHARD_SIZE: loading then costs linear in the elements.
"""

import heapq
import ipaddress
import zlib
from collections.abc import Iterable, Sequence

from .fields import PortRange

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
    if len(networks) == 1:  # the common case, and collapse_addresses is slow even for one
        return list(networks)
    return list(ipaddress.collapse_addresses(networks))


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
