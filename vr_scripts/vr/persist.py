"""The persisted desired state: /var/lib/vr/state.json, the readable source of truth, written atomically
after every successful apply, plus a pickle of the same state beside it that saves re-validating
thousands of items on every apply. The pickle is used only when it was made by this engine version from
exactly the bytes now in state.json; it lives in a root-only directory, like everything the engine trusts.
applied.json records the last state document applied and the digests of the files it rendered, so the
same document again is recognised without parsing or rendering anything.
"""

import hashlib
import json
import os
import pickle
from pathlib import Path

from . import __version__
from .document import load_state, state_document
from .model import RouterState


def read(layout):
    try:
        text = layout.state.read_bytes()
    except FileNotFoundError:
        return RouterState()
    digest = hashlib.sha256(text).hexdigest()
    try:
        version, cached_digest, state = pickle.loads(layout.state_cache.read_bytes())
        if (version, cached_digest) == (__version__, digest):
            return state
    except (OSError, pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, ImportError):
        pass  # no cache, or one from another engine version: read the JSON
    return load_state(json.loads(text))


def write(layout, state):
    text = json.dumps(state_document(state), separators=(",", ":")).encode()
    write_atomically(layout.state, text)
    cache = pickle.dumps((__version__, hashlib.sha256(text).hexdigest(), state), protocol=pickle.HIGHEST_PROTOCOL)
    write_atomically(layout.state_cache, cache)


def write_durably(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def write_atomically(path, data):
    """Write, fsync, rename: a crash leaves the old file or the new one, never half of one."""
    staged = Path(path).with_name(f".{Path(path).name}.new")
    write_durably(staged, data)
    os.replace(staged, path)


def digest(data):
    """The sha256 of a document or file text; a document is taken in a canonical form (keys sorted)."""
    if not isinstance(data, str | bytes):
        data = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def record_applied(layout, document, files, services):
    """After a state document was applied: what it was, the files it rendered and the services it left running."""
    record = {
        "version": __version__,
        "document": digest(document),
        "state": digest(layout.state.read_bytes()),
        "files": {str(path): digest(text) for path, text in files.items() if text is not None},
        "services": services,
    }
    write_atomically(layout.applied, json.dumps(record))


def forget_applied(layout):
    layout.applied.unlink(missing_ok=True)


def applied(layout, document):
    """The record of the last state document if `document` is that one and nothing it made has changed
    since: the persisted state and every rendered file still have the digests it wrote down."""
    try:
        record = json.loads(layout.applied.read_text())
        if (record["version"], record["document"]) != (__version__, digest(document)):
            return None
        if record["state"] != digest(layout.state.read_bytes()):
            return None
        if any(digest(Path(path).read_bytes()) != sha for path, sha in record["files"].items()):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record
