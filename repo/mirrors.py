"""The record of the Debian mirrors a repository serves (`<dir>/security-mirrors.json`), written by a
successful `invoke mirror-security` (repo/mirror.py) and read by every publish, which keeps rendering,
exporting, checking and serving them beside our channels.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vrpipe.errors import VrpipeError

RECORD = "security-mirrors.json"


@dataclass(frozen=True)
class Mirror:
    """One mirrored suite: where it comes from, the keyring its Release must be signed by, and the
    packages asked for (the template's); what they depend on is added from the suite's own index."""

    suite: str
    upstream: str
    keyring: str
    packages: tuple[str, ...]

    @property
    def rule(self) -> str:
        """Its update rule in conf/updates (and the prefix of the indexes reprepro keeps in lists/)."""
        return f"debian-{self.suite}"

    @property
    def filter_file(self) -> str:
        return f"{self.suite}.filter"  # reprepro reads it from conf/


def load(repo_dir: Path) -> list[Mirror]:
    """The mirrors the repository serves, in the order they were first made."""
    path = repo_dir / RECORD
    if not path.exists():
        return []
    try:
        return [Mirror(**{**m, "packages": tuple(m["packages"])}) for m in json.loads(path.read_text())]
    except (ValueError, TypeError, KeyError) as e:
        raise VrpipeError(f"{path} is damaged ({e!r}): run invoke mirror-security again") from e


def save(repo_dir: Path, mirrors: list[Mirror]) -> None:
    """Write the record (through a temporary file and a rename, so it is never half written)."""
    path = repo_dir / RECORD
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps([asdict(m) for m in mirrors], indent=2) + "\n")
    partial.replace(path)
