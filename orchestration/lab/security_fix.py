"""A Debian library fix, deterministic, for the upgrade tests and `invoke bench-upgrade`: the template's own libssl
package rebuilt as a newer version (same library, new version, new file bytes), published into a channel of
a repository the lab routers take as Debian's security suite; and the processes on a router that still map
the old library afterwards.
"""

import json
import os
import shutil
from pathlib import Path

from vr import contract

from image.config import load_config
from orchestration.manager import Manager
from repo import publish
from repo.config import RepoConfig
from vrpipe.errors import VrpipeError
from vrpipe.run import run

LIBSSL = "libssl3t64"
OLD_LIBRARIES = ("libssl.so", "libcrypto.so")


def installed_version(rootfs: Path, package: str) -> str:
    admindir = f"--admindir={rootfs / 'var/lib/dpkg'}"
    return run(["dpkg-query", admindir, "-W", "-f=${Version}", package], check=False).stdout.strip()


def rebuilt_libssl(rootfs: Path, work: Path) -> tuple[Path, str, str]:
    """The libssl .deb the template at rootfs has (from the build's .deb cache) with a newer version and
    touched files: what a security fix looks like. Returns (the .deb, the old version, the new one)."""
    template = load_config({})
    version = installed_version(rootfs, LIBSSL)
    cached = template.cache_dir / template.suite / f"{LIBSSL}_{version.split(':')[-1]}_amd64.deb"
    if not version or not cached.exists():
        raise VrpipeError(f"the template's {LIBSSL} {version or '(not installed)'} is not in the .deb cache "
                          f"{cached.parent}", hint="invoke build-template")  # fmt: skip
    tree = work / "libssl"
    run(["dpkg-deb", "-R", cached, tree])
    control = tree / "DEBIAN" / "control"
    fixed = f"{version}+hse1"
    control.write_text(control.read_text().replace(f"\nVersion: {version}\n", f"\nVersion: {fixed}\n"))
    for library in (tree / "usr/lib/x86_64-linux-gnu").glob("lib*.so.*"):
        os.utime(library)  # new mtimes in the archive: different bytes for the same library
    deb = work / f"{LIBSSL}_{fixed}_amd64.deb"
    run(["dpkg-deb", "-b", tree, deb])
    shutil.rmtree(tree)
    return deb, version, fixed


def publish_into(config: RepoConfig, deb: Path, channel: str = "security") -> None:
    """Put one .deb into a channel of the repository, signed and served like every publish."""
    with publish.locked(config):
        archive = publish.archive_keys(config)
        repo = publish.prepare(config, archive)
        repo.includedeb(channel, deb)
        publish.export_and_serve(config, repo, archive, [channel])


def old_library_processes(manager: Manager, name: str) -> list[dict[str, object]]:
    """The processes on the router that still map a replaced libssl or libcrypto (vr-restart-stale --dry-run)."""
    status, out = manager.transport(name).execute([contract.command("vr-restart-stale"), "--dry-run"])
    if status != 0:
        raise VrpipeError(f"{name}: vr-restart-stale --dry-run exited with {status}: {out.strip()[:200]}")
    stale = json.loads(out)["still_old"]
    return [p for p in stale if any(lib in f for f in p["files"] for lib in OLD_LIBRARIES)]
