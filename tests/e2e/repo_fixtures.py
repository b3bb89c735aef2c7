"""Helpers for the repository tests: a throw-away repository and key, and
broken copies of a published tree (tampered index, unsigned, signed by another key, expired).
"""

import gzip
import lzma
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from repo import signing
from repo.config import RepoConfig
from repo.render import PROJECT

RFC2822 = "%a, %d %b %Y %H:%M:%S UTC"


def throwaway_config(where: Path) -> RepoConfig:
    """A repository and GNUPGHOME of its own under where, signed by a fresh development key."""
    return RepoConfig(dir=where / "repo", gnupghome=where / "gnupg")


def copy_tree(public: Path, dest: Path) -> Path:
    """An independent copy of the served tree (no hard links back into the real repository)."""
    shutil.copytree(public, dest)
    return dest


def tamper_packages(tree: Path, codename: str) -> None:
    """Change one field in every copy of codename's Packages index (plain, gzip, xz, by-hash)."""
    for path in (tree / "dists" / codename / "main" / "binary-amd64").rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for opener, closer in (
            (gzip.decompress, gzip.compress),
            (lzma.decompress, lzma.compress),
            (None, None),
        ):
            try:
                text = opener(data) if opener else data
            except (OSError, lzma.LZMAError):
                continue
            if b"Package: " in text:
                text = text.replace(b"Priority: optional", b"Priority: required")
                path.write_bytes(closer(text) if closer else text)
            break


def unsign(tree: Path, codename: str) -> None:
    for name in ("InRelease", "Release.gpg"):
        (tree / "dists" / codename / name).unlink()


def resign(tree: Path, codename: str, gnupghome: Path, fingerprint: str) -> None:
    dist = tree / "dists" / codename
    signing.sign_release(gnupghome, [fingerprint], dist / "Release", dist / "InRelease", dist / "Release.gpg")


def expire(tree: Path, codename: str, gnupghome: Path, fingerprint: str) -> None:
    """Move Date and Valid-Until into the past and sign again with the right key: a replayed repository."""
    release = tree / "dists" / codename / "Release"
    now = datetime.now(UTC)
    text = re.sub(
        r"^Date: .*$", f"Date: {(now - timedelta(days=9)).strftime(RFC2822)}", release.read_text(), flags=re.M
    )
    text = re.sub(r"^Valid-Until: .*$", f"Valid-Until: {(now - timedelta(days=2)).strftime(RFC2822)}", text, flags=re.M)
    release.write_text(text)
    resign(tree, codename, gnupghome, fingerprint)


def drop_valid_until(tree: Path, codename: str, gnupghome: Path, fingerprint: str) -> None:
    """Remove Valid-Until and sign again with the right key: what reprepro writes for `ValidFor: 0d`."""
    release = tree / "dists" / codename / "Release"
    release.write_text(re.sub(r"^Valid-Until: .*\n", "", release.read_text(), flags=re.M))
    resign(tree, codename, gnupghome, fingerprint)


def invoke(where: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run an invoke task as an operator does, with the repository and GNUPGHOME under where and
    further repo settings given through invoke's environment overrides."""
    env = {
        **os.environ,
        "INVOKE_REPO_DIR": str(where / "repo"),
        "INVOKE_REPO_GNUPGHOME": str(where / "gnupg"),
        **{f"INVOKE_REPO_{name.upper()}": value for name, value in settings.items()},
    }
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT, env=env, capture_output=True, text=True)


def offline_key_file(where: Path, uid: str = "vrpipe production test key") -> tuple[str, Path]:
    """A new secret key made in a home of its own under where and exported to a file, as a production
    key is handed over; returns its fingerprint and the file."""
    home = where / "offline-gnupg"
    gpg = ["gpg", "--homedir", home, "--batch", "--passphrase", "", "--pinentry-mode", "loopback"]
    home.mkdir(mode=0o700, exist_ok=True)
    subprocess.run([*gpg, "--quick-generate-key", uid, "ed25519", "sign", "never"], check=True, capture_output=True)
    fingerprint = next(f for f, uids in signing.secret_keys(home).items() if uid in uids)
    key_file = where / f"{fingerprint}.asc"
    subprocess.run([*gpg, "--armor", "--output", key_file, "--export-secret-keys", fingerprint], check=True)
    signing.stop_agent(home)
    return fingerprint, key_file
