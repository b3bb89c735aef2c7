"""The archive key: a development key made on demand in a private GNUPGHOME (git-ignored `.gnupg/`), or a
production key chosen by fingerprint or imported from a file; exports the public keyring for apt's
`signed-by` and signs Release files. Private keys only ever live in GNUPGHOME, never in the repository.
"""

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vrpipe.errors import VrpipeError, shown
from vrpipe.run import run

DEV_KEY_UID = "vrpipe development archive key <archive@vrpipe.example.org>"
FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")


def _gpg(gnupghome: Path, *args: str | Path) -> str:
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = ["gpg", "--homedir", gnupghome, "--batch", "--no-tty", "--pinentry-mode", "loopback", *args]
    return run(argv).stdout


def secret_keys(gnupghome: Path) -> dict[str, list[str]]:
    """The signing keys in gnupghome: primary key fingerprint -> its user ids."""
    if not (gnupghome / "pubring.kbx").exists():
        return {}  # a fresh home: nothing to list (and gpg would create files to say so)
    return _primary_keys(_gpg(gnupghome, "--with-colons", "--list-secret-keys"), "sec")


def keyring_fingerprints(keyring: Path) -> list[str]:
    """The primary keys in an exported keyring file (read with a throw-away home: nothing is imported)."""
    with tempfile.TemporaryDirectory() as home:
        return list(_primary_keys(_gpg(Path(home), "--with-colons", "--show-keys", keyring), "pub"))


def signing_key_ids(keyring: Path) -> list[str]:
    """Every key and subkey of a keyring file as a long key id (the last 16 hex digits of its fingerprint,
    as reprepro's VerifyRelease takes them): Debian signs its Release files with subkeys."""
    with tempfile.TemporaryDirectory() as home:
        listing = _gpg(Path(home), "--with-colons", "--show-keys", keyring)
    return [fields[9][-16:] for fields in (r.split(":") for r in listing.splitlines()) if fields[0] == "fpr"]


def _primary_keys(listing: str, kind: str) -> dict[str, list[str]]:
    """Parse gpg's --with-colons listing: each primary key ("sec" or "pub") -> its user ids."""
    keys: dict[str, list[str]] = {}
    current = None
    for record in listing.splitlines():
        fields = record.split(":")
        if fields[0] == kind:
            current = None  # its fingerprint is the next "fpr" record
        elif fields[0] == "fpr" and current is None:
            current = fields[9]
            keys[current] = []
        elif fields[0] == "uid" and current:
            keys[current].append(fields[9])
    return keys


def dev_key(gnupghome: Path) -> str:
    """The development archive key's fingerprint, made the first time."""
    return (_dev_keys(gnupghome) or [new_dev_key(gnupghome)])[0]


def new_dev_key(gnupghome: Path) -> str:
    """Make another development key (ed25519, no passphrase; a rotation's new key) and return it."""
    before = set(secret_keys(gnupghome))
    # --yes: gpg asks before making a second key with the same user id
    _gpg(gnupghome, "--yes", "--passphrase", "", "--quick-generate-key", DEV_KEY_UID, "ed25519", "sign", "never")
    (made,) = set(secret_keys(gnupghome)) - before
    return made


def _dev_keys(gnupghome: Path) -> list[str]:
    return [fpr for fpr, uids in secret_keys(gnupghome).items() if DEV_KEY_UID in uids]


def production_key(gnupghome: Path, fingerprint: str) -> str:
    """Check that the key named by fingerprint can sign from gnupghome."""
    fingerprint = fingerprint.replace(" ", "").upper()
    if not FINGERPRINT.match(fingerprint):
        raise VrpipeError(f"archive key {shown(fingerprint)} is not a 40-hex-digit fingerprint")
    if fingerprint not in secret_keys(gnupghome):
        raise VrpipeError(f"no secret key {fingerprint} in {gnupghome}: import it (repo.key_file) first")
    return fingerprint


def import_key(gnupghome: Path, key_file: Path) -> str:
    """Import a secret key file into gnupghome and return its fingerprint."""
    if not key_file.is_file():
        raise VrpipeError(f"archive key file {key_file} does not exist")
    status = _gpg(gnupghome, "--status-fd", "1", "--import", key_file)
    imported = re.findall(r"^\[GNUPG:\] IMPORT_OK \d+ ([0-9A-F]{40})$", status, re.MULTILINE)
    secret = [f for f in dict.fromkeys(imported) if f in secret_keys(gnupghome)]
    if len(secret) != 1:
        raise VrpipeError(f"{key_file} must hold exactly one secret key, found {len(secret)}")
    return secret[0]


def public_key(gnupghome: Path, fingerprints: Sequence[str]) -> bytes:
    """The public keys as a binary keyring, the format apt's signed-by and gpgv read."""
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "keys.gpg"
        _gpg(gnupghome, "--output", exported, "--export", *fingerprints)
        return exported.read_bytes()


def sign_release(
    gnupghome: Path, fingerprints: Sequence[str], release: Path, inrelease: Path, release_gpg: Path
) -> None:
    """Write InRelease (inline signature) and Release.gpg (detached) for one Release file, signed by
    each key (apt accepts it when one of the signatures is by a key it trusts)."""
    signer = [word for fpr in fingerprints for word in ("--local-user", f"{fpr}!")]
    signer += ["--digest-algo", "SHA512", "--yes"]
    _gpg(gnupghome, *signer, "--clearsign", "--output", inrelease, release)
    _gpg(gnupghome, *signer, "--armor", "--detach-sign", "--output", release_gpg, release)


def stop_agent(gnupghome: Path) -> None:
    """Stop the gpg-agent that signing started for gnupghome (tests use throw-away homes)."""
    if gnupghome.is_dir():
        run(["gpgconf", "--homedir", gnupghome, "--kill", "gpg-agent"])
