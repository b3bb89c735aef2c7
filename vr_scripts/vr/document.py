"""The config document: parse a `state` or `batch` JSON document into a validated RouterState, applying a
batch's commands on top of the persisted state, and turn a state back into JSON for persisting.
All problems are collected and raised together as `Invalid`, each naming its command or entry.
"""

import base64
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from . import SCHEMA_VERSION
from .checks import Origin, check_removals, check_state
from .fields import DEVICE, MISSING, NAME, Fields, Invalid, PortRange, Problem
from .model import PROTOCOLS, SECTIONS, RouterState, Section

MAX_COMMANDS = 100_000
T = TypeVar("T")
Key = tuple[object, ...]  # the key fields' values of an item (Section.key)


@dataclass(frozen=True)
class CheckedCommand:
    """One validated batch command: its section, the key of the item it adds or removes, the item (add)."""

    index: int
    op: str
    section: str
    key: Key
    item: object = None

    @property
    def where(self) -> str:
        return f"commands[{self.index}]"


@dataclass(frozen=True)
class Parsed:
    """A validated document: the state it leads to, and for a batch its commands in order."""

    kind: str
    state: RouterState
    commands: tuple[CheckedCommand, ...] = ()

    @property
    def subsystems(self) -> set[str]:
        """The subsystems this document can change: all for a state, the commands' own for a batch."""
        if self.kind == "state":
            return {s for section in SECTIONS.values() for s in section.subsystems}
        return {s for c in self.commands for s in SECTIONS[c.section].subsystems}


def parse_document(data: Any, current: RouterState, check: bool = True) -> Parsed:
    """Validate a whole document against the `current` persisted state; raise Invalid naming every problem.
    `check=False` reads the fields only, for a state that was checked as a whole when it was persisted."""
    problems: list[Problem] = []
    f = Fields(data, "", problems)
    f.integer("schema", SCHEMA_VERSION, SCHEMA_VERSION)
    kind = f.choice("kind", ("state", "batch"))
    if kind == "state":
        origins: dict[int, str] = {}
        state = parse_state(f.data.get("state"), "state", problems, origins)
        f.read.add("state")
        f.finish()
        return _checked(Parsed("state", state), problems, lambda s, i: origins.get(id(i), f"state.{s}"), check, None)
    if kind == "batch":
        commands = f.items("commands", _parse_command, default=MISSING, max_items=MAX_COMMANDS)
        f.finish()
        if problems:
            raise Invalid(problems)
        state, written, brought = apply_commands(current, commands, problems)
        problems.extend(check_removals(state, [(c.where, c.section, c.key) for c in commands if c.op == "remove"]))
        origin = lambda s, i: written.get((s, SECTIONS[s].key(i)), f"persisted state.{s}")  # noqa: E731
        return _checked(Parsed("batch", state, commands), problems, origin, check, brought)
    f.finish()
    raise Invalid(problems)


def _checked(
    parsed: Parsed,
    problems: list[Problem],
    origin: Origin,
    check: bool,
    brought: Mapping[str, Sequence[object]] | None,
) -> Parsed:
    if check and not problems:
        problems.extend(check_state(parsed.state, origin, brought))
    if problems:
        raise Invalid(problems)
    return parsed


def parse_state(
    data: object, where: str, problems: list[Problem], origins: dict[int, str] | None = None
) -> RouterState:
    """Parse a whole state object; `origins` (if given) maps id(item) -> where it was written."""
    f = Fields(data, where, problems)
    values: dict[str, Any] = {}  # section name -> its value, of that section's type
    for name, section in SECTIONS.items():
        if not section.key_fields:
            values[name] = f.object(name, section.parse) or _default(name)
            continue
        items = f.items(name, _recording(section.parse, origins))
        values[name] = _without_duplicates(name, section, items, origins, f)
    f.finish()
    return RouterState(**values)


def _default(name: str) -> object:
    return RouterState.__dataclass_fields__[name].default


def _recording(
    parse: Callable[[Any, str, list[Problem]], T | None], origins: dict[int, str] | None
) -> Callable[[Any, str, list[Problem]], T | None]:
    def parse_and_record(data: Any, where: str, problems: list[Problem]) -> T | None:
        item = parse(data, where, problems)
        if item is not None and origins is not None:
            origins[id(item)] = where
        return item

    return parse_and_record


def _without_duplicates(
    name: str, section: Section, items: tuple[T, ...], origins: dict[int, str] | None, f: Fields
) -> tuple[T, ...]:
    seen: dict[Key, T] = {}
    for item in items:
        key = section.key(item)
        if key in seen:
            where = origins.get(id(item), name) if origins is not None else name
            f.problem(where, f"duplicate {name} entry (same {', '.join(section.key_fields)} as an earlier one)")
        seen[key] = item
    return tuple(seen.values())


