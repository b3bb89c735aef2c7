"""Strict readers for the JSON config document: each turns one JSON value into a typed value or records a
Problem that names where it is and why it is wrong. The model builds every dataclass through these,
so validation happens once, at the edge, and reports every bad field rather than the first.
"""

import base64
import binascii
import functools
import ipaddress
import re
from dataclasses import dataclass

# Matched with fullmatch: `$` would also match before a trailing newline, which then splits a config line.
HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
DOMAIN = re.compile(r"(?=.{1,253}\Z)((?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
DEVICE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# Control characters, and lone surrogates: what undecodable bytes or a JSON "\udcff" escape become,
# which no file or HTTP reply can encode later.
CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the document: where (a path like `commands[3].data.mac`) and why."""

    where: str
    error: str

    def to_json(self):
        return {"where": self.where, "error": self.error}


class Invalid(Exception):
    """The document is invalid; `problems` names every bad item."""

    def __init__(self, problems):
        super().__init__("; ".join(f"{p.where}: {p.error}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of ports; a single port has first == last."""

    first: int
    last: int

    def __len__(self):
        return self.last - self.first + 1

    def __str__(self):
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def overlaps(self, other):
        return self.first <= other.last and other.first <= self.last


MISSING = object()


def _describe(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """Reads the fields of one JSON object; every bad or unknown field becomes a Problem."""

    def __init__(self, data, where, problems):
        self.where = where
        self.problems = problems
        self.start = len(problems)
        if not isinstance(data, dict):
            self.problem(where or "document", f"must be an object, got {_describe(data)}")
            data = {}
        self.data = data
        self.read = set()

    @property
    def ok(self):
        """True when no problem was recorded since this object started being read."""
        return len(self.problems) == self.start

    def problem(self, where, message):
        self.problems.append(Problem(where, message))

    def _path(self, name):
        return f"{self.where}.{name}" if self.where else name

    def _take(self, name, default):
        self.read.add(name)
        value = self.data.get(name)
        if value is None:
            if default is MISSING:
                self.problem(self._path(name), "is required")
            return MISSING
        return value

    def _convert(self, name, default, convert):
        value = self._take(name, default)
        if value is MISSING:
            return None if default is MISSING else default
        try:
            return convert(value)
        except (ValueError, TypeError) as err:
            self.problem(self._path(name), str(err))
            return None

    def finish(self):
        """Record unknown fields and tell whether the whole object was valid."""
        for name in sorted(set(self.data) - self.read):
            self.problem(self._path(str(name)[:64]), "is not a known field")
        return self.ok

    def text(self, name, *, pattern=None, max_len=255, default=MISSING, what="text"):
        return self._convert(name, default, lambda v: text(v, pattern=pattern, max_len=max_len, what=what))

    def choice(self, name, options, default=MISSING):
        return self._convert(name, default, lambda v: choice(v, options))

    def integer(self, name, low, high, default=MISSING):
        return self._convert(name, default, lambda v: integer(v, low, high))

    def boolean(self, name, default=MISSING):
        return self._convert(name, default, boolean)

    def address(self, name, default=MISSING):
        return self._convert(name, default, address)

    def interface(self, name, default=MISSING):
        return self._convert(name, default, interface)

    def network(self, name, default=MISSING):
        return self._convert(name, default, network)

    def ports(self, name, default=MISSING):
        return self._convert(name, default, ports)

    def mac(self, name, default=MISSING):
        return self._convert(name, default, mac)

    def base64(self, name, max_bytes, default=MISSING):
        return self._convert(name, default, lambda v: decode_base64(v, max_bytes))

    def items(self, name, convert, *, default=(), max_items=100_000):
        """A list whose items are converted by `convert(value, where, problems)`; bad items are dropped."""
        value = self._take(name, default)
        if value is MISSING:
            return () if default is MISSING else default
        where = self._path(name)
        if not isinstance(value, list):
            self.problem(where, f"must be a list, got {_describe(value)}")
            return ()
        if len(value) > max_items:
            self.problem(where, f"has {len(value)} items, at most {max_items} allowed")
            return ()
        converted = (convert(item, f"{where}[{i}]", self.problems) for i, item in enumerate(value))
        return tuple(item for item in converted if item is not None)

    def object(self, name, parse):
        """An optional nested object, read by `parse(value, where, problems)`."""
        value = self._take(name, None)
        return None if value is MISSING else parse(value, self._path(name), self.problems)

    def values(self, name, convert, *, default=(), max_items=64):
        """A list of plain values (addresses, CIDRs, strings), each converted by `convert(value)`."""
        return self.items(name, _plain(convert), default=default, max_items=max_items)

    def mapping(self, name, key_pattern, convert, *, max_items=64):
        """An object of name -> value, names matching key_pattern, values converted by `convert`."""
        value = self._take(name, {})
        if value is MISSING or value == {}:
            return {}
        where = self._path(name)
        if not isinstance(value, dict) or len(value) > max_items:
            self.problem(where, f"must be an object of at most {max_items} entries")
            return {}
        result = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key_pattern.fullmatch(key):
                self.problem(f"{where}.{str(key)[:64]}", f"is not a valid name (must match {key_pattern.pattern})")
                continue
            try:
                result[key] = convert(item)
            except (ValueError, TypeError) as err:
                self.problem(f"{where}.{key}", str(err))
        return result


def _plain(convert):
    def convert_item(value, where, problems):
        try:
            return convert(value)
        except (ValueError, TypeError) as err:
            problems.append(Problem(where, str(err)))
            return None

    return convert_item


def text(value, *, pattern=None, max_len=255, what="text"):
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {_describe(value)}")
    if not value or len(value) > max_len:
        raise ValueError(f"must be 1 to {max_len} characters long, got {len(value)}")
    if CONTROL.search(value):
        raise ValueError("must not contain control characters (newlines, tabs, ...) or undecodable bytes")
    if pattern is not None and not pattern.fullmatch(value):
        raise ValueError(f"{_describe(value)} is not a valid {what}")
    return value


def choice(value, options):
    if value not in options:
        raise ValueError(f"{_describe(value)} is not one of {', '.join(options)}")
    return value


def integer(value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, got {_describe(value)}")
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}-{high}")
    return value


def boolean(value):
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, got {_describe(value)}")
    return value


def _ip_text(value, kind):
    if not isinstance(value, str) or len(value) > 18:
        raise TypeError(f"must be an IPv4 {kind} string, got {_describe(value)}")
    return value


def address(value):
    return _address(_ip_text(value, "address"))


# Cached: a VM's address recurs in its DHCP, metadata and NAT entries, a CIDR such as 0.0.0.0/0 in many
# rules; one object per value also lets the persisted pickle store (and rebuild) each value once.
@functools.lru_cache(maxsize=65536)
def _address(text):
    try:
        return ipaddress.IPv4Address(text)
    except ipaddress.AddressValueError as err:
        raise ValueError(f"{_describe(text)} is not an IPv4 address") from err


def interface(value):
    """An address with its prefix, like 10.1.1.1/24."""
    if "/" not in _ip_text(value, "address/prefix"):
        raise ValueError(f"{_describe(value)} needs a prefix length, like 10.1.1.1/24")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as err:
        raise ValueError(f"{_describe(value)} is not an IPv4 address/prefix") from err


def network(value):
    """A CIDR whose host bits are zero, like 10.1.1.0/24; a bare address means /32."""
    return _network(_ip_text(value, "CIDR"))


@functools.lru_cache(maxsize=65536)
def _network(text):
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as err:
        raise ValueError(f"{_describe(text)} is not an IPv4 CIDR with zero host bits") from err


def ports(value):
    """A port (80, "80") or an inclusive range ("8000-8010")."""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str) and re.fullmatch(r"\d{1,5}(-\d{1,5})?", value):
        first, _, last = value.partition("-")
        first, last = int(first), int(last or first)
    else:
        raise ValueError(f"{_describe(value)} is not a port or a port range like 8000-8010")
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{_describe(value)} must be ports 1-65535, first <= last")
    return PortRange(first, last)


def mac(value):
    if not isinstance(value, str) or not MAC.fullmatch(value.lower()):
        raise ValueError(f"{_describe(value)} is not a MAC address like 02:00:0a:01:01:05")
    return value.lower()


def decode_base64(value, max_bytes):
    if not isinstance(value, str):
        raise TypeError(f"must be a base64 string, got {_describe(value)}")
    if len(value) > (max_bytes // 3 + 2) * 4 + 64:
        raise ValueError(f"is larger than {max_bytes} bytes decoded")
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as err:
        raise ValueError(f"is not valid base64 ({err})") from err
    if len(data) > max_bytes:
        raise ValueError(f"is {len(data)} bytes decoded, at most {max_bytes} allowed")
    return data
