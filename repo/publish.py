"""Publishing: builds the packages, puts them into one channel of the reprepro repository (moving the
version they replace to `<channel>-previous`, and older ones further back, so routers can roll back
`repo.keep` versions), exports and signs, then serves the result atomically (repo/snapshot.py).
Publishing again with nothing new changes nothing.
"""

import fcntl
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from debian.debfile import DebFile
from debian.debian_support import Version

from vrpipe.errors import VrpipeError
from vrpipe.log import step

from . import keys, mirrors, signing, snapshot, verify
from .config import PREVIOUS, RepoConfig
from .packages import (
    KEYRING_PACKAGE,
    build_keyring_package,
    build_packages,
    check_version,
    engine_version,
    source_date_epoch,
)
from .render import PROJECT, render
from .reprepro import Reprepro


@dataclass(frozen=True)
class Result:
    """What one publish did, for its one-line summary."""

    channel: str
    versions: dict[str, str]  # package -> version now in the channel
    replaced: dict[str, str] = field(default_factory=dict)  # package -> version moved to -previous
    tree: Path | None = None  # the tree now served, None when nothing changed
    seconds: float = 0.0

    def summary(self) -> str:
        packages = ", ".join(f"{p} {v}" for p, v in sorted(self.versions.items()))
        if self.tree is None:
            return f"{self.channel}: already up to date ({packages}), nothing changed in {self.seconds:.2f} s"
        rollback = ", ".join(f"{p} {v}" for p, v in sorted(self.replaced.items()))
        previous = f"; previous in {self.channel}{PREVIOUS}: {rollback}" if rollback else ""
        served = f"serving tree {self.tree.name}"
        return f"{self.channel}: published {packages}{previous}; {served} in {self.seconds:.2f} s"


def publish(
    config: RepoConfig, version: str | None = None, channel: str | None = None, refresh: bool = False
) -> Result:
    """Build and publish our packages to channel (default: the first). refresh re-signs every
    distribution with a new Valid-Until, and builds nothing unless a version is given (the daily
    refresh must not publish whatever version the checkout holds). Arguments are checked first."""
    start = time.monotonic()
    if version or not refresh:
        version = check_version(version or engine_version())
    elif not (config.dir / "conf" / "distributions").exists():
        raise VrpipeError(f"{config.dir} has never been published: nothing to refresh (run publish-repo first)")
    channel = config.channel(channel)
    with locked(config):
        archive = archive_keys(config)
        repo = prepare(config, archive)
        suites = [channel, *config.history(channel)]
        replaced: dict[str, str] = {}
        changed: set[str] = set()
        if version:
            with tempfile.TemporaryDirectory(dir=config.dir) as tmp:
                replaced, changed = _include(repo, suites, build_packages(Path(tmp), version))
        unexported = [c for c in served(config) if not (repo.outdir / "dists" / c / "InRelease").exists()]
        to_export = served(config) if refresh else sorted({*unexported, *changed})
        tree = export_and_serve(config, repo, archive, to_export)
    versions = {p.package: p.version for p in repo.list(channel).values() if p.package != KEYRING_PACKAGE}
    return Result(channel, versions, replaced, tree, time.monotonic() - start)


def export_and_serve(
    config: RepoConfig, repo: Reprepro, archive: keys.ArchiveKeys, codenames: list[str]
) -> Path | None:
    """Put archive's keyring package into every distribution that lacks it, export codenames and those,
    and serve the result if it differs from the served tree. Returns the new tree, or None."""
    there = repo.versions(KEYRING_PACKAGE)
    stale = [c for c in config.codenames if there.get(c) != str(archive.generation)]
    if stale:
        with tempfile.TemporaryDirectory(dir=config.dir) as tmp:
            deb = build_keyring_package(Path(tmp), config.keyring.read_bytes(), archive.generation, archive.since)
            for codename in stale:
                with step(f"include {deb.name} in {codename}"):
                    repo.includedeb(codename, deb)
    to_export = sorted({*codenames, *stale})
    if to_export:
        with step(f"export {' '.join(to_export)}"):
            repo.export(*to_export)
    if not snapshot.differs(repo.outdir, config.public, served(config)):
        return None
    return snapshot.publish_tree(repo.outdir, config.public, config.keyring, lambda t: check_tree(config, t))


