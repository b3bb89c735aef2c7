"""reprepro's SignWith hook: marks a freshly written Release file `Acquire-By-Hash: yes` (the trees
repo/snapshot.py serves carry by-hash copies of every index), then signs it with the archive key(s).
reprepro calls it with the Release file, the InRelease to write and the Release.gpg to write.
"""

from pathlib import Path

from .signing import sign_release

BY_HASH = "Acquire-By-Hash: yes\n"


def mark_by_hash(release: str) -> str:
    """Add the Acquire-By-Hash field before the checksum lists (once)."""
    if BY_HASH in release:
        return release
    head, sep, sums = release.partition("MD5Sum:")
    return head + BY_HASH + sep + sums


def sign(argv: list[str], fingerprints: list[str], gnupghome: str) -> None:
    release, inrelease, release_gpg = (Path(a) for a in argv)
    release.write_text(mark_by_hash(release.read_text()))
    sign_release(Path(gnupghome), fingerprints, release, inrelease, release_gpg)
