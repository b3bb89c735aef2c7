"""A real apt client for the repository tests: a Debian 13 (trixie) minbase chroot made once with
mmdebstrap (with vr-base's dependencies already installed, so only our repository is needed), cached as
a tarball under the git-ignored .cache/, and extracted fresh for each test module.
"""

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from repo import signing
from repo.packages import ROUTER_KEYRING, VR_BASE_DEPENDS
from repo.render import PROJECT

SUITE = "trixie"
CACHE = PROJECT / ".cache"
SOURCES_FILE = "etc/apt/sources.list.d/vr.sources"
KEYRING_FILE = str(ROUTER_KEYRING.relative_to("/"))  # the template's path, which vr-archive-keyring takes over


def run(argv: list[str | Path], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv, capturing text output; raise with that output if check and it failed."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def client_tarball() -> Path:
    """The cached minbase tarball, made with mmdebstrap (from Debian's mirror) when missing."""
    includes = ",".join(sorted(VR_BASE_DEPENDS))
    tarball = CACHE / f"apt-client-{SUITE}-{hashlib.sha256(includes.encode()).hexdigest()[:12]}.tar"
    if not tarball.exists():
        CACHE.mkdir(exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={includes}", SUITE, partial])
        partial.rename(tarball)
    return tarball


@dataclass(frozen=True)
class AptClient:
    """One extracted chroot; every command runs inside it with chroot(8)."""

    root: Path

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["chroot", self.root, *argv], check=check)

    def use_repository(self, url: str, suites: str, keyring: Path) -> None:
        """Point apt at our repository only (deb822 source, Signed-By) and forget older indexes."""
        self.trust(keyring.read_bytes())
        (self.root / SOURCES_FILE).write_text(
            f"Types: deb\nURIs: {url}\nSuites: {suites}\nComponents: main\nSigned-By: /{KEYRING_FILE}\n"
        )
        for index in (self.root / "var/lib/apt/lists").glob("*_dists_*"):
            index.unlink()

    def trust(self, keyring: bytes) -> None:
        """Make keyring the one apt's Signed-By names (replacing vr-archive-keyring's link, if any)."""
        path = self.root / KEYRING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_bytes(keyring)

    def trusted_keys(self) -> list[str]:
        """The fingerprints in the keyring apt's Signed-By names (through the package's link)."""
        return signing.keyring_fingerprints(self.root / KEYRING_FILE)

    def update(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apt-get", "update", "-q", check=check)

    def install(self, *packages: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "--allow-downgrades", *packages]
        return self.run(*argv, check=check)

    def installed_version(self, package: str) -> str:
        """The installed version of package, or "" when it is not installed."""
        shown = self.run("dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package, check=False)
        status, _, version = shown.stdout.partition(" ")
        return version if shown.returncode == 0 and status == "installed" else ""


@contextmanager
def apt_client(where: Path) -> Iterator[AptClient]:
    """A fresh chroot under where, with /proc mounted and Debian's own sources removed; unmounted and
    deleted after (only once the unmount worked, so nothing mounted is ever deleted)."""
    root = where / "chroot"
    root.mkdir()
    run(["tar", "-C", root, "-xf", client_tarball()])
    for sources in [root / "etc/apt/sources.list", *(root / "etc/apt/sources.list.d").glob("*")]:
        sources.unlink(missing_ok=True)
    run(["mount", "-t", "proc", "proc", root / "proc"])
    try:
        yield AptClient(root)
    finally:
        run(["umount", root / "proc"])
        shutil.rmtree(root)
