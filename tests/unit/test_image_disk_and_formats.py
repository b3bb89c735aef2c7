"""Pure logic of the disk images: the partition plan and its fixed identifiers, the VHD footer and VMDK
descriptor patches that make qemu-img's output reproducible (also checked on real qemu-img output), the step log."""

import struct

import pytest

from image import disk, formats
from image.config import load_config
from image.formats import MIB
from vrpipe.log import StepFailed, Steps
from vrpipe.run import run


def plan(**values):
    return disk.plan(load_config(values, source_date_epoch=1700000000))


def test_partitions_are_aligned_and_clear_of_the_backup_table():
    layout = plan()
    per_mib = 2048
    assert layout.sectors == 2048 * per_mib
    assert layout.esp.start == per_mib and layout.esp.size == 160 * per_mib
    assert layout.root.start == layout.esp.start + layout.esp.size
    assert layout.root.start % per_mib == 0 and layout.root.size % per_mib == 0
    assert layout.root.start + layout.root.size <= layout.sectors - disk.GPT_BACKUP_SECTORS - 1


def test_identifiers_follow_the_epoch_only():
    assert plan() == plan()
    other = disk.plan(load_config({}, source_date_epoch=1700000001))
    assert other.root_fs_id != plan().root_fs_id
    assert len({plan().disk_id, plan().esp_id, plan().root_id, plan().root_fs_id}) == 4
    assert f"root=UUID={plan().root_fs_id} " in plan().kernel_cmdline


def footer(timestamp=123, unique=b"\x11" * 16):
    raw = bytearray(512)
    raw[:8] = b"conectix"
    raw[24:28] = struct.pack(">I", timestamp)
    raw[68:84] = unique
    raw[64:68] = struct.pack(">I", ~sum(raw) & 0xFFFFFFFF)
    return bytes(raw)


def test_vhd_footer_gets_the_epoch_a_derived_id_and_a_valid_checksum():
    first = formats.fixed_vhd_footer(footer(), 1700000000)
    second = formats.fixed_vhd_footer(footer(timestamp=999, unique=b"\x22" * 16), 1700000000)
    assert first == second
    assert struct.unpack(">I", first[24:28])[0] == 1700000000 - formats.VHD_EPOCH
    checksum = struct.unpack(">I", first[64:68])[0]
    assert checksum == ~sum(first[:64] + bytes(4) + first[68:]) & 0xFFFFFFFF


def test_something_else_than_a_vhd_footer_is_refused():
    with pytest.raises(ValueError, match="conectix"):
        formats.fixed_vhd_footer(bytes(512), 1)


def descriptor_area(cid: str, size: int = 20 * 512) -> bytes:
    text = f"# Disk DescriptorFile\nversion=1\nCID={cid}\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n"
    return text.encode().ljust(size, b"\0")


@pytest.mark.parametrize("cid", ["1a2b3c4d", "a2b3c4d", "2b3c", "0"])
def test_vmdk_cid_of_any_length_becomes_the_same_derived_one(cid):
    """qemu-img prints its random CID without leading zeros (about 1 conversion in 16 has fewer digits)."""
    patched = formats.fixed_vmdk_descriptor(descriptor_area(cid), 1700000000)
    assert patched == formats.fixed_vmdk_descriptor(descriptor_area("99999999"), 1700000000)
    assert len(patched) == 20 * 512 and f"\nCID={cid}\n".encode() not in patched
    assert b"\nparentCID=ffffffff\n" in patched


def test_vmdk_without_a_cid_or_room_is_refused():
    with pytest.raises(ValueError, match="CID"):
        formats.fixed_vmdk_descriptor(b"no descriptor here".ljust(512, b"\0"), 1)
    with pytest.raises(ValueError, match="does not fit"):
        formats.fixed_vmdk_descriptor(descriptor_area("1", size=85), 1)
    with pytest.raises(ValueError, match="KDMV"):
        formats.vmdk_descriptor_area(bytes(formats.VMDK_HEADER.size))


def test_real_qemu_img_vmdk_conversions_all_give_the_same_bytes(tmp_path):
    """Many conversions of one small raw disk, so some draw a short CID; all must patch to one result
    that qemu-img still reads as the same disk."""
    raw = tmp_path / "small.raw"
    raw.write_bytes(b"vrpipe".ljust(MIB, b"\1"))
    digests = set()
    for _ in range(48):
        out = tmp_path / "small.vmdk"
        formats.vmdk(raw, out, 1700000000)
        digests.add(formats.sha256(out))
    assert len(digests) == 1
    run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", raw, out])


def test_a_failing_step_names_itself_and_its_cause():
    steps = Steps("job", total=2)
    with steps.step("first"):
        pass
    with pytest.raises(StepFailed, match="step 'second' failed: boom"), steps.step("second"):
        raise OSError("boom")
    assert list(steps.times) == ["first"]
    assert steps.summary("done").startswith("job: done in ")


def test_boot_partition_bytes_do_not_depend_on_the_time_zone(tmp_path, monkeypatch):
    """mtools stamps FAT entries in local time; the build's TZ must not show in the image."""
    layout = plan(esp_size_mib=64)
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"kernel" * 1000)
    initrd.write_bytes(b"initrd" * 1000)
    digests = []
    for zone in ("UTC", "NPT-5:45", "America/St_Johns"):
        monkeypatch.setenv("TZ", zone)
        work = tmp_path / zone.replace("/", "-")
        work.mkdir()
        disk.make_esp(layout, kernel, initrd, work / "esp.img", work, 1700000000)
        digests.append(formats.sha256(work / "esp.img"))
    assert len(set(digests)) == 1
