"""A local mirror of Debian's security suite for the template's release (`<suite>-security`): only the
packages the template ships (its manifest) and what they depend on, fetched by reprepro's update rules and
verified against Debian's archive keyring, then re-signed with our key and served beside our channels with
the same atomic switch (repo/snapshot.py), so routers trust one keyring. A failed fetch publishes nothing.
"""

import json
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from debian.deb822 import Packages, Release

from vrpipe.errors import CommandError, VrpipeError
from vrpipe.log import step
from vrpipe.run import run

from . import mirrors, publish, signing
from .config import RepoConfig
from .mirrors import Mirror
from .render import render
from .reprepro import Reprepro

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FETCHED = re.compile(r"^aptmethod got '(?P<url>[^']+)'", re.MULTILINE)
CHATTER = ("aptmethod", "Uncompress", "Created directory", "Calculating", "Getting packages", "Shutting down")
SHOWN = 8  # new packages named in the summary; more are counted
MAX_PASSES = 5  # each pass adds the dependencies new in the last one; more means a loop in the indexes


@dataclass(frozen=True)
class MirrorResult:
    suite: str
    packages: dict[str, str]  # package -> version now mirrored
    new: dict[str, str]  # the ones this run fetched
    indexes: int  # index files downloaded (InRelease, Packages)
    fetched_bytes: int
    tree: Path | None  # the tree now served, None when nothing changed
    seconds: float

    def summary(self) -> str:
        news = ", ".join(f"{p} {v}" for p, v in sorted(self.new.items())) if self.new else "nothing new"
        if len(self.new) > SHOWN:
            news = f"{len(self.new)} new"
        served = f"serving tree {self.tree.name}" if self.tree else "served tree unchanged"
        return (
            f"mirror-security: {self.suite}: {len(self.packages)} packages mirrored ({news}); fetched "
            f"{self.indexes} indexes and {len(self.new)} packages, {self.fetched_bytes} bytes; {served} "
            f"in {self.seconds:.1f} s"
        )


def template_mirror(manifest: Path, upstream: str | None, keyring: Path) -> Mirror:
    """The mirror of the template's release, from its manifest (suite, security mirror, packages)."""
    if not manifest.is_file():
        raise VrpipeError(
            f"no template manifest at {manifest}: the mirror takes the template's packages from it",
            hint="build the template first (invoke build-template), or pass --manifest",
        )
    try:
        data = json.loads(manifest.read_text())
        suite, names = data["suite"], tuple(sorted({p["name"] for p in data["packages"]}))
        upstream = upstream or data["security_mirror"]
    except (ValueError, KeyError, TypeError) as e:
        raise VrpipeError(f"{manifest} is not a template manifest ({e!r} missing or wrong)") from e
    if not names:
        raise VrpipeError(f"{manifest} lists no packages: nothing to mirror")
    if not keyring.is_file():
        raise VrpipeError(f"Debian's archive keyring {keyring} is missing", hint="./bootstrap.sh installs it")
    return Mirror(f"{suite}-security", upstream.rstrip("/"), str(keyring), names)


def mirror_security(config: RepoConfig, mirror: Mirror) -> MirrorResult:
    """Fetch the suite's packages, verify them against Debian's keyring, sign and serve them; on any
    failure the served tree stays as it was."""
    start = time.monotonic()
    if mirror.suite in config.codenames:
        raise VrpipeError(f"{mirror.suite} is one of our channels (repo.channels): it cannot also be a mirror")
    with publish.locked(config):
        archive = publish.archive_keys(config)
        suites = [m for m in mirrors.load(config.dir) if m.suite != mirror.suite] + [mirror]
        repo = publish.prepare(config, archive, suites)
        before = repo.list(mirror.suite)
        with tempfile.TemporaryDirectory(dir=config.dir) as home:
            _write_updates(config.dir / "conf", suites, Path(home))
            fetched = _update(replace(repo, gnupghome=Path(home)), mirror)
        mirrors.save(config.dir, suites)
        after = repo.list(mirror.suite)
        exported = (repo.outdir / "dists" / mirror.suite / "InRelease").exists()
        tree = publish.export_and_serve(config, repo, archive, [] if exported and after == before else [mirror.suite])
    versions = {p.package: p.version for p in after.values()}
    new = {p: v for p, v in versions.items() if before.get(p) is None or before[p].version != v}
    indexes = [url for url in fetched if "/dists/" in url]
    size = _fetched_bytes(config.dir, mirror, fetched)
    return MirrorResult(mirror.suite, versions, new, len(indexes), size, tree, time.monotonic() - start)


