"""The raw disk converted per hypervisor: qcow2 (KVM), fixed VHD (Xen, Hyper-V, Azure), streamOptimized
VMDK and an OVA (VMware). qemu-img writes a clock time and a random id into the VHD; they are replaced here by
values derived from SOURCE_DATE_EPOCH and the disk, so two builds give the same bytes. The VMDK is written by vmdk.py.
"""

import hashlib
import io
import struct
import tarfile
from pathlib import Path

from vrpipe.run import run

from .render import render

MIB = 1024 * 1024
VHD_FOOTER = 512
VHD_EPOCH = 946684800  # VHD timestamps count seconds from 2000-01-01 00:00 UTC


def qcow2(raw: Path, out: Path) -> None:
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out])


def vhd(raw: Path, out: Path, epoch: int) -> None:
    """A fixed VHD whose size is a whole number of MiB (Azure refuses any other)."""
    if raw.stat().st_size % MIB:
        raise ValueError(f"{raw} is not a whole number of MiB")
    run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, out])
    with out.open("r+b") as f:
        f.seek(-VHD_FOOTER, 2)
        footer = fixed_vhd_footer(f.read(VHD_FOOTER), epoch)
        f.seek(-VHD_FOOTER, 2)
        f.write(footer)


def fixed_vhd_footer(footer: bytes, epoch: int) -> bytes:
    """The footer with its timestamp (offset 24) and unique id (68-83) derived from the epoch and the
    footer's other fields, and its checksum (64) recomputed."""
    if footer[:8] != b"conectix":
        raise ValueError("not a VHD footer (no 'conectix' cookie)")
    patched = bytearray(footer)
    patched[24:28] = struct.pack(">I", epoch - VHD_EPOCH)
    patched[64:68] = b"\0\0\0\0"
    patched[68:84] = hashlib.sha256(bytes(patched[:68]) + b"vrpipe-vhd").digest()[:16]
    patched[64:68] = struct.pack(">I", ~sum(patched) & 0xFFFFFFFF)
    return bytes(patched)


def ova(vmdk_file: Path, out: Path, epoch: int, disk_bytes: int, name: str, vmdk_sha256: str) -> None:
    """tar (ustar) of the OVF descriptor, the manifest (SHA256 lines), then the disk, in that order."""
    ovf_name = out.with_suffix(".ovf").name
    ovf = render("template.ovf.j2", name=name, vmdk=vmdk_file.name, vmdk_bytes=vmdk_file.stat().st_size,
                 capacity=disk_bytes).encode()
    mf = "".join(
        f"SHA256({member})= {digest}\n"
        for member, digest in ((ovf_name, hashlib.sha256(ovf).hexdigest()), (vmdk_file.name, vmdk_sha256))
    ).encode()
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in ((ovf_name, ovf), (out.with_suffix(".mf").name, mf)):
            tar.addfile(_member(member, len(data), epoch), io.BytesIO(data))
        with vmdk_file.open("rb") as disk:
            tar.addfile(_member(vmdk_file.name, vmdk_file.stat().st_size, epoch), disk)


def _member(name: str, size: int, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, epoch, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(4 * MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()
