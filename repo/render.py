"""Where repo/ finds its inputs (the checkout, vr_scripts/) and how it renders the files it writes from
Jinja2 templates: repo/templates/ for the repository's files, vr_scripts/debian/ for maintainer scripts.
"""

from pathlib import Path

import jinja2

PROJECT = Path(__file__).resolve().parent.parent
SOURCES = PROJECT / "vr_scripts"
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(PROJECT / "repo" / "templates"), jinja2.FileSystemLoader(SOURCES / "debian")]
    ),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, **context: object) -> str:
    return _ENVIRONMENT.get_template(template).render(**context)
