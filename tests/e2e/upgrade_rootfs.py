"""The router rootfs the upgrade tests boot: the orchestration tests' development rootfs with vr-base and
vr-scripts installed through apt from a repository signed by a test archive key that is kept beside it
(so that routers trust the repositories the tests publish). Made once per engine and packaging sources,
cached under build/cache (git-ignored); apt fetches vr-base's Debian dependencies from Debian's mirror.
"""

import hashlib
import shutil

from orchestration.upgrade import ROUTER_KEYRING
from repo.packages import engine_version
from repo.publish import publish
from repo.serve import serving

from .apt_client import run
from .orch_rootfs import DEV_ROOTFS, PROJECT, _debootstrap, _install_engine
from .repo_fixtures import throwaway_config

CACHE = PROJECT / "build" / "cache"
SOURCES = "etc/apt/sources.list.d/vr-test.sources"
BASE_VERSION = engine_version()


def _digest():
    digest = hashlib.sha256(BASE_VERSION.encode())
    for part in ("vr_scripts", "repo"):
        for path in sorted((PROJECT / part).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def signed_repo_config(where, key_home):
    """A throw-away repository under `where`, signed by a private copy of the test archive key."""
    config = throwaway_config(where)
    shutil.copytree(key_home, config.gnupghome, ignore=shutil.ignore_patterns("S.*"))
    return config


def upgrade_rootfs(work):
    """(rootfs, archive key home): the cached rootfs with our packages at BASE_VERSION installed by dpkg,
    made now if missing, and the GNUPGHOME of the key its apt trusts."""
    root = CACHE / f"upgrade-rootfs-{_digest()}"
    key_home = root.with_name(root.name + ".gnupg")
    if (root / "var/lib/dpkg/info/vr-scripts.list").exists() and key_home.exists():
        return root, key_home
    for stale in CACHE.glob("upgrade-rootfs-*"):
        shutil.rmtree(stale)
    if not (DEV_ROOTFS / "usr/sbin/sshd").exists():
        _debootstrap(DEV_ROOTFS)
    partial = root.with_name(root.name + ".partial")
    run(["cp", "-a", DEV_ROOTFS, partial])
    _install_engine(partial)  # sshd on the control port, host keys per router, vr-boot enabled
    config = throwaway_config(work)
    publish(config, version=BASE_VERSION)  # makes the development key in config.gnupghome
    _apt_install(partial, config)
    shutil.copytree(config.gnupghome, key_home, ignore=shutil.ignore_patterns("S.*"))
    partial.rename(root)
    return root, key_home


def _apt_install(root, config):
    keyring = root / ROUTER_KEYRING.lstrip("/")
    keyring.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config.keyring, keyring)
    run(["mount", "-t", "proc", "proc", root / "proc"])
    try:
        with serving(config.public) as url:
            (root / SOURCES).write_text(
                f"Types: deb\nURIs: {url}\nSuites: stable\nComponents: main\nSigned-By: {ROUTER_KEYRING}\n"
            )
            run(["chroot", root, "apt-get", "update", "-q"])
            env = ["env", "DEBIAN_FRONTEND=noninteractive"]
            run(["chroot", root, *env, "apt-get", "install", "-y", "-q", "--no-install-recommends", "vr-scripts"])
    finally:
        run(["umount", root / "proc"])
        (root / SOURCES).unlink(missing_ok=True)
        for index in (root / "var/lib/apt/lists").glob("*_dists_*"):
            index.unlink()
