"""The router's root filesystem: mmdebstrap installs Debian minbase, the kernel and our packages (taken from
our signed repository, served on loopback during the build) into a directory, reusing the .debs of the
previous build; `pack()` makes the reproducible rootfs tarball from that directory.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vr import contract

from vrpipe.run import run

from . import debs
from .paths import make_dirs, write_file
from .render import render

# What the router needs beyond what vr-base depends on: a kernel that boots it and an init; extlinux sets
# syslinux's boot-once for a new kernel's trial boot (files/vr-kernel).
BOOT_PACKAGES = ("linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "kmod", "netbase", "extlinux")
OUR_PACKAGES = contract.PACKAGES
# Routers carry no manuals or translations; these dpkg filters also hold for later upgrades.
DPKG_FILTERS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    # kernel modules for hardware a virtual router never has (about a third of the modules' size)
    *(f"path-exclude=/usr/lib/modules/*/kernel/{folder}/*" for folder in (
        "drivers/gpu", "sound", "drivers/media", "drivers/net/wireless", "net/wireless", "net/mac80211",
        "drivers/bluetooth", "net/bluetooth", "drivers/infiniband")),
)
# The initrd holds only what finds and mounts the root on the hypervisors the images are made for (virtio,
# SATA/IDE, VMware's SCSI, Hyper-V, Xen, NVMe) and their NIC drivers: MODULES=list instead of Debian's
# MODULES=most. A hook copies them in and udev loads those whose device is there (the NICs too, so eth0-2
# exist before vr-boot runs); listed in modules.d, every one was loaded on every boot, 8 s of a TCG boot.
INITRD_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ata_piix", "ata_generic", "vmw_pvscsi",
    "mptspi", "hv_vmbus", "hv_storvsc", "xen_blkfront", "nvme", "ext4", "crc32c_generic",
    "virtio_net", "e1000", "e1000e", "vmxnet3", "hv_netvsc", "xen_netfront",
)
# loaded whatever the hardware: the root's file system (the initrd mounts it with no udev event to load it)
INITRD_LOADED = ("ext4", "crc32c_generic")
BUILD_SOURCES = Path("/tmp/vr-build-sources")  # inside the rootfs while our packages go in
APT_OURS_ONLY = ("-oDir::Etc::SourceList=/dev/null", f"-oDir::Etc::SourceParts={BUILD_SOURCES}")


@dataclass(frozen=True)
class BuildRepo:
    """Our signed repository as this build reaches it: served on loopback while our packages go in."""

    url: str
    suite: str
    keyring: Path  # binary OpenPGP public keyring, as apt's Signed-By reads it

    def write_sources(self, folder: Path, seen_as: Path) -> None:
        write_file(folder / "ours.sources", render("build.sources.j2", repo=self, inline_key=_inline_key(self.keyring)))


@dataclass(frozen=True)
class CachedDebs:
    """Exactly these packages' .debs from the package cache, as a local repository (an offline rebuild)."""

    packages: tuple[dict, ...]
    cache: Path
    suite: str

    def write_sources(self, folder: Path, seen_as: Path) -> None:
        debs.local_repository(list(self.packages), self.cache, folder / "local", self.suite)
        write_file(folder / "local.list", debs.local_sources(seen_as / "local"))


def install_ours(root: Path, source: BuildRepo | CachedDebs, deb_cache: Path, epoch: int) -> None:
    """apt inside root (the restored base layer) installs our packages from source alone: every
    Debian package they need is in the base layer already."""
    parts = root / BUILD_SOURCES.relative_to("/")
    make_dirs(parts)
    source.write_sources(parts, BUILD_SOURCES)
    debs.prime(deb_cache, root)
    with _mounted(root), _umask(0o022):
        _chroot(root, epoch, "apt-get", *APT_OURS_ONLY, "update")
        _chroot(root, epoch, "apt-get", *APT_OURS_ONLY, "install", "--yes", "--no-install-recommends", *OUR_PACKAGES)
        # Without bytecode, every first boot of a router compiled the engine under vr-boot, vr-engine,
        # vr-metadata and vr-metrics at once (slow under TCG). Checked-hash .pyc files are the same bytes on
        # every build, and Python checks them against the source, so a later version never runs old code.
        _chroot(root, epoch, "python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                contract.LIB_DIR)
    debs.keep(root, deb_cache)
    shutil.rmtree(parts)


def _chroot(root: Path, epoch: int, *argv: str) -> None:
    # a clean environment: the build machine's locale, time zone or proxy must not reach the rootfs
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
           f"SOURCE_DATE_EPOCH={epoch}"]
    run([*env, "chroot", root, *argv], stream=True, timeout=900)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    """The umask Debian's tools expect (mmdebstrap sets it for itself): under the build machine's, apt's
    state and the engine's bytecode would get other modes (0600 under umask 0077)."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


@contextmanager
def _mounted(root: Path) -> Iterator[None]:
    """/proc and /dev in root while maintainer scripts run there."""
    mounts = ((root / "proc", ["mount", "-t", "proc", "proc"]), (root / "dev", ["mount", "--bind", "/dev"]))
    done: list[Path] = []
    try:
        for target, argv in mounts:
            run([*argv, target])
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            run(["umount", target])


def initramfs_files() -> dict[str, tuple[str, int]]:
    """The initramfs-tools settings the rootfs gets before its kernel: {path: (text, mode)}."""
    return {
        "etc/initramfs-tools/conf.d/vr-modules.conf": (render("initramfs-modules.conf.j2"), 0o644),
        "etc/initramfs-tools/hooks/vr-router": (render("initramfs-hook.sh.j2", modules=INITRD_MODULES), 0o755),
        "usr/share/initramfs-tools/modules.d/vr-router": ("\n".join(INITRD_LOADED) + "\n", 0o644),
    }


def initramfs_settings(tree: Path) -> Path:
    """A folder tree of the initramfs settings, to copy into the rootfs."""
    for path, (text, mode) in initramfs_files().items():
        write_file(tree / path, text, mode)
    return tree


def _inline_key(keyring: Path) -> str:
    """The keyring as the ASCII-armoured block a deb822 Signed-By field takes inline: every line
    indented, the blank one written as " ." (a blank line would end the stanza)."""
    with tempfile.TemporaryDirectory() as home:
        key = run(
            ["gpg", "--homedir", home, "--batch", "--no-default-keyring", "--keyring", keyring.resolve(),
             "--armor", "--export"],
        ).stdout
    if "BEGIN PGP PUBLIC KEY BLOCK" not in key:
        raise ValueError(f"{keyring} holds no public key")
    return "\n".join(f" {line or '.'}" for line in key.strip().splitlines())


def clamp_times(root: Path, epoch: int) -> None:
    """No file newer than SOURCE_DATE_EPOCH: the tarball and the ext4 image copy these times."""
    for path in [root, *root.rglob("*")]:
        if path.lstat().st_mtime > epoch:
            os.utime(path, (epoch, epoch), follow_symlinks=False)


def pack(root: Path, tarball: Path, epoch: int) -> None:
    """Write the rootfs tarball: sorted, numeric owners, times clamped, no atime/ctime, with xattrs."""
    run(
        [
            "tar", "--create", "--file", tarball, "--directory", root,
            "--sort=name", "--numeric-owner", f"--mtime=@{epoch}", "--clamp-mtime",
            "--format=pax", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--xattrs", "--xattrs-include=*",
            ".",
        ]
    )
