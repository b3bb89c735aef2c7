"""Key rotation (`invoke rotate-key`), in two publishes. Start: a new key signs beside the old one and the
keyring package (vr-archive-keyring) holds both, so routers learn the new key by upgrading it while the
old one still vouches for it. Retire: only the new key signs, and the package holds only it.
"""

import time
from dataclasses import dataclass

from vrpipe.errors import VrpipeError

from . import keys, signing
from .config import RepoConfig
from .publish import archive_keys, configured_key, export_and_serve, locked, prepare, served


@dataclass(frozen=True)
class Rotation:
    """What one rotation step did, for its one-line summary."""

    retired: tuple[str, ...]
    keys: keys.ArchiveKeys

    def summary(self) -> str:
        signing_keys = " and ".join(self.keys.signing)
        package = f"vr-archive-keyring {self.keys.generation}"
        if self.retired:
            return f"retired {', '.join(self.retired)}: signed by {signing_keys} only; {package} published"
        return (
            f"overlap: signed by {signing_keys}; {package} published. Once routers have upgraded it, "
            "retire the old key with `invoke rotate-key --retire`"
        )


def rotate_key(config: RepoConfig, new_key: str | None = None, retire: bool = False) -> Rotation:
    """Start a rotation (new_key: a fingerprint whose secret key is in gnupghome; default: a new
    development key) or retire the old key; re-signs every distribution either way."""
    if retire and new_key:
        raise VrpipeError("rotate-key: --key starts a rotation, --retire ends one; give one of them")
    if not keys.load(config.dir) and not config.keyring.exists():
        raise VrpipeError(f"{config.dir} has never been published: there is no key to rotate (publish-repo first)")
    with locked(config):
        current = archive_keys(config)
        following = _retire(config, current) if retire else _start(config, current, new_key)
        # recorded first: if the publish below fails, the next publish-repo finishes this step
        keys.save(config.dir, following)
        export_and_serve(config, prepare(config, following), following, served(config))
    return Rotation(tuple(k for k in current.signing if k not in following.signing), following)


def _start(config: RepoConfig, current: keys.ArchiveKeys, new_key: str | None) -> keys.ArchiveKeys:
    if len(current.signing) > 1:
        raise VrpipeError(
            f"a rotation is already in its overlap (signed by {' and '.join(current.signing)}): "
            "retire the old key with `invoke rotate-key --retire` first"
        )
    if not new_key and (config.key or config.key_file):
        raise VrpipeError("repo.key/key_file name a production key: name the new one with --key (imported first)")
    key = signing.production_key(config.gnupghome, new_key) if new_key else signing.new_dev_key(config.gnupghome)
    if key in current.signing:
        raise VrpipeError(f"{key} already signs {config.dir}: name a new key")
    return keys.ArchiveKeys((*current.signing, key), current.generation + 1, int(time.time()))


def _retire(config: RepoConfig, current: keys.ArchiveKeys) -> keys.ArchiveKeys:
    if len(current.signing) == 1:
        raise VrpipeError(f"no rotation to end: {current.newest} is the only key (start one with `invoke rotate-key`)")
    configured = configured_key(config)
    if configured and configured != current.newest:
        raise VrpipeError(
            f"repo.key/key_file name {configured}, the key being retired", hint=f"set it to {current.newest} first"
        )
    return keys.ArchiveKeys((current.newest,), current.generation + 1, int(time.time()))
