"""The record of the archive keys a repository is signed with (`<dir>/archive-keys.json`), written at its
first publish and checked on every later one, so a published repository never changes key by accident
(a lost pubring.kbx must not make a new key); only key rotation (repo/rotation.py) changes it.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vrpipe.errors import VrpipeError

RECORD = "archive-keys.json"


@dataclass(frozen=True)
class ArchiveKeys:
    """signing: the fingerprints that sign every Release, oldest first (two during a rotation's
    overlap); routers trust all of them. generation: counts the changes, and is the version of the
    keyring package. since: when that change was made (seconds since 1970), every timestamp in it."""

    signing: tuple[str, ...]
    generation: int
    since: int

    @property
    def newest(self) -> str:
        return self.signing[-1]


def load(repo_dir: Path) -> ArchiveKeys | None:
    """The recorded keys, or None when the repository has never been published with a record."""
    path = repo_dir / RECORD
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        keys = ArchiveKeys(tuple(data["signing"]), int(data["generation"]), int(data["since"]))
    except (ValueError, KeyError, TypeError) as e:
        raise VrpipeError(f"{path} is damaged ({e}): restore it from a backup") from e
    if not keys.signing:
        raise VrpipeError(f"{path} names no signing key: restore it from a backup")
    return keys


def save(repo_dir: Path, keys: ArchiveKeys) -> None:
    """Write the record (through a temporary file and a rename, so it is never half written)."""
    path = repo_dir / RECORD
    partial = path.with_suffix(".partial")
    record = {**asdict(keys), "signing": list(keys.signing)}
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)
