"""Builds the router's Debian packages from vr_scripts/: `vr-scripts` (the engine, launchers, units) and
the `vr-base` metapackage (the router's Debian package set). Control files are written with
python-debian; builds are reproducible (SOURCE_DATE_EPOCH, normalised modes and times, root-owned).
"""

import gzip
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from debian.deb822 import Deb822
from vr import contract

from vrpipe.errors import VrpipeError, shown
from vrpipe.log import step
from vrpipe.run import run

from .render import PROJECT, SOURCES, render

VERSION_FILE = SOURCES / "vr" / "__init__.py"
VERSION_LINE = re.compile(r'^__version__ = "([^"]*)"$', re.MULTILINE)
DEBIAN_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+~]*$")
MAINTAINER = "vrpipe maintainers <maintainers@vrpipe.example.org>"
# What every router needs from Debian; apt brings a new entry here to live routers with vr-base.
VR_BASE_DEPENDS = (
    "ca-certificates",
    "conntrack",
    "conntrackd",  # redundant pairs: connection table sync (vr/redundancy.py)
    "dnsmasq",
    "haproxy",
    "charon-systemd",  # strongSwan's IKE daemon (vr.vpn); Debian's unit is strongswan.service
    "iproute2",
    "keepalived",  # redundant pairs: VRRP
    "libcharon-extauth-plugins",  # eap-mschapv2, for remote-access users
    "libcharon-extra-plugins",  # kernel-libipsec, for routers without the kernel's ESP (containers)
    "logrotate",
    "nftables",
    "openssh-server",
    "python3",
    "python3-jinja2",
    "python3-prometheus-client",  # vr-metrics
    "strongswan-swanctl",
)


KEYRING_PACKAGE = contract.KEYRING_PACKAGE
ROUTER_KEYRING = Path(contract.ARCHIVE_KEYRING)  # the file the router's apt source names in Signed-By
PACKAGED_KEYRING = Path(contract.PACKAGED_KEYRING)


@dataclass(frozen=True)
class Build:
    """What one build of the packages is made from."""

    version: str
    epoch: int  # SOURCE_DATE_EPOCH: every timestamp in the packages
    out_dir: Path


def engine_version() -> str:
    """The one version string of our packages, kept in vr_scripts/vr/__init__.py."""
    found = VERSION_LINE.search(VERSION_FILE.read_text())
    if not found:
        raise VrpipeError(f'{VERSION_FILE} has no line __version__ = "..."')
    return found.group(1)


