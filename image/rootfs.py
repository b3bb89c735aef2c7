"""The router's root filesystem: mmdebstrap installs Debian minbase, the kernel and our packages (taken from
our signed repository, served on loopback during the build) into a directory, reusing the .debs of the
previous build; `pack()` makes the reproducible rootfs tarball from that directory.
"""

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vr import contract

from vrpipe.run import run

from .config import TemplateConfig
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
# SATA/IDE, VMware's SCSI, Hyper-V, Xen, NVMe): MODULES=list instead of Debian's MODULES=most. Their NIC
# drivers too: loaded in the initrd, eth0-2 exist before vr-boot runs (loaded later by udev, a busy TCG
# boot once reached vr-boot without eth0).
INITRD_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ata_piix", "ata_generic", "vmw_pvscsi",
    "mptspi", "hv_vmbus", "hv_storvsc", "xen_blkfront", "nvme", "ext4", "crc32c_generic",
    "virtio_net", "e1000", "e1000e", "vmxnet3", "hv_netvsc", "xen_netfront",
)
ARCHIVES = Path("var/cache/apt/archives")


@dataclass(frozen=True)
class BuildRepo:
    """Our signed repository as this build reaches it: served on loopback while mmdebstrap runs."""

    url: str
    suite: str
    keyring: Path  # binary OpenPGP public keyring, as apt's Signed-By reads it


def install(config: TemplateConfig, repo: BuildRepo, root: Path, work: Path) -> None:
    """mmdebstrap the router's packages into the empty directory root, warm .deb cache in and out."""
    cache = config.cache_dir / config.suite  # per suite: a bookworm build keeps trixie's .debs
    _cache_in(cache, root / ARCHIVES)
    sources = work / "build.sources"
    sources.write_text(render("build.sources.j2", config=config, repo=repo, inline_key=_inline_key(repo.keyring)))
    before_kernel = _initramfs_settings(work / "before-kernel")
    run(
        [
            "mmdebstrap",
            "--mode=root",
            "--format=directory",
            "--variant=minbase",
            f"--include={','.join(BOOT_PACKAGES + OUR_PACKAGES)}",
            # the primed cache makes root non-empty; keep the .debs until they are saved
            "--skip=check/empty,essential/unlink,cleanup/apt/cache",
            # after the essential packages, before the kernel (whose installation makes the initrd)
            f"--essential-hook=sync-in {before_kernel} /",
            *(f"--dpkgopt={f}" for f in DPKG_FILTERS),
            config.suite,
            root,
            sources,
        ],
        env={"SOURCE_DATE_EPOCH": str(config.source_date_epoch)},
        stream=True,
        timeout=1800,
    )
    _cache_out(root / ARCHIVES, cache)


def _initramfs_settings(tree: Path) -> Path:
    """A folder tree of initramfs-tools settings to copy into the rootfs: MODULES=list and the list."""
    write_file(tree / "etc/initramfs-tools/conf.d/vr-modules.conf", render("initramfs-modules.conf.j2"))
    write_file(tree / "usr/share/initramfs-tools/modules.d/vr-router", "\n".join(INITRD_MODULES) + "\n")
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


def _cache_in(cache: Path, archives: Path) -> None:
    """Hard-link the last build's .debs where apt looks first, so it downloads only what changed
    (copied when the rootfs is staged on another filesystem, such as a tmpfs)."""
    make_dirs(archives / "partial")
    for deb in sorted(cache.glob("*.deb")) if cache.is_dir() else []:
        try:
            os.link(deb, archives / deb.name)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.copyfile(deb, archives / deb.name)


def _cache_out(archives: Path, cache: Path) -> None:
    """Keep exactly this build's .debs for the next one, and leave no package file in the rootfs."""
    fresh = cache.with_name(cache.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    make_dirs(fresh)
    for deb in archives.glob("*.deb"):
        shutil.move(deb, fresh / deb.name)
    shutil.rmtree(cache, ignore_errors=True)
    fresh.rename(cache)
    shutil.rmtree(archives / "partial", ignore_errors=True)
    make_dirs(archives / "partial")
    (archives / "lock").unlink(missing_ok=True)


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
