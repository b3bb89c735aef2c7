"""Commands and queries the manager sends to routers. A Command is one add or remove of one rule (any
section the engine knows); a Query is a read. Commands are checked with the engine's own model (the
`vr` package), against a router's desired state, before anything is queued or stored.
"""

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vr import SCHEMA_VERSION, contract
from vr.document import CheckedCommand, Invalid, load_state, parse_document
from vr.model import SECTIONS, RouterState

from vrpipe.errors import VrpipeError, shown

OPS = ("add", "remove")


class BadCommand(VrpipeError):
    """A command is not well formed or not valid against the router's state; the message names it."""


@dataclass(frozen=True)
class Command:
    op: str
    type: str  # the engine's section: dhcp, vm_data, port_forwarding, firewall, ...
    data: dict[str, Any]

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise BadCommand(f"op {shown(self.op)} is not one of {', '.join(OPS)}")
        if self.type not in SECTIONS:
            raise BadCommand(f"type {shown(self.type)} is not one of {', '.join(SECTIONS)}")
        if not isinstance(self.data, dict):
            raise BadCommand(f"{self.type} {self.op}: data must be a JSON object")

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "type": self.type, "data": self.data}

    @classmethod
    def from_json(cls, value: object, where: str = "command") -> "Command":
        if not isinstance(value, dict) or set(value) != {"op", "type", "data"}:
            raise BadCommand(f"{where}: must be an object with exactly op, type and data")
        try:
            return cls(value["op"], value["type"], value["data"])
        except BadCommand as err:
            raise BadCommand(f"{where}: {err}") from None

    def describe(self) -> str:
        key_fields = SECTIONS[self.type].key_fields
        key = ", ".join(f"{k}={_plain(self.data.get(k))}" for k in key_fields if k in self.data)
        return f"{self.type} {self.op}" + (f" ({key})" if key else "")


def _plain(value: object) -> str:
    """A key value as it reads (10.1.1.5), quoted and clipped only when it is long or not printable."""
    text = str(value)
    return text if text.isprintable() and len(text) <= 60 else shown(value)


class Query(enum.Enum):
    """Reads answered by the router's own commands."""

    HEALTH = "vr-health"
    STATE = "vr-state"

    @property
    def argv(self) -> list[str]:
        return [contract.command(self.value)]


def batch_document(commands: Sequence[Command]) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "kind": "batch", "commands": [c.to_json() for c in commands]}


def state_document(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "kind": "state", "state": state}


def validate(commands: Sequence[Command], state: Mapping[str, Any]) -> tuple[CheckedCommand, ...]:
    """The engine's verdict on `commands` applied to the desired `state` (a state object, as the store
    holds it): the parsed commands, or BadCommand naming every command that is wrong and why."""
    try:
        current = load_state(state_document(state)) if state else RouterState()
        return parse_document(batch_document(commands), current).commands
    except Invalid as invalid:
        raise BadCommand(_named(invalid, commands)) from None


def _named(invalid: Invalid, commands: Sequence[Command]) -> str:
    lines = []
    for problem in invalid.problems:
        index = _command_index(problem.where)
        named = f"command {index} ({commands[index].describe()})" if index is not None else problem.where
        lines.append(f"{named}: {problem.where}: {problem.error}")
    return "; ".join(lines)


def _command_index(where: str) -> int | None:
    if not where.startswith("commands["):
        return None
    return int(where[len("commands[") :].split("]", 1)[0])