def check_tree(config: RepoConfig, tree: Path) -> None:
    """Refuse to serve a tree apt would not trust, or would trust too long: every Release signed for the
    exported keyring, with a Valid-Until in the future, and every index and .deb as it lists them."""
    report = verify.verify(tree, config.keyring, served(config))
    if report.problems:
        raise VrpipeError(f"not serving tree {tree.name}, the served tree stays: " + "; ".join(report.problems))


def served(config: RepoConfig) -> list[str]:
    """Every distribution the served tree holds: our channels with their history, and the Debian mirrors."""
    return [*config.codenames, *(m.suite for m in mirrors.load(config.dir))]


def prepare(config: RepoConfig, archive: keys.ArchiveKeys, mirrored: list[mirrors.Mirror] | None = None) -> Reprepro:
    """Export the public keyring of archive's keys, and write reprepro's conf/ to sign with them (and
    for the configured distributions and mirrored (default: the recorded mirrors): older versions
    beyond repo.keep are dropped)."""
    mirrored = mirrors.load(config.dir) if mirrored is None else mirrored
    vanished = _vanished(config, [m.suite for m in mirrored])
    signing_keys = archive.signing
    _update(config.keyring, signing.public_key(config.gnupghome, signing_keys))
    conf = config.dir / "conf"
    conf.mkdir(exist_ok=True)
    hook = conf / "sign-release"
    sign_release = render(
        "sign-release.j2", python=sys.executable, project=PROJECT, fingerprints=signing_keys, gnupghome=config.gnupghome
    )
    _update(hook, sign_release.encode(), mode=0o755)
    distributions = render(
        "distributions.j2", codenames=config.codenames, mirrors=mirrored, origin=config.origin,
        valid_for=config.valid_for, hook=hook,
    )
    _update(conf / "distributions", distributions.encode())
    repo = Reprepro(config.dir, config.dir / "work", config.gnupghome)
    if vanished:
        with step(f"drop {' '.join(d.name for d in vanished)} (beyond repo.keep)"):
            repo.clear_vanished()
            for dist in vanished:
                shutil.rmtree(dist)
    return repo


def _vanished(config: RepoConfig, mirrored: list[str]) -> list[Path]:
    """The distributions reprepro has that the settings no longer name: older versions beyond a lowered
    repo.keep. A whole channel is never dropped this way (a typo in repo.channels must not delete one)."""
    dists = config.dir / "work" / "dists"
    known = {*config.codenames, *mirrored}
    vanished = sorted(d for d in dists.iterdir() if d.name not in known) if dists.is_dir() else []
    channels = [d.name for d in vanished if not any(d.name.startswith(c + PREVIOUS) for c in config.channels)]
    if channels:
        raise VrpipeError(
            f"{config.dir} publishes {', '.join(channels)}, which repo.channels no longer names: restore the "
            "setting (removing a channel from a published repository is not done by a publish)"
        )
    return vanished


def archive_key(config: RepoConfig) -> str:
    """The newest archive key: the one that signs what the repository's builds sign (the manifest)."""
    return archive_keys(config).newest


def archive_keys(config: RepoConfig) -> keys.ArchiveKeys:
    """The keys the repository is signed with: recorded at its first publish (the configured key, or
    the development key), and from then on checked against gnupghome and the settings."""
    with step("archive keys"):
        return _checked_keys(config)


