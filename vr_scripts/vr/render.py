"""The Jinja2 environment every config file of the router is rendered with: templates ship beside the
engine, undefined names are errors, and nothing is escaped because every value was validated first.
`Lines` keeps the lines of the items it last rendered, so the resident engine formats only new items.
"""

import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .layout import Layout

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"
Item = TypeVar("Item")
Piece = TypeVar("Piece")


@cache
def environment() -> "jinja2.Environment":
    import jinja2  # here, not at the top: a command that renders no template does not pay for importing it

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        bytecode_cache=_bytecode_cache(Layout.from_env().template_cache),
    )


def _bytecode_cache(directory: Path) -> "jinja2.BytecodeCache | None":
    """Compiled templates kept between processes: compiling nftables.nft.j2 cost vr-health 0.7 s of its 1 s.
    What it holds is run as code, so it is used only in a directory of our own that nobody else can write."""
    import jinja2

    try:
        directory.mkdir(mode=0o700, exist_ok=True)  # in run/vr, made by the first apply: never on a build host
        info = directory.stat()
    except OSError:
        return None
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        return None
    return jinja2.FileSystemBytecodeCache(str(directory))


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)


class Lines(Generic[Item, Piece]):
    """Text made of one piece per item by `format(item, context)`. The pieces of the last call are kept
    by item identity (and for the same context): items a batch did not touch are not formatted again."""

    def __init__(self, format: Callable[[Item, Any], Piece]) -> None:
        self.format = format
        self.context: object = None  # whatever its format takes: the dnsmasq names file's domains, or None
        self.last: dict[int, tuple[Item, Piece]] = {}

    def pieces(self, items: Iterable[Item], context: object = None) -> list[Piece]:
        last = self.last if context == self.context else {}
        pieces: dict[int, tuple[Item, Piece]] = {}
        for item in items:
            hit = last.get(id(item))
            pieces[id(item)] = hit if hit is not None and hit[0] is item else (item, self.format(item, context))
        self.context, self.last = context, pieces
        return [piece for _, piece in pieces.values()]

    def __call__(self: "Lines[Item, str]", items: Iterable[Item], context: object = None) -> str:
        return "".join(self.pieces(items, context))
