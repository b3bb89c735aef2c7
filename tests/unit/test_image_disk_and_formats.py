"""Pure logic of the disk images: the partition plan and its fixed identifiers, the VHD footer and VMDK
descriptor patches that make qemu-img's output reproducible, the step log."""

import struct

import pytest

from image import disk, formats
from image.config import load_config
from vrpipe.log import StepFailed, Steps


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


def test_vmdk_cid_is_replaced_in_place():
    head = b"# Disk DescriptorFile\nversion=1\nCID=1a2b3c4d\nparentCID=ffffffff\n" + bytes(100)
    patched = formats.fixed_vmdk_descriptor(head, 1700000000)
    assert len(patched) == len(head) and b"CID=1a2b3c4d" not in patched
    assert patched == formats.fixed_vmdk_descriptor(head.replace(b"1a2b3c4d", b"99999999"), 1700000000)
    with pytest.raises(ValueError, match="CID"):
        formats.fixed_vmdk_descriptor(b"no descriptor here", 1)


def test_a_failing_step_names_itself_and_its_cause():
    steps = Steps("job", total=2)
    with steps.step("first"):
        pass
    with pytest.raises(StepFailed, match="step 'second' failed: boom"), steps.step("second"):
        raise OSError("boom")
    assert list(steps.times) == ["first"]
    assert steps.summary("done").startswith("job: done in ")