def check_version(version: str) -> str:
    """Refuse a version dpkg would not accept (or that would make a non-native package)."""
    if not DEBIAN_VERSION.match(version):
        raise VrpipeError(f"version {shown(version)} is not a Debian version like 1.2.3 (digits first, no '-' or ':')")
    return version


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH from the environment, else the time of the last git commit."""
    value = (
        os.environ.get("SOURCE_DATE_EPOCH")
        or run(["git", "-C", PROJECT, "log", "-1", "--format=%ct"]).stdout.strip()
    )
    if not value.isdigit():
        raise VrpipeError(f"SOURCE_DATE_EPOCH must be seconds since 1970, not {shown(value)}")
    return int(value)


def build_packages(out_dir: Path, version: str | None = None) -> list[Path]:
    """Build vr-base and vr-scripts into out_dir; version defaults to the engine's own."""
    build = Build(check_version(version or engine_version()), source_date_epoch(), out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with step(f"build packages {build.version}"), tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        return [
            _build_vr_base(build, Path(tmp) / "vr-base"),
            _build_vr_scripts(build, Path(tmp) / "vr-scripts"),
        ]


def build_keyring_package(out_dir: Path, keyring: bytes, version: int, epoch: int) -> Path:
    """Build vr-archive-keyring: the archive's public keys, which routers trust through ROUTER_KEYRING.
    Its version counts the key changes (repo/keys.py), so a rotation reaches routers as an upgrade."""
    build = Build(str(version), epoch, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with step(f"build {KEYRING_PACKAGE} {version}"), tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        root = Path(tmp) / KEYRING_PACKAGE
        _write(root / PACKAGED_KEYRING.relative_to("/"), keyring)
        # A symlink, not a conffile: an upgrade must replace the keys, never ask whether to keep the old.
        link = root / ROUTER_KEYRING.relative_to("/")
        link.parent.mkdir(parents=True)
        link.symlink_to(Path("../../..") / PACKAGED_KEYRING.relative_to("/"))
        _write_docs(build, root, KEYRING_PACKAGE)
        _write(root / "usr/share/lintian/overrides" / KEYRING_PACKAGE, render("lintian-overrides-keyring.j2"))
        control = _control(
            build,
            root,
            KEYRING_PACKAGE,
            depends="",
            description="public keys of the vrpipe archive\n"
            " The keys apt trusts for the vrpipe repository (Signed-By in the router's\n"
            " apt source). During a key rotation it holds the old and the new key.",
        )
        return _dpkg_deb(build, root, control, scripts={})


def _build_vr_base(build: Build, root: Path) -> Path:
    _write_docs(build, root, "vr-base")
    control = _control(
        build,
        root,
        "vr-base",
        depends=", ".join((*VR_BASE_DEPENDS, KEYRING_PACKAGE)),
        description="Debian packages every virtual router needs\n"
        " Depends on the router's Debian package set (nftables, dnsmasq, haproxy,\n"
        " ssh, python3, ...), so a package added here reaches live routers with\n"
        " their next upgrade.",
    )
    return _dpkg_deb(build, root, control, scripts={})


def _build_vr_scripts(build: Build, root: Path) -> Path:
    _copy_tree(SOURCES / "bin", root / "opt/vr/bin")
    _copy_tree(SOURCES / "vr", root / "opt/vr/lib/vr")
    _stamp_version(root / "opt/vr/lib/vr/__init__.py", build.version)
    _copy_tree(SOURCES / "systemd", root / "usr/lib/systemd/system")
    _copy_tree(SOURCES / "logrotate", root / "etc/logrotate.d")
    _write_docs(build, root, "vr-scripts")
    _write(root / "usr/share/lintian/overrides/vr-scripts", render("lintian-overrides.j2"))
    control = _control(
        build,
        root,
        "vr-scripts",
        depends=f"vr-base (>= {build.version}), python3, python3-jinja2",
        description="virtual router configuration engine and commands\n"
        " The engine that turns one JSON document into the router's nftables,\n"
        " dnsmasq, haproxy and metadata state, the router commands in /opt/vr/bin\n"
        " and their systemd units. On upgrade it re-applies the persisted state\n"
        " without dropping traffic.",
    )
    units = systemd_units(root / "usr/lib/systemd/system")
    scripts = {name: render(f"{name}.j2", units=units) for name in ("postinst", "prerm", "postrm")}
    return _dpkg_deb(build, root, control, scripts)


@dataclass(frozen=True)
class Unit:
    """One packaged systemd unit and what the maintainer scripts do with it."""

    name: str
    enable: bool  # has an [Install] section
    restart: bool  # a long-running service: restarted on upgrade when running


def systemd_units(unit_dir: Path) -> list[Unit]:
    """The units in unit_dir: enabled if they have an [Install] section, restarted unless oneshot."""
    units = []
    for path in sorted(unit_dir.glob("*")) if unit_dir.is_dir() else []:
        text = path.read_text()
        oneshot = re.search(r"^Type=oneshot\s*$", text, re.MULTILINE) is not None
        units.append(Unit(path.name, "[Install]" in text, path.suffix == ".service" and not oneshot))
    return units


def _copy_tree(source: Path, dest: Path) -> None:
    """Copy a source folder (if it exists yet) without Python's byte-code caches."""
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _stamp_version(init_py: Path, version: str) -> None:
    """Make the packaged engine report the package's version, also when it was overridden."""
    init_py.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', init_py.read_text(), count=1))


def _write_docs(build: Build, root: Path, name: str) -> None:
    doc = root / "usr/share/doc" / name
    date = datetime.fromtimestamp(build.epoch, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    changelog = render("changelog.j2", package=name, version=build.version, maintainer=MAINTAINER, date=date)
    _write(doc / "changelog.gz", gzip.compress(changelog.encode(), mtime=0))
    _write(doc / "copyright", render("copyright.j2"))


def _control(build: Build, root: Path, name: str, depends: str, description: str) -> Deb822:
    control = Deb822()
    control["Package"] = name
    control["Version"] = build.version
    control["Architecture"] = "all"
    control["Maintainer"] = MAINTAINER
    control["Section"] = "admin"
    control["Priority"] = "optional"
    control["Installed-Size"] = str(_installed_size_kib(root))
    if depends:
        control["Depends"] = depends
    control["Description"] = description
    return control


def _dpkg_deb(build: Build, root: Path, control: Deb822, scripts: dict[str, str]) -> Path:
    """Write DEBIAN/, normalise the tree, and build it into out_dir with dpkg-deb."""
    debian = root / "DEBIAN"
    _write(debian / "control", control.dump())
    etc = (root / "etc").rglob("*")
    conffiles = sorted("/" + str(p.relative_to(root)) for p in etc if p.is_file() and not p.is_symlink())
    if conffiles:
        _write(debian / "conffiles", "".join(f"{c}\n" for c in conffiles))
    for name, text in scripts.items():
        _write(debian / name, text, mode=0o755)
    _normalise(root, build.epoch)
    deb = build.out_dir / f"{control['Package']}_{build.version}_all.deb"
    run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb],
        env={"SOURCE_DATE_EPOCH": str(build.epoch)},
    )
    return deb


def _installed_size_kib(root: Path) -> int:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(math.ceil(p.stat().st_size / 1024) for p in files) or 1


def _normalise(root: Path, epoch: int) -> None:
    """Same modes and times on every build, whatever the checkout's umask and clock said."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def _write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
