"""One settings table per part: each Setting is declared once (name, type, default, help) and that one
declaration drives the config file, the environment (VRPIPE_<NAME>), the command-line flags with their help
and defaults, the validation, and `config`, which shows every resolved value and where it came from.
Precedence, lowest first: default, config file, environment, command line.
"""

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SettingsError, shown

DEFAULT, FILE, ENV, CLI = "default", "config file", "environment", "command line"


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


def optional_text(value: Any) -> str | None:
    return text(value) or None if value is not None else None


def path(value: Any) -> Path | None:
    return Path(text(str(value))) if value not in (None, "") else None


def number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    found = float(value)
    if not found >= 0 or found == float("inf"):
        raise ValueError("expected a number >= 0")
    return found


def count(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected a whole number")
    found = int(value)
    if found < 0:
        raise ValueError("expected a whole number >= 0")
    return found


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: Any = None
    parse: Callable[[Any], Any] = text
    choices: tuple[str, ...] = ()
    flag: bool = True  # also a command-line option (--name-with-dashes)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any, origin: str, prefix: str = "") -> Any:
        try:
            converted = self.parse(value)
        except (TypeError, ValueError) as e:
            message = f"{prefix}{self.name}: {shown(value)} is not valid: {e} ({origin})"
            raise SettingsError(message, hint=self.help) from None
        if self.choices and converted not in self.choices:
            raise SettingsError(
                f"{prefix}{self.name}: {shown(value)} is not one of {', '.join(self.choices)} ({origin})",
                hint=self.help,
            )
        return converted


@dataclass(frozen=True)
class Resolved:
    values: dict[str, Any]
    origins: dict[str, str]

    def lines(self) -> list[str]:
        width = max(map(len, self.values), default=0)
        return [f"{name:<{width}} = {_shown(value)}  ({self.origins[name]})" for name, value in self.values.items()]

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {n: {"value": _shown(v), "origin": self.origins[n]} for n, v in self.values.items()}


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


class Table:
    """The settings of one part; env_prefix names its environment variables (VRPIPE_ -> VRPIPE_DB), and
    errors name a setting `part.name` when qualified (where they live in a section of a shared file)."""

    def __init__(self, part: str, settings: Iterable[Setting], env_prefix: str = "", qualified: bool = False):
        self.part, self.env_prefix = part, env_prefix
        self.prefix = f"{part}." if qualified else ""
        self.settings = {s.name: s for s in settings}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One option per setting, its help ending with the default; unset options stay None."""
        for s in self.settings.values():
            if not s.flag:
                continue
            shown = f" (default: {s.default})" if s.default not in (None, "") else ""
            env = f"; env {self.env_prefix}{s.name.upper()}" if self.env_prefix else ""
            parser.add_argument(
                s.option, dest=s.name, default=None, choices=s.choices or None, help=f"{s.help}{shown}{env}"
            )

    def resolve(
        self,
        file_values: Mapping[str, Any] | None = None,
        file_name: str = "",
        cli: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Resolved:
        """Every setting's value and origin; unknown names in the file and bad values are refused, each
        error naming the setting and where its value came from."""
        file_values, cli = file_values or {}, cli or {}
        env = os.environ if env is None else env
        unknown = sorted(set(file_values) - set(self.settings))
        if unknown:
            raise SettingsError(
                f"{file_name or self.part}: unknown setting(s) {', '.join(unknown)}",
                hint=f"known: {', '.join(self.settings)}",
            )
        values, origins = {}, {}
        for name, s in self.settings.items():
            value, origin = s.default, DEFAULT
            in_file = f"{FILE} {file_name}".strip()
            if file_values.get(name) is not None:
                value, origin = s.convert(file_values[name], in_file, self.prefix), in_file
            variable = f"{self.env_prefix}{name.upper()}"
            if self.env_prefix and env.get(variable) not in (None, ""):
                value, origin = s.convert(env[variable], f"{ENV} {variable}", self.prefix), f"{ENV} {variable}"
            if cli.get(name) is not None:
                value, origin = s.convert(cli[name], f"{CLI} {s.option}", self.prefix), CLI
            values[name], origins[name] = value, origin
        return Resolved(values, origins)
