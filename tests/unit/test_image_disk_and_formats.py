"""Pure logic of the disk images: the partition plan and its fixed identifiers, the VHD footer patch that makes
qemu-img's output reproducible, our streamOptimized VMDK (checked by qemu-img) and its grain cache, the step log."""

import struct
import zlib

import pytest

from image import disk, formats, vmdk
from image.config import load_config
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


def small_raw(path, grains=40):
    """A disk of `grains` 64 KiB grains: some with data (two alike), the rest zeros."""
    data = bytearray(grains * vmdk.GRAIN)
    for n, fill in ((0, b"boot"), (3, b"same"), (7, b"same"), (grains - 1, bytes(range(256)))):
        data[n * vmdk.GRAIN:(n + 1) * vmdk.GRAIN] = (fill * vmdk.GRAIN)[: vmdk.GRAIN]
    path.write_bytes(bytes(data))
    return path


def test_our_vmdk_is_what_qemu_img_reads_as_the_raw_disk(tmp_path):
    raw = small_raw(tmp_path / "small.raw")
    out = tmp_path / "small.vmdk"
    vmdk.write(raw, out, 1700000000, tmp_path / "grains")
    run(["qemu-img", "check", "-f", "vmdk", out])
    run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", raw, out])
    assert "create type: streamOptimized" in run(["qemu-img", "info", out]).stdout
    assert out.stat().st_size < raw.stat().st_size // 4  # zero grains are not stored, the others compressed


def test_the_last_builds_grains_give_the_same_bytes_and_a_damaged_cache_is_not_trusted(tmp_path, caplog):
    raw, grains = small_raw(tmp_path / "small.raw"), tmp_path / "grains"
    first, second, third = (tmp_path / n / "disk.vmdk" for n in ("1", "2", "3"))
    for out in (first, second, third):
        out.parent.mkdir()
    caplog.set_level("INFO", logger="image")
    vmdk.write(raw, first, 1700000000, grains)
    assert "vmdk: 0 of 4 grains with data taken from the last build's" in caplog.text
    vmdk.write(raw, second, 1700000000, grains)
    assert "vmdk: 4 of 4 grains with data taken from the last build's" in caplog.text
    assert second.read_bytes() == first.read_bytes()
    (pack,) = grains.glob("grains-*.vmdk")
    pack.unlink()
    pack.write_bytes(bytes(first.stat().st_size))  # the cached grains all zeros now: none may be used
    vmdk.write(raw, third, 1700000000, grains)
    assert third.read_bytes() == first.read_bytes()
    assert len(list(grains.glob("grains-*.vmdk"))) == 1


@pytest.mark.parametrize("index", [
    '{"zlib": "%s", "level": 6, "pack": "../../etc/passwd", "grains": {}}',
    '{"zlib": "%s", "level": 6, "pack": "grains-0123456789abcdef.vmdk", "grains": {"x": [0, 99999999999]}}',
    '{"zlib": "%s", "level": 6, "pack": "grains-0123456789abcdef.vmdk", "grains": ["not", "a", "map"]}',
    '{"zlib": "%s", "level": "6"}',
    "\u00ff\u0000 not json",
])
def test_a_cache_index_of_any_shape_gives_the_same_bytes(tmp_path, index):
    raw, grains = small_raw(tmp_path / "small.raw"), tmp_path / "grains"
    (tmp_path / "1").mkdir()
    vmdk.write(raw, tmp_path / "1/disk.vmdk", 1700000000, grains)
    (grains / "index.json").write_text(index.replace("%s", zlib.ZLIB_RUNTIME_VERSION))
    vmdk.write(raw, tmp_path / "disk.vmdk", 1700000000, grains)
    assert (tmp_path / "disk.vmdk").read_bytes() == (tmp_path / "1/disk.vmdk").read_bytes()


def test_the_vmdk_content_id_is_derived_from_the_epoch():
    one, other = vmdk.descriptor_text(4194304, "d.vmdk", 1), vmdk.descriptor_text(4194304, "d.vmdk", 2)
    assert one == vmdk.descriptor_text(4194304, "d.vmdk", 1) and one != other
    (cid,) = [line[4:] for line in one.splitlines() if line.startswith("CID=")]
    assert len(cid) == 8 and int(cid, 16) >= 0
    assert 'RW 4194304 SPARSE "d.vmdk"' in one and 'ddb.geometry.cylinders = "4161"' in one


def test_a_disk_of_part_of_a_grain_is_refused(tmp_path):
    raw = tmp_path / "odd.raw"
    raw.write_bytes(bytes(vmdk.GRAIN + 512))
    with pytest.raises(ValueError, match="whole number of 64 KiB grains"):
        vmdk.write(raw, tmp_path / "odd.vmdk", 1, tmp_path / "grains")


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
