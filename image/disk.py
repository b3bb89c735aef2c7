"""The partitioned raw disk image, made without loop devices or mounts so two builds give the same bytes:
a GPT with a FAT boot partition (ESP, also LegacyBIOSBootable) holding the kernel, syslinux for BIOS (behind
syslinux's gptmbr.bin) and GRUB's BOOTX64.EFI for UEFI, and an ext4 root filled from the rootfs directory.
"""

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from vrpipe.run import run

from .config import TemplateConfig
from .render import render
from .router import ESP_LABEL

SECTOR = 512
MIB = 1024 * 1024
GPT_BACKUP_SECTORS = 33  # the backup partition table at the end of the disk
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
GRUB_MODULES = ("part_gpt", "fat", "normal", "configfile", "linux", "echo", "serial", "terminal", "efi_gop",
                "loadenv", "test")  # the last two: a new kernel's one trial boot (grub.cfg.j2)
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64), discoverable partitions spec
# panic=10: a kernel that fails to come up reboots, into the known good one after a trial (vr-kernel)
KERNEL_ARGS = "rw console=tty0 console=ttyS0,115200 net.ifnames=0 quiet panic=10"
GRUBENV_SIZE = 1024


@dataclass(frozen=True)
class Partition:
    name: str
    start: int  # sectors
    size: int  # sectors

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def bytes(self) -> int:
        return self.size * SECTOR


@dataclass(frozen=True)
class DiskLayout:
    sectors: int
    esp: Partition
    root: Partition
    # Fixed identifiers, derived from SOURCE_DATE_EPOCH: same build inputs, same disk.
    disk_id: uuid.UUID
    esp_id: uuid.UUID
    root_id: uuid.UUID
    root_fs_id: uuid.UUID

    @property
    def kernel_cmdline(self) -> str:
        return f"root=UUID={self.root_fs_id} {KERNEL_ARGS}"


def plan(config: TemplateConfig) -> DiskLayout:
    """Partitions aligned to 1 MiB; the root ends 1 MiB before the disk's end, clear of the backup GPT."""
    per_mib = MIB // SECTOR
    sectors = config.disk_size_mib * per_mib
    esp = Partition("esp", per_mib, config.esp_size_mib * per_mib)
    root_start = esp.start + esp.size
    root = Partition("root", root_start, sectors - per_mib - root_start)
    assert root.start + root.size <= sectors - GPT_BACKUP_SECTORS - 1

    def ident(name):
        return uuid.uuid5(uuid.NAMESPACE_URL, f"vrpipe:template:{config.source_date_epoch}:{name}")

    return DiskLayout(sectors, esp, root, ident("disk"), ident("esp"), ident("root"), ident("root-fs"))


def make_esp(layout: DiskLayout, kernel: Path, initrd: Path, image: Path, work: Path, epoch: int) -> None:
    """The FAT boot partition: kernel, initrd, syslinux (BIOS) and GRUB (UEFI), times from the epoch in UTC."""
    # mtools and mkfs.vfat turn SOURCE_DATE_EPOCH into FAT's local-time stamps: pin the zone.
    env = {"SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}
    image.unlink(missing_ok=True)
    # -h: syslinux's boot sector finds its partition through the hidden-sectors count.
    run(["mkfs.vfat", "-C", "-F", "32", "--invariant", "-n", ESP_LABEL, "-h", layout.esp.start,
         image, layout.esp.bytes // 1024], env=env)
    grub_cfg, syslinux_cfg, bootx64 = work / "grub.cfg", work / "syslinux.cfg", work / "BOOTX64.EFI"
    grubenv = work / "grubenv"
    grub_cfg.write_text(render("grub.cfg.j2", cmdline=layout.kernel_cmdline))
    block = "# GRUB Environment Block\nvr_trial=0\n"
    grubenv.write_text(block + "#" * (GRUBENV_SIZE - len(block)))
    syslinux_cfg.write_text(render("syslinux.cfg.j2", cmdline=layout.kernel_cmdline))
    run(["grub-mkimage", "--format=x86_64-efi", "--prefix=/EFI/BOOT", f"--output={bootx64}", *GRUB_MODULES],
        env=env)
    for folder in ("::/EFI", "::/EFI/BOOT", "::/syslinux"):
        run(["mmd", "-i", image, folder], env=env)
    copies = {kernel: "::/vmlinuz", initrd: "::/initrd.img", bootx64: "::/EFI/BOOT/BOOTX64.EFI",
              grub_cfg: "::/EFI/BOOT/grub.cfg", grubenv: "::/EFI/BOOT/grubenv",
              syslinux_cfg: "::/syslinux/syslinux.cfg"}
    for source, dest in copies.items():
        run(["mcopy", "-i", image, source, dest], env=env)
    run(["syslinux", "--install", "--directory", "/syslinux", image], env=env)


def make_root_fs(layout: DiskLayout, rootdir: Path, image: Path, epoch: int) -> None:
    """ext4 filled from rootdir with fixed UUID, hash seed and creation times; then every inode's ctime
    and atime (which mkfs copies from the build machine's files) set to the epoch."""
    image.unlink(missing_ok=True)
    fs_id = str(layout.root_fs_id)
    run(["mkfs.ext4", "-q", "-L", "root", "-U", fs_id, "-E", f"hash_seed={fs_id},root_owner=0:0",
         "-d", rootdir, image, f"{layout.root.bytes // 1024}k"],
        env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    commands = image.with_suffix(".debugfs")
    commands.write_text("".join(_time_commands(rootdir, epoch)))
    run(["debugfs", "-w", "-f", commands, image], env={"E2FSPROGS_FAKE_TIME": str(epoch)})


def _time_commands(rootdir: Path, epoch: int):
    for path in sorted(rootdir.rglob("*")):
        name = "/" + str(path.relative_to(rootdir))
        if '"' in name or "\n" in name:
            raise ValueError(f"{path}: debugfs cannot name a file with a quote or newline")
        for field in ("ctime", "atime"):
            yield f'set_inode_field "{name}" {field} @{epoch}\n'
    for field in ("ctime", "atime"):
        yield f"set_inode_field / {field} @{epoch}\n"


def assemble(layout: DiskLayout, esp: Path, root: Path, disk: Path) -> None:
    """Partition table by sfdisk, syslinux's GPT MBR code, then both filesystems at their offsets."""
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(layout.sectors * SECTOR)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", disk],
        input=render("partitions.sfdisk.j2", layout=layout, esp_type=ESP_TYPE, root_type=ROOT_TYPE))
    with disk.open("r+b") as f:
        f.write(GPTMBR.read_bytes()[:440])
    _copy_sparse(esp, disk, layout.esp)
    _copy_sparse(root, disk, layout.root)


def _copy_sparse(source: Path, disk: Path, partition: Partition) -> None:
    """Copy only the data regions of source into disk at the partition's offset: the disk stays sparse."""
    size = source.stat().st_size
    if size > partition.bytes:
        raise ValueError(f"{source} ({size} bytes) does not fit partition {partition.name}")
    with source.open("rb") as src, disk.open("r+b") as dst:
        position = 0
        while position < size:
            try:
                start = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(partition.offset + start)
            for at in range(start, end, MIB):
                dst.write(src.read(min(MIB, end - at)))
            position = end