def _write_updates(conf: Path, suites: list[Mirror], home: Path) -> None:
    """conf/updates with one rule per mirror, and a GnuPG home holding only Debian's keys (reprepro
    verifies with the keys of GNUPGHOME; our signing key lives elsewhere)."""
    key_ids = {}
    for mirror in suites:
        run(["gpg", "--homedir", home, "--batch", "--quiet", "--import", mirror.keyring])
        key_ids[mirror.suite] = signing.signing_key_ids(Path(mirror.keyring))
    (conf / "updates").write_text(render("updates.j2", mirrors=suites, key_ids=key_ids))


def _update(repo: Reprepro, mirror: Mirror) -> list[str]:
    """Run reprepro's update until the filter holds the template's packages and everything they depend
    on in the suite (starting from the index fetched last time, so a run with nothing new is one pass);
    returns the URLs it downloaded."""
    wanted = _with_dependencies(set(mirror.packages), _upstream_index(repo.basedir, mirror))
    fetched: list[str] = []
    for again in range(MAX_PASSES):
        _write_filter(repo.basedir / "conf" / mirror.filter_file, wanted)
        with step(f"fetch {mirror.upstream} {mirror.suite} ({len(wanted)} packages asked for)"):
            # again: the indexes are unchanged since the last pass, but the filter is not
            fetched += FETCHED.findall(_checked_update(repo, mirror, force=again > 0))
        closure = _with_dependencies(wanted, _upstream_index(repo.basedir, mirror))
        if closure == wanted:
            return fetched
        wanted = closure
    raise VrpipeError(f"{mirror.suite}: the dependencies still grow after {MAX_PASSES} passes")


def _checked_update(repo: Reprepro, mirror: Mirror, force: bool) -> str:
    try:
        return repo.update(mirror.suite, force)
    except CommandError as e:
        said = [line for line in e.output.splitlines() if line.strip() and not line.startswith(CHATTER)]
        raise VrpipeError(
            f"{mirror.upstream} {mirror.suite}: fetching or verifying failed, nothing was published: "
            + " | ".join(said[-6:]),
            hint=f"a bad signature means the archive is not signed by a key of {mirror.keyring}",
        ) from e


def _write_filter(path: Path, packages: set[str]) -> None:
    path.write_text("".join(f"{name} install\n" for name in sorted(packages)))


def _upstream_index(basedir: Path, mirror: Mirror) -> dict[str, Packages]:
    """The suite's whole Packages index as the last update fetched and verified it (reprepro keeps it)."""
    found: dict[str, Packages] = {}
    for path in sorted((basedir / "lists").glob(f"{mirror.rule}_{mirror.suite}_main_amd64_Packages*")):
        for entry in Packages.iter_paragraphs(path.read_text(), use_apt_pkg=False):
            found[entry["Package"]] = entry
    return found


def _with_dependencies(wanted: set[str], index: dict[str, Packages]) -> set[str]:
    """wanted and, transitively, every package of the suite that one of them Depends or Pre-Depends on
    (any alternative the suite has: the others come from the release itself)."""
    closure, todo = set(wanted), [p for p in wanted if p in index]
    while todo:
        entry = index[todo.pop()]
        for relation in ("depends", "pre-depends"):
            for alternatives in entry.relations.get(relation) or []:
                for name in (a["name"] for a in alternatives):
                    if name in index and name not in closure:
                        closure.add(name)
                        todo.append(name)
    return closure


def _fetched_bytes(basedir: Path, mirror: Mirror, urls: list[str]) -> int:
    """The bytes downloaded: each index at its size in the signed Release, each package at its size
    in the index."""
    inrelease = basedir / "lists" / f"{mirror.rule}_{mirror.suite}_InRelease"
    sizes = {f"dists/{mirror.suite}/InRelease": inrelease.stat().st_size}
    for entry in Release(inrelease.read_text()).get("SHA256") or []:
        sizes[f"dists/{mirror.suite}/{entry['name']}"] = int(entry["size"])
    for entry in _upstream_index(basedir, mirror).values():
        sizes[entry["Filename"]] = int(entry["Size"])
    return sum(sizes.get(url.removeprefix(mirror.upstream + "/"), 0) for url in urls)
