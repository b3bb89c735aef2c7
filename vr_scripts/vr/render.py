"""The Jinja2 environment every config file of the router is rendered with: templates ship beside the
engine, undefined names are errors, and nothing is escaped because every value was validated first.
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
