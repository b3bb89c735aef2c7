"""Strict readers for the JSON config document: each turns one JSON value into a typed value or records a
Problem that names where it is and why it is wrong. The model builds every dataclass through these,
so validation happens once, at the edge, and reports every bad field rather than the first.
"""

import base64
import binascii
import enum
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast, overload

T = TypeVar("T")

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

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "error": self.error}


class Invalid(Exception):
    """The document is invalid; `problems` names every bad item."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        super().__init__("; ".join(f"{p.where}: {p.error}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of ports; a single port has first == last."""

    first: int
    last: int

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def overlaps(self, other: "PortRange") -> bool:
        return self.first <= other.last and other.first <= self.last


class _Missing(enum.Enum):
    """The type of MISSING (an enum member, so that a type checker tells it from a default value)."""

    MISSING = "missing"


MISSING: Final = _Missing.MISSING  # a field's default: the field is required


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """Reads the fields of one JSON object; every bad or unknown field becomes a Problem."""

    def __init__(self, data: object, where: str, problems: list[Problem]) -> None:
        self.where = where
        self.problems = problems
        self.start = len(problems)
        if not isinstance(data, dict):
            self.problem(where or "document", f"must be an object, got {_describe(data)}")
            data = {}
        self.data: dict[str, Any] = data
        self.read: set[str] = set()

    @property
    def ok(self) -> bool:
        """True when no problem was recorded since this object started being read."""
        return len(self.problems) == self.start

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def _path(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def _take(self, name: str, default: object) -> Any:
        self.read.add(name)
        value = self.data.get(name)
        if value is None:
            if default is MISSING:
                self.problem(self._path(name), "is required")
            return MISSING
        return value

    def _convert(self, name: str, default: T | None | _Missing, convert: Callable[[Any], T]) -> T | None:
        value = self._take(name, default)
        if value is MISSING:
            return None if isinstance(default, _Missing) else default
        try:
            return convert(value)
        except (ValueError, TypeError) as err:
            self.problem(self._path(name), str(err))
            return None

    def finish(self) -> bool:
        """Record unknown fields and tell whether the whole object was valid."""
        for name in sorted(set(self.data) - self.read):
            self.problem(self._path(str(name)[:64]), "is not a known field")
        return self.ok

    def text(
        self,
        name: str,
        *,
        pattern: re.Pattern[str] | None = None,
        max_len: int = 255,
        default: str | None | _Missing = MISSING,
        what: str = "text",
    ) -> str | None:
        return self._convert(name, default, lambda v: text(v, pattern=pattern, max_len=max_len, what=what))

    def choice(self, name: str, options: Sequence[str], default: str | None | _Missing = MISSING) -> str | None:
        return self._convert(name, default, lambda v: choice(v, options))

    def integer(self, name: str, low: int, high: int, default: int | None | _Missing = MISSING) -> int | None:
        return self._convert(name, default, lambda v: integer(v, low, high))

    def boolean(self, name: str, default: bool | None | _Missing = MISSING) -> bool | None:
        return self._convert(name, default, boolean)

    def address(self, name: str, default: None | _Missing = MISSING) -> ipaddress.IPv4Address | None:
        return self._convert(name, default, address)

    def interface(self, name: str, default: None | _Missing = MISSING) -> ipaddress.IPv4Interface | None:
        return self._convert(name, default, interface)

    def network(self, name: str, default: None | _Missing = MISSING) -> ipaddress.IPv4Network | None:
        return self._convert(name, default, network)

    def ports(self, name: str, default: None | _Missing = MISSING) -> "PortRange | None":
        return self._convert(name, default, ports)

    def mac(self, name: str, default: None | _Missing = MISSING) -> str | None:
        return self._convert(name, default, mac)

    def base64(self, name: str, max_bytes: int, default: None | _Missing = MISSING) -> bytes | None:
        return self._convert(name, default, lambda v: decode_base64(v, max_bytes))

    @overload
    def items(
        self,
        name: str,
        convert: Callable[[Any, str, list[Problem]], T | None],
        *,
        default: tuple[T, ...] | _Missing = (),
        max_items: int = 100_000,
    ) -> tuple[T, ...]: ...
    @overload
    def items(
        self,
        name: str,
        convert: Callable[[Any, str, list[Problem]], T | None],
        *,
        default: None,
        max_items: int = 100_000,
    ) -> tuple[T, ...] | None: ...
    def items(
        self,
        name: str,
        convert: Callable[[Any, str, list[Problem]], T | None],
        *,
        default: tuple[T, ...] | None | _Missing = (),
        max_items: int = 100_000,
    ) -> tuple[T, ...] | None:
        """A list whose items are converted by `convert(value, where, problems)`; bad items are dropped."""
        value = self._take(name, default)
        if value is MISSING:
            return () if isinstance(default, _Missing) else default
        where = self._path(name)
        if not isinstance(value, list):
            self.problem(where, f"must be a list, got {_describe(value)}")
            return ()
        if len(value) > max_items:
            self.problem(where, f"has {len(value)} items, at most {max_items} allowed")
            return ()
        converted = (convert(item, f"{where}[{i}]", self.problems) for i, item in enumerate(value))
        return tuple(item for item in converted if item is not None)

    def object(self, name: str, parse: Callable[[Any, str, list[Problem]], T | None]) -> T | None:
        """An optional nested object, read by `parse(value, where, problems)`."""
        value = self._take(name, None)
        return None if value is MISSING else parse(value, self._path(name), self.problems)

    @overload
    def values(
        self,
        name: str,
        convert: Callable[[Any], T],
        *,
        default: tuple[T, ...] | _Missing = (),
        max_items: int = 64,
    ) -> tuple[T, ...]: ...
    @overload
    def values(
        self, name: str, convert: Callable[[Any], T], *, default: None, max_items: int = 64
    ) -> tuple[T, ...] | None: ...
    def values(
        self,
        name: str,
        convert: Callable[[Any], T],
        *,
        default: tuple[T, ...] | None | _Missing = (),
        max_items: int = 64,
    ) -> tuple[T, ...] | None:
        """A list of plain values (addresses, CIDRs, strings), each converted by `convert(value)`."""
        return self.items(name, _plain(convert), default=default, max_items=max_items)

    def mapping(
        self, name: str, key_pattern: re.Pattern[str], convert: Callable[[Any], T], *, max_items: int = 64
    ) -> dict[str, T]:
        """An object of name -> value, names matching key_pattern, values converted by `convert`."""
        value = self._take(name, {})
        if value is MISSING or value == {}:
            return {}
        where = self._path(name)
        if not isinstance(value, dict) or len(value) > max_items:
            self.problem(where, f"must be an object of at most {max_items} entries")
            return {}
        result: dict[str, T] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key_pattern.fullmatch(key):
                self.problem(f"{where}.{str(key)[:64]}", f"is not a valid name (must match {key_pattern.pattern})")
                continue
            try:
                result[key] = convert(item)
            except (ValueError, TypeError) as err:
                self.problem(f"{where}.{key}", str(err))
        return result


def _plain(convert: Callable[[Any], T]) -> Callable[[Any, str, list[Problem]], T | None]:
    def convert_item(value: Any, where: str, problems: list[Problem]) -> T | None:
        try:
            return convert(value)
        except (ValueError, TypeError) as err:
            problems.append(Problem(where, str(err)))
            return None

    return convert_item


def text(value: object, *, pattern: re.Pattern[str] | None = None, max_len: int = 255, what: str = "text") -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {_describe(value)}")
    if not value or len(value) > max_len:
        raise ValueError(f"must be 1 to {max_len} characters long, got {len(value)}")
    if CONTROL.search(value):
        raise ValueError("must not contain control characters (newlines, tabs, ...) or undecodable bytes")
    if pattern is not None and not pattern.fullmatch(value):
        raise ValueError(f"{_describe(value)} is not a valid {what}")
    return value


def choice(value: object, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{_describe(value)} is not one of {', '.join(options)}")
    return cast(str, value)  # one of the options


def integer(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, got {_describe(value)}")
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}-{high}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, got {_describe(value)}")
    return value


def _ip_text(value: object, kind: str) -> str:
    if isinstance(value, str) and ":" in value:
        raise ValueError(f"{_describe(value)} is IPv6; this field takes an IPv4 {kind}")
    if not isinstance(value, str) or len(value) > 18:
        raise TypeError(f"must be an IPv4 {kind} string, got {_describe(value)}")
    return value


def address(value: object) -> ipaddress.IPv4Address:
    return _address(_ip_text(value, "address"))


# Cached: a VM's address recurs in its DHCP, metadata and NAT entries, a CIDR such as 0.0.0.0/0 in many
# rules; one object per value also lets the persisted pickle store (and rebuild) each value once.
@functools.lru_cache(maxsize=65536)
def _address(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ipaddress.AddressValueError as err:
        raise ValueError(f"{_describe(text)} is not an IPv4 address") from err


def interface(value: object) -> ipaddress.IPv4Interface:
    """An address with its prefix, like 10.1.1.1/24."""
    if "/" not in _ip_text(value, "address/prefix"):
        raise ValueError(f"{_describe(value)} needs a prefix length, like 10.1.1.1/24")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as err:
        raise ValueError(f"{_describe(value)} is not an IPv4 address/prefix") from err


def network(value: object) -> ipaddress.IPv4Network:
    """A CIDR whose host bits are zero, like 10.1.1.0/24; a bare address means /32."""
    return _network(_ip_text(value, "CIDR"))


@functools.lru_cache(maxsize=65536)
def _network(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as err:
        raise ValueError(f"{_describe(text)} is not an IPv4 CIDR with zero host bits") from err


def ports(value: object) -> PortRange:
    """A port (80, "80") or an inclusive range ("8000-8010")."""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str) and re.fullmatch(r"\d{1,5}(-\d{1,5})?", value):
        low, _, high = value.partition("-")
        first, last = int(low), int(high or low)
    else:
        raise ValueError(f"{_describe(value)} is not a port or a port range like 8000-8010")
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{_describe(value)} must be ports 1-65535, first <= last")
    return PortRange(first, last)


def mac(value: object) -> str:
    if not isinstance(value, str) or not MAC.fullmatch(value.lower()):
        raise ValueError(f"{_describe(value)} is not a MAC address like 02:00:0a:01:01:05")
    return value.lower()


def decode_base64(value: object, max_bytes: int) -> bytes:
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