def _parse_command(data: object, where: str, problems: list[Problem]) -> CheckedCommand | None:
    f = Fields(data, where, problems)
    op = f.choice("op", ("add", "remove"))
    section = SECTIONS.get(f.choice("type", tuple(SECTIONS)) or "")  # "": no valid type
    f.read.add("data")
    index = int(where.rsplit("[", 1)[1].rstrip("]"))
    if section is None or op is None:
        f.finish()
        return None
    if op == "remove" and not section.key_fields:
        f.problem(f"{where}.op", f"{section.name} is set with add; it cannot be removed")
    elif op == "remove" and all(name in KEY_READERS for name in section.key_fields):
        key = _read_key(section, f.data.get("data"), f"{where}.data", problems)
        return CheckedCommand(index, op, section.name, key) if f.finish() else None
    item = section.parse(f.data.get("data"), f"{where}.data", problems)
    if not f.finish() or item is None:
        return None
    return CheckedCommand(index, op, section.name, section.key(item), item)


# A remove names its item by key fields alone; these read them the same way the full parse does.
KEY_READERS = {
    "mac": "mac",
    "vm_ip": "address",
    "public_ip": "address",
    "guest_cidr": "network",
    "public_ports": "ports",
    "protocol": "protocol",
    "name": "name",
    "cidr": "network",
    "device": "device",
}


def _read_key(section: Section, data: object, where: str, problems: list[Problem]) -> Key:
    f = Fields(data, where, problems)
    f.read.update(f.data)  # the rest of the item may come along; only its key matters
    readers: dict[str, Callable[[str], object]] = {
        "mac": f.mac,
        "address": f.address,
        "network": f.network,
        "ports": f.ports,
        "protocol": lambda name: f.choice(name, PROTOCOLS),
        "name": lambda name: f.text(name, pattern=NAME, what="name"),
        "device": lambda name: f.text(name, pattern=DEVICE, what="device name"),
    }
    return tuple(readers[KEY_READERS[name]](name) for name in section.key_fields)


def apply_commands(
    current: RouterState, commands: Sequence[CheckedCommand], problems: list[Problem]
) -> tuple[RouterState, dict[tuple[str, Key], str], dict[str, list[object]]]:
    """The state after the commands, in order, which command last wrote each item, and the items the
    commands put in the state, by section (every section they name). Only the sections the commands name
    are indexed; the others are taken over as they are."""
    touched = {SECTIONS[c.section] for c in commands}
    sections = {s.name: {s.key(i): i for i in _as_items(getattr(current, s.name))} for s in touched}
    origins: dict[tuple[str, Key], str] = {}
    for command in commands:
        items = sections[command.section]
        if command.op == "add":
            items[command.key] = command.item
            origins[(command.section, command.key)] = command.where
        else:
            items.pop(command.key, None)
    # section name -> its value, of that section's type
    values: dict[str, Any] = {name: _from_items(name, items) for name, items in sections.items()}
    brought: dict[str, list[object]] = {name: [] for name in sections}
    for section, key in origins:
        if key in sections[section]:
            brought[section].append(sections[section][key])
    return replace(current, **values), origins, brought


def _as_items(value: object) -> tuple[object, ...]:
    return value if isinstance(value, tuple) else (value,)


def _from_items(name: str, items: Mapping[Key, object]) -> object:
    if not SECTIONS[name].key_fields:
        return next(iter(items.values()))
    return tuple(items.values())


def to_json(value: object) -> Any:
    """A state (or any part of it) as plain JSON values, in the form `parse_state` reads back."""
    convert = _TO_JSON.get(type(value))
    if convert is not None:
        return convert(value)
    # A dataclass of the model: its fields in definition order, absent ones left out.
    return {name: to_json(v) for name, v in vars(value).items() if v is not None}


def _same(value: T) -> T:
    return value


_TO_JSON: dict[type, Callable[[Any], Any]] = {
    **dict.fromkeys((str, int, float, bool), _same),
    **dict.fromkeys((ipaddress.IPv4Address, ipaddress.IPv4Interface, ipaddress.IPv4Network, PortRange), str),
    tuple: lambda value: [to_json(v) for v in value],
    list: lambda value: [to_json(v) for v in value],
    dict: lambda value: {k: to_json(v) for k, v in value.items()},
    bytes: lambda value: base64.b64encode(value).decode(),
}


def state_document(state: RouterState) -> dict[str, Any]:
    """A `state` document holding `state`: what the router persists and what a full replay sends."""
    return {"schema": SCHEMA_VERSION, "kind": "state", "state": to_json(state)}


def load_state(data: Any) -> RouterState:
    """Read a persisted state (a state document); raises Invalid if it no longer validates."""
    return parse_document(data, RouterState(), check=False).state


__all__ = [
    "CheckedCommand",
    "Invalid",
    "Parsed",
    "Problem",
    "load_state",
    "parse_document",
    "state_document",
    "to_json",
]
