"""The persisted desired state: /var/lib/vr/state.json, a state document written atomically (the snapshot),
plus state.journal, the batches applied since, one JSON line each, appended and fsynced: a batch costs
what it changes. A journal line names the snapshot it follows by digest, so lines of an earlier snapshot
never apply; past JOURNAL_LIMIT commands the state is written whole again. A pickle of the snapshot beside
it saves re-validating thousands of items on every read; it is used only when made by this engine version
from exactly the bytes now in state.json, in a root-only directory like everything the engine trusts.
applied.json records the last state document applied and the digests of the files it rendered, so the
same document again is recognised without parsing or rendering anything.
"""

import hashlib
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import SCHEMA_VERSION, __version__
from .document import load_state, parse_document, state_document
from .layout import Layout
from .model import RouterState

JOURNAL_LIMIT = 500  # commands in the journal before the state is written whole again


def read(layout: Layout) -> RouterState:
    """The persisted state: the snapshot, with the journal's batches replayed on top."""
    snapshot = _read_bytes(layout.state)
    base = digest(snapshot)
    state = _snapshot(layout, snapshot, base) if snapshot else RouterState()
    commands = _journal(layout, base)
    if commands:
        # Validated when they were applied to this very snapshot: replaying them reads their fields only.
        batch = {"schema": SCHEMA_VERSION, "kind": "batch", "commands": commands}
        state = parse_document(batch, state, check=False).state
    return state


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _snapshot(layout: Layout, text: bytes, base: str) -> RouterState:
    try:
        version, cached_digest, state = pickle.loads(layout.state_cache.read_bytes())
        if (version, cached_digest) == (__version__, base):
            return state
    except (OSError, pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, ImportError):
        pass  # no cache, or one from another engine version: read the JSON
    return load_state(json.loads(text))


def _journal(layout: Layout, base: str) -> list[Any]:
    """The commands of the journal lines that follow the snapshot with digest `base`, in order."""
    commands: list[Any] = []
    for line in _read_bytes(layout.journal).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # empty, or torn by a crash before its apply returned: never acknowledged
        if isinstance(entry, dict) and entry.get("base") == base:
            commands.extend(entry["commands"])
    return commands


def write(layout: Layout, state: RouterState, document: object = None) -> None:
    """Persist `state` whole: a new snapshot (and its pickle), the journal emptied. The snapshot of a state
    document is the document itself in canonical form, which reads back as exactly `state` and is much
    cheaper to write than `state` turned back into JSON."""
    text = canonical(document) if document is not None else json.dumps(state_document(state), separators=(",", ":"))
    data = text.encode()
    write_atomically(layout.state, data)
    cache = pickle.dumps((__version__, digest(data), state), protocol=pickle.HIGHEST_PROTOCOL)
    write_atomically(layout.state_cache, cache)
    # Had a crash come before this, the journal's lines name the old snapshot and no longer apply (or, for
    # a snapshot byte for byte the old one, rebuild the state from before this apply: still a whole state).
    layout.journal.unlink(missing_ok=True)


def append(layout: Layout, state: RouterState, commands: Sequence[Any]) -> None:
    """Persist a batch that led to `state`: its commands appended to the journal and fsynced, or the whole
    state once the journal is long."""
    base = digest(_read_bytes(layout.state))
    if len(_journal(layout, base)) + len(commands) > JOURNAL_LIMIT:
        write(layout, state)
        return
    # The leading newline ends a line a crash may have torn, so this one stays whole.
    line = "\n" + json.dumps({"base": base, "commands": commands}, separators=(",", ":")) + "\n"
    with open(layout.journal, "ab") as journal:
        journal.write(line.encode())
        journal.flush()
        os.fsync(journal.fileno())


def fingerprint(layout: Layout) -> str:
    """A digest of everything persisted: the snapshot and the journal."""
    return digest(_read_bytes(layout.state) + b"\0" + _read_bytes(layout.journal))


def write_durably(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write, fsync, rename: a crash leaves the old file or the new one, never half of one."""
    staged = Path(path).with_name(f".{Path(path).name}.new")
    write_durably(staged, data)
    os.replace(staged, path)


def canonical(document: object) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def digest(data: object) -> str:
    """The sha256 of a file's text, or of a document in canonical form."""
    if not isinstance(data, str | bytes):
        data = canonical(data)
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def record_applied(layout: Layout, files: Mapping[Path, str | None], services: list[str]) -> None:
    """After a state document was applied and persisted as the snapshot (see `write`): what it was, the files
    it rendered and the services it left running."""
    record = {
        "version": __version__,
        "document": digest(_read_bytes(layout.state)),
        "state": fingerprint(layout),
        "files": {str(path): digest(text) for path, text in files.items() if text is not None},
        "services": services,
    }
    write_atomically(layout.applied, json.dumps(record))


def applied(layout: Layout, document: object) -> dict[str, Any] | None:
    """The record of the last state document if `document` is that one and nothing it made has changed
    since: the persisted state and every rendered file still have the digests it wrote down."""
    try:
        record = json.loads(layout.applied.read_text())
        if (record["version"], record["document"]) != (__version__, digest(document)):
            return None
        if record["state"] != fingerprint(layout):
            return None
        if any(digest(Path(path).read_bytes()) != sha for path, sha in record["files"].items()):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record
