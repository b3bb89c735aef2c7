"""The small wrapper around reprepro: each reprepro command repo/ uses, as one method with clear errors.

reprepro keeps its configuration and database under `basedir` and writes dists/ and pool/ under
`outdir`; it signs through the SignWith hook in conf/, which needs GNUPGHOME. reprepro itself uses GNUPGHOME only to
verify what an update fetches (repo/mirror.py gives it a home holding Debian's keys).
"""

from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

from vrpipe.errors import VrpipeError
from vrpipe.run import run


@dataclass(frozen=True)
class Published:
    """One package as a distribution lists it."""

    package: str
    version: str
    pool_file: Path


@dataclass(frozen=True)
class Reprepro:
    basedir: Path
    outdir: Path
    gnupghome: Path

    def includedeb(self, codename: str, deb: Path) -> None:
        """Add a .deb to codename (replacing its other version) without exporting yet."""
        self._run("--export=never", "includedeb", codename, deb)

    def copy(self, dest: str, source: str, *packages: str) -> None:
        """Copy packages at their current version from one distribution to another, without exporting."""
        self._run("--export=never", "copy", dest, source, *packages)

    def remove(self, codename: str, *packages: str) -> None:
        self._run("--export=never", "remove", codename, *packages)

    def export(self, *codenames: str) -> None:
        """Write (and sign) the indexes of codenames, with a fresh Date and Valid-Until."""
        self._run("export", *codenames)

    def clear_vanished(self) -> None:
        """Forget the distributions conf/distributions no longer names (and the pool files only they used)."""
        self._run("--delete", "clearvanished")  # --delete: also when they still list packages

    def update(self, codename: str, force: bool = False) -> str:
        """Fetch codename's upstream (its Update rule in conf/updates) and take in what its filter lists,
        without exporting; force: also when the upstream indexes have not changed. Returns reprepro's
        log, which names every file it downloaded."""
        return self._call("-VV", "--export=never", *(["--noskipold"] if force else []), "update", codename).stderr

    def check(self) -> None:
        """Check the database against the pool: every file there and with the checksums recorded."""
        self._run("check")
        self._run("checkpool")

    def list(self, codename: str) -> dict[str, Published]:
        """The packages in codename, by name (an Architecture: all package is listed once)."""
        listing = self._run("--list-format", "${package}\t${version}\t${Filename}\n", "list", codename)
        found = {}
        for line in listing.splitlines():
            package, version, filename = line.split("\t")
            found[package] = Published(package, version, self.outdir / filename)
        return found

    def versions(self, package: str) -> dict[str, str]:
        """Where package is: codename -> its version there (one call for every distribution)."""
        found = {}
        for line in self._run("ls", package).splitlines():
            _, version, codename, _ = (word.strip() for word in line.split("|"))
            found[codename] = version
        return found

    def _run(self, *args: str | Path) -> str:
        return self._call(*args).stdout

    def _call(self, *args: str | Path) -> CompletedProcess[str]:
        if not (self.basedir / "conf" / "distributions").exists():
            raise VrpipeError(f"{self.basedir} has no conf/distributions: publish once first")
        argv = ["reprepro", "--basedir", self.basedir, "--outdir", self.outdir, *args]
        return run(argv, env={"GNUPGHOME": str(self.gnupghome)})
