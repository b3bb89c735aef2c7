"""Every config file the template build writes comes from a Jinja2 template in image/templates/."""

from pathlib import Path

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, **values) -> str:
    return _ENV.get_template(template).render(**values)
