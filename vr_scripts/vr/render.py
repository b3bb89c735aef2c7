"""The Jinja2 environment every config file of the router is rendered with: templates ship beside the
engine, undefined names are errors, and nothing is escaped because every value was validated first.
`Lines` keeps the lines of the items it last rendered, so the resident engine formats only new items.
"""

from functools import cache
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment():
    import jinja2  # here, not at the top: a command that renders no template does not pay for importing it

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def render(template, **context):
    return environment().get_template(template).render(**context)


class Lines:
    """Text made of one piece per item by `format(item, context)`. The pieces of the last call are kept
    by item identity (and for the same context): items a batch did not touch are not formatted again."""

    def __init__(self, format):
        self.format, self.context, self.last = format, None, {}

    def pieces(self, items, context=None):
        last = self.last if context == self.context else {}
        pieces = {}
        for item in items:
            hit = last.get(id(item))
            pieces[id(item)] = hit if hit is not None and hit[0] is item else (item, self.format(item, context))
        self.context, self.last = context, pieces
        return [piece for _, piece in pieces.values()]

    def __call__(self, items, context=None):
        return "".join(self.pieces(items, context))
