"""The package cache: every .deb the template builds downloaded, one folder per suite (build/cache/debs/trixie),
kept across builds so that an older manifest can still be rebuilt offline. It primes apt's archive folder,
says which .debs a manifest needs and the cache lacks, and makes a local repository of exactly those.
"""

import errno
import os
import shutil
from pathlib import Path

from debian.deb822 import Packages

from vrpipe.run import run

from .formats import sha256
from .paths import make_dirs

ARCHIVES = Path("var/cache/apt/archives")


def file_name(package: dict) -> str:
    """apt's name for a package's .deb (an epoch's colon written %3a)."""
    return f"{package['name']}_{package['version'].replace(':', '%3a')}_{package['architecture']}.deb"


def prime(cache: Path, root: Path) -> None:
    """Hard-link the cached .debs where apt in root looks first, so it downloads only what is new
    (copied when root is on another filesystem, such as a tmpfs)."""
    archives = root / ARCHIVES
    make_dirs(archives / "partial")
    for deb in sorted(cache.glob("*.deb")) if cache.is_dir() else []:
        _link(deb, archives / deb.name)


def keep(root: Path, cache: Path) -> None:
    """Move the .debs of root's apt cache into the package cache, and leave no package file in root."""
    archives = root / ARCHIVES
    make_dirs(cache)
    for deb in sorted(archives.glob("*.deb")):
        kept = cache / deb.name
        if kept.exists() and kept.samefile(deb):  # primed from the cache: a rename would leave both names
            deb.unlink()
        else:
            shutil.move(deb, kept)
    shutil.rmtree(archives / "partial", ignore_errors=True)
    make_dirs(archives / "partial")
    (archives / "lock").unlink(missing_ok=True)


def with_digests(packages: list[dict], cache: Path) -> list[dict]:
    """The packages with the sha256 of the .deb each was installed from (what a rebuild must find)."""
    return [{**p, "sha256": sha256(cache / file_name(p))} for p in packages]


def missing(packages: list[dict], cache: Path) -> list[str]:
    """The .debs of packages that the cache lacks or holds with other bytes, one line each."""
    lines = []
    for package in packages:
        deb = cache / file_name(package)
        if not deb.exists():
            lines.append(f"{deb.name}: not in {cache}")
        elif sha256(deb) != package["sha256"]:
            lines.append(f"{deb.name}: {cache} holds other bytes than the manifest's (sha256 {package['sha256']})")
    return lines


def local_repository(packages: list[dict], cache: Path, folder: Path, suite: str) -> None:
    """A flat repository in folder holding exactly these packages' .debs (check them with missing() first),
    its Release naming suite (mmdebstrap picks the required packages by it)."""
    shutil.rmtree(folder, ignore_errors=True)
    make_dirs(folder)
    for package in packages:
        _link(cache / file_name(package), folder / file_name(package))
    scanned = run(["dpkg-scanpackages", "--multiversion", "."], cwd=folder, timeout=900).stdout
    index = "\n".join(_archive_priority(stanza, packages) for stanza in Packages.iter_paragraphs(scanned))
    (folder / "Packages").write_text(index)
    size, digest = len(index.encode()), sha256(folder / "Packages")
    (folder / "Release").write_text(
        f"Suite: {suite}\nCodename: {suite}\nArchitectures: amd64 all\nSHA256:\n {digest} {size} Packages\n")


def _archive_priority(stanza: Packages, packages: list[dict]) -> str:
    """The stanza with the priority Debian's archive gave the package (recorded in the manifest), which
    may differ from the one in its .deb: mmdebstrap picks minbase's packages by it."""
    recorded = {p["name"]: p.get("priority") for p in packages}
    priority = recorded.get(stanza["Package"])
    if priority:
        stanza["Priority"] = priority
    return str(stanza.dump())


def local_sources(folder: Path) -> str:
    """The sources.list line of a local repository, as apt reaches it at folder. Its .debs were checked
    against the manifest's sha256: apt need not check a signature."""
    return f"deb [trusted=yes] file://{folder} ./\n"


def _link(source: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, dest)