def _checked_keys(config: RepoConfig) -> keys.ArchiveKeys:
    recorded = keys.load(config.dir)
    # The first record's time stamps the keyring package: SOURCE_DATE_EPOCH, not the clock, so that two
    # repositories made from one key (two clones sharing it) give that package the same bytes.
    first = source_date_epoch()
    if recorded is None and config.keyring.exists():
        # published before the record existed: the exported keyring is what routers trust
        recorded = keys.ArchiveKeys(tuple(signing.keyring_fingerprints(config.keyring)), 1, first)
        keys.save(config.dir, recorded)
    configured = configured_key(config)
    if recorded is None:
        recorded = keys.ArchiveKeys((configured or signing.dev_key(config.gnupghome),), 1, first)
        keys.save(config.dir, recorded)
    if configured and configured not in recorded.signing:
        raise VrpipeError(
            f"repo.key/key_file name {configured}, but {config.dir} is signed with {', '.join(recorded.signing)} "
            "and routers trust only that: set repo.key/key_file to it, or change keys with `invoke rotate-key`"
        )
    available = signing.secret_keys(config.gnupghome)
    for fingerprint in recorded.signing:
        if fingerprint not in available:
            raise VrpipeError(_missing_key(config, fingerprint))
    return recorded


def configured_key(config: RepoConfig) -> str | None:
    """The key the settings name: an imported key file, a production key, or None (development)."""
    if config.key_file:
        imported = signing.import_key(config.gnupghome, config.key_file)
        if config.key and signing.production_key(config.gnupghome, config.key) != imported:
            raise VrpipeError(f"repo.key_file {config.key_file} does not hold repo.key {config.key}")
        return imported
    if config.key:
        return signing.production_key(config.gnupghome, config.key)
    return None


def _missing_key(config: RepoConfig, fingerprint: str) -> str:
    home = config.gnupghome
    return (
        f"{home} has no secret key {fingerprint}, the archive key {config.dir} is published with and routers "
        "trust; nothing was changed and no new key was made. If only its public part is lost (pubring.kbx "
        f"gone, private-keys-v1.d still there): `gpg --homedir {home} --import {config.keyring}`. Otherwise "
        f"restore {home} from its backup, or import the key with repo.key_file. To change keys on purpose: "
        "`invoke rotate-key`."
    )


def _include(repo: Reprepro, suites: list[str], debs: list[Path]) -> tuple[dict[str, str], set[str]]:
    """Put debs into the channel (suites[0]); the versions they replace move one step back along its
    history (suites[1:]), the oldest dropping out. Returns the replaced versions, and the suites that
    changed."""
    channel = suites[0]
    current = repo.list(channel)
    replaced: dict[str, str] = {}
    changed: set[str] = set()
    for deb in debs:
        name, version = _name_version(deb)
        there = current.get(name)
        if there and there.version == version:
            if there.pool_file.read_bytes() != deb.read_bytes():
                raise VrpipeError(
                    f"{name} {version} is already in {channel} with different content: "
                    "bump __version__ in vr_scripts/vr/__init__.py or publish with --version"
                )
            continue
        if there and Version(version) < Version(there.version):
            raise VrpipeError(
                f"{name} {version} is older than {there.version} in {channel}: publish a newer version; "
                f"routers roll back from {', '.join(suites[1:])}"
            )
        with step(f"include {deb.name} in {channel}"):
            if there:
                changed.update(_shift(repo, suites, name))
                replaced[name] = there.version
            repo.includedeb(channel, deb)
        changed.add(channel)
    return replaced, changed


def _shift(repo: Reprepro, suites: list[str], package: str) -> list[str]:
    """Copy package one step back along suites (newest first), oldest end first, so each version
    moves before it is overwritten; reprepro drops pool files no distribution lists any more."""
    there = repo.versions(package)
    moved = [(newer, older) for newer, older in zip(suites, suites[1:], strict=False) if newer in there]
    for newer, older in reversed(moved):
        repo.copy(older, newer, package)
    return [older for _, older in moved]


def _update(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Write path only when its content changes, so a publish with nothing new touches nothing."""
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)
    path.chmod(mode)


def _name_version(deb: Path) -> tuple[str, str]:
    control = DebFile(str(deb)).debcontrol()
    return control["Package"], control["Version"]


@contextmanager
def locked(config: RepoConfig) -> Iterator[None]:
    """One publish (or key rotation) at a time per repository."""
    config.dir.mkdir(parents=True, exist_ok=True)
    with (config.dir / "publish.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
