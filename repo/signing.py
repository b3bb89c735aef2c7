"""The archive key: a development key made on demand in a private GNUPGHOME (git-ignored `.gnupg/`), or a
production key chosen by fingerprint or imported from a file; exports the public keyring for apt's
`signed-by` and signs Release files. Private keys only ever live in GNUPGHOME, never in the repository.
"""

import re
from pathlib import Path

from .run import RepoError, run

DEV_KEY_UID = "vrpipe development archive key <archive@vrpipe.example.org>"
FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")


def _gpg(gnupghome: Path, *args: str | Path) -> bytes:
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = ["gpg", "--homedir", gnupghome, "--batch", "--no-tty", "--pinentry-mode", "loopback", *args]
    return run(argv).stdout


def secret_fingerprints(gnupghome: Path, who: str = "") -> list[str]:
    """Fingerprints of the signing keys in gnupghome (matching `who`, a uid or fingerprint, if given)."""
    listing = _gpg(gnupghome, "--with-colons", "--list-secret-keys", *([who] if who else []))
    lines = listing.decode().splitlines()
    # A "fpr" record follows each key record; only the primary keys' ("sec") fingerprints count.
    return [
        b.split(":")[9] for a, b in zip(lines, lines[1:], strict=False) if a.startswith("sec:") and b.startswith("fpr:")
    ]


def dev_key(gnupghome: Path) -> str:
    """The development archive key's fingerprint, made (ed25519, no passphrase) the first time."""
    found = secret_fingerprints(gnupghome, DEV_KEY_UID) if _has_keys(gnupghome) else []
    if not found:
        _gpg(gnupghome, "--passphrase", "", "--quick-generate-key", DEV_KEY_UID, "ed25519", "sign", "never")
        found = secret_fingerprints(gnupghome, DEV_KEY_UID)
    return found[0]


def production_key(gnupghome: Path, fingerprint: str) -> str:
    """Check that the key named by fingerprint can sign from gnupghome."""
    fingerprint = fingerprint.replace(" ", "").upper()
    if not FINGERPRINT.match(fingerprint):
        raise RepoError(f"archive key {fingerprint!r} is not a 40-hex-digit fingerprint")
    if not _has_keys(gnupghome) or fingerprint not in secret_fingerprints(gnupghome):
        raise RepoError(f"no secret key {fingerprint} in {gnupghome}: import it (repo.key_file) first")
    return fingerprint


def import_key(gnupghome: Path, key_file: Path) -> str:
    """Import a secret key file into gnupghome and return its fingerprint."""
    if not key_file.is_file():
        raise RepoError(f"archive key file {key_file} does not exist")
    status = _gpg(gnupghome, "--status-fd", "1", "--import", key_file).decode()
    imported = re.findall(r"^\[GNUPG:\] IMPORT_OK \d+ ([0-9A-F]{40})$", status, re.MULTILINE)
    secret = [f for f in dict.fromkeys(imported) if f in secret_fingerprints(gnupghome)]
    if len(secret) != 1:
        raise RepoError(f"{key_file} must hold exactly one secret key, found {len(secret)}")
    return secret[0]


def public_key(gnupghome: Path, fingerprint: str) -> bytes:
    """The public key as a binary keyring, the format apt's signed-by and gpgv read."""
    return _gpg(gnupghome, "--export", fingerprint)


def sign_release(gnupghome: Path, fingerprint: str, release: Path, inrelease: Path, release_gpg: Path) -> None:
    """Write InRelease (inline signature) and Release.gpg (detached) for one Release file."""
    signer = ["--local-user", f"{fingerprint}!", "--digest-algo", "SHA512", "--yes"]
    _gpg(gnupghome, *signer, "--clearsign", "--output", inrelease, release)
    _gpg(gnupghome, *signer, "--armor", "--detach-sign", "--output", release_gpg, release)


def _has_keys(gnupghome: Path) -> bool:
    """gpg exits non-zero when asked for a uid it has no key for; a fresh home has no keyring at all."""
    return (gnupghome / "pubring.kbx").exists()


def stop_agent(gnupghome: Path) -> None:
    """Stop the gpg-agent that signing started for gnupghome (tests use throw-away homes)."""
    if gnupghome.is_dir():
        run(["gpgconf", "--homedir", gnupghome, "--kill", "gpg-agent"])
