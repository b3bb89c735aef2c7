"""The template build with the real tools (mmdebstrap, our signed repository, sfdisk, mkfs, syslinux, GRUB,
qemu-img, gpg): every output, its manifest and signed checksums, the router set-up of the rootfs, the disk
layout, the converted formats, and a second build in another environment giving the same bytes.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from image import manifest
from image.build import NAME, build_command
from image.disk import GPTMBR
from image.formats import sha256
from vrpipe.errors import VrpipeError
from vrpipe.run import run

from . import image_fixtures
from .image_fixtures import TEST_CACHE, repo_config, shared_template

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FORMATS = ("tar", "raw", "qcow2", "vhd", "vmdk", "ova")


@pytest.fixture(scope="module")
def template():
    return shared_template()


def test_every_output_is_listed_in_signed_checksums_that_verify(template):
    names = {line.split("  ")[1] for line in (template.folder / "SHA256SUMS").read_text().splitlines()}
    assert names == {f"{NAME}.{suffix}" for suffix in FORMATS} | {"vmlinuz", "initrd.img", "manifest.json"}
    assert manifest.verify(template.folder, repo_config().keyring) == len(names)


def test_a_tampered_output_fails_verification(template, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("SHA256SUMS", "SHA256SUMS.sign", "manifest.json", "vmlinuz", "initrd.img"):
        (copy / name).write_bytes((template.folder / name).read_bytes())
    for suffix in FORMATS:
        (copy / f"{NAME}.{suffix}").symlink_to(template.output(suffix))
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text().replace("trixie", "sid", 1))
    with pytest.raises(ValueError, match="manifest.json"):
        manifest.verify(copy, repo_config().keyring)


def test_manifest_lists_packages_our_versions_and_outputs(template):
    data = json.loads((template.folder / "manifest.json").read_text())
    packages = {p["name"]: p for p in data["packages"]}
    assert {"linux-image-amd64", "systemd-sysv", "openssh-server", "dnsmasq", "haproxy", "nftables"} <= set(packages)
    assert packages["systemd"]["architecture"] == "amd64"
    assert data["vrpipe_packages"]["vr-scripts"] == packages["vr-scripts"]["version"]
    assert data["suite"] == "trixie" and data["mirror"].startswith("http")
    outputs = {o["file"]: o for o in data["outputs"]}
    raw = outputs[f"{NAME}.raw"]
    assert raw["format"] == "raw" and raw["size"] == template.output("raw").stat().st_size
    assert outputs["vmlinuz"]["sha256"] == sha256(template.kernel)


def test_rootfs_is_set_up_as_a_router_with_nothing_per_machine(template):
    root = template.rootfs_dir
    assert "Port 3922" in (root / "etc/ssh/sshd_config.d/vr.conf").read_text()
    assert "PasswordAuthentication no" in (root / "etc/ssh/sshd_config.d/vr.conf").read_text()
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in (root / "etc/ssh/sshd_config.d/vr.conf").read_text()
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    keygen = (root / "etc/systemd/system/sshd-keygen.service.d/ed25519.conf").read_text()
    assert "-t ed25519" in keygen and "ssh-keygen -A" not in keygen
    assert not (root / "etc/systemd/system/ssh.service.d").exists()
    assert (root / "etc/systemd/system-generators/systemd-ssh-generator").readlink().as_posix() == "/dev/null"
    assert (root / "etc/machine-id").read_text() == ""  # a machine-id made at boot, without first-boot presets
    initrd_hook = root / "etc/initramfs-tools/hooks/vr-router"
    assert initrd_hook.stat().st_mode & 0o777 == 0o755 and "manual_add_modules virtio_pci " in initrd_hook.read_text()
    assert (root / "usr/share/initramfs-tools/modules.d/vr-router").read_text() == "ext4\ncrc32c_generic\n"
    assert not (root / "var/lib/systemd/random-seed").exists()
    assert "\nroot:*:" in "\n" + (root / "etc/shadow").read_text()  # locked: no password
    assert "blacklist floppy\n" in (root / "etc/modprobe.d/vr-router.conf").read_text()
    assert "net.ipv4.ip_forward = 1" in (root / "etc/sysctl.d/90-vr-forwarding.conf").read_text()
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "getty-static.service", "kmod-static-nodes.service",
                 "modprobe@drm.service", "sys-kernel-debug.mount"):
        assert (root / "etc/systemd/system" / unit).readlink().as_posix() == "/dev/null"
    assert (root / "etc/systemd/system/multi-user.target.wants/vr-boot.service").is_symlink()
    # the engine starts the services a state asks for; the first boot enables nothing the build did not
    preset = (root / "etc/systemd/system-preset/00-vr.preset").read_text().splitlines()
    for unit in ("dnsmasq.service", "haproxy.service", "vr-metadata.service", "strongswan.service"):
        assert not (root / "etc/systemd/system/multi-user.target.wants" / unit).exists(), unit
        assert f"enable {unit}" not in preset, unit
    assert "enable vr-boot.service" in preset and preset[-1] == "disable *"
    stamp = f"TIMESTAMP_NSEC={(root / 'usr').stat().st_mtime_ns}\n"
    assert all((root / f / ".updated").read_text().endswith(stamp) for f in ("etc", "var"))  # no ldconfig at boot
    (boot_pyc,) = (root / "opt/vr/lib/vr/__pycache__").glob("boot.*.pyc")  # no engine compile at first boot
    assert int.from_bytes(boot_pyc.read_bytes()[4:8], "little") == 0b11  # checked against the source's hash
    sources = sorted(p.name for p in (root / "etc/apt/sources.list.d").iterdir())
    assert sources == ["debian.sources", "vrpipe.sources"]
    ours = (root / "etc/apt/sources.list.d/vrpipe.sources").read_text()
    assert f"URIs: {repo_config().url}" in ours
    assert "Signed-By: /etc/apt/keyrings/vrpipe-archive-keyring.gpg" in ours
    assert (root / "etc/apt/keyrings/vrpipe-archive-keyring.gpg").read_bytes() == repo_config().keyring.read_bytes()


def test_initrd_and_modules_hold_only_what_a_virtual_router_needs(template):
    root = template.rootfs_dir
    (modules,) = (root / "usr/lib/modules").iterdir()
    for folder in ("drivers/gpu", "sound", "drivers/media", "drivers/net/wireless", "net/wireless",
                   "drivers/bluetooth", "net/bluetooth", "drivers/infiniband"):
        assert not list((modules / "kernel" / folder).rglob("*.ko*")), folder
    assert list((modules / "kernel/drivers/net/virtio_net.ko").parent.glob("virtio_net.ko*"))
    listing = run(["chroot", root, "lsinitramfs", "/initrd.img"]).stdout
    drivers = {Path(line).name.split(".ko")[0] for line in listing.splitlines() if ".ko" in line}
    assert {"virtio_blk", "virtio_scsi", "ahci", "ata_piix", "vmw_pvscsi", "hv_storvsc", "ext4"} <= drivers
    assert {"virtio_net", "e1000", "vmxnet3", "hv_netvsc"} <= drivers  # NICs named before vr-boot runs
    assert len(drivers) < 60  # Debian's MODULES=most: several hundred
    assert template.initrd.stat().st_size < 20 * 1024 * 1024


def test_raw_disk_has_gpt_boot_code_esp_and_root(template):
    raw = template.output("raw")
    table = json.loads(run(["sfdisk", "--json", raw]).stdout)["partitiontable"]
    esp, root = table["partitions"]
    assert table["label"] == "gpt"
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and "LegacyBIOSBootable" in esp["attrs"]
    assert root["start"] == esp["start"] + esp["size"]
    assert raw.read_bytes()[:440] == GPTMBR.read_bytes()[:440]
    listing = run(["mdir", "-i", f"{raw}@@{esp['start'] * 512}", "-/", "-a", "::/"]).stdout
    for name in ("vmlinuz", "initrd", "BOOTX64", "ldlinux", "syslinux"):
        assert name in listing


@pytest.mark.parametrize(("suffix", "fmt"), [("qcow2", "qcow2"), ("vhd", "vpc"), ("vmdk", "vmdk")])
def test_converted_images_hold_the_raw_disk(template, suffix, fmt):
    run(["qemu-img", "compare", "-f", "raw", "-F", fmt, template.output("raw"), template.output(suffix)])


def test_vhd_is_fixed_and_a_whole_number_of_mib(template):
    vhd = template.output("vhd")
    assert (vhd.stat().st_size - 512) % (1024 * 1024) == 0
    assert vhd.read_bytes()[-512:][:8] == b"conectix"


def test_ova_holds_descriptor_manifest_then_disk(template):
    with tarfile.open(template.output("ova")) as ova:
        assert ova.getnames() == [f"{NAME}.ovf", f"{NAME}.mf", f"{NAME}.vmdk"]
        mf = ova.extractfile(f"{NAME}.mf").read().decode()
        ovf = ova.extractfile(f"{NAME}.ovf").read()
    assert f"SHA256({NAME}.vmdk)= {sha256(template.output('vmdk'))}" in mf
    assert f"SHA256({NAME}.ovf)= " in mf and b"streamOptimized" in ovf


def test_a_build_in_another_environment_gives_the_same_bytes(template, tmp_path):
    """What a second clone sharing the signing key gives: this checkout published into a repository of
    its own and built from it (same epoch), by a process with another time zone, locale, umask and
    working directory, into a folder with a path 150 characters longer, on a tmpfs (so the rootfs is
    staged on another filesystem, with another directory order, than build/template); the .deb cache
    is now warm. Every SHA256SUMS line must match."""
    mount = TEST_CACHE / "rebuild"
    output = mount / ("deeper-" * 22) / "template"
    # the same epoch as the first build, even if a commit (the default epoch's source) came in between
    epoch = json.loads((template.folder / "manifest.json").read_text())["source_date_epoch"]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "TZ": _other(os.environ.get("TZ"), "NPT-5:45", "UTC"),
           "LC_ALL": _other(os.environ.get("LC_ALL") or os.environ.get("LANG"), "C", "C.UTF-8")}
    umask = _other(_umask(), 0o077, 0o022)
    shutil.rmtree(mount, ignore_errors=True)
    mount.mkdir(parents=True)
    run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=0755", "vrpipe-image-rebuild", mount])
    started = time.monotonic()
    try:
        child = subprocess.run([sys.executable, image_fixtures.__file__, output], env=env, umask=umask,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.monotonic() - started
        assert child.returncode == 0, child.stdout[-4000:]
        assert "Debian base layer" in child.stdout and ": cache hit " in child.stdout, child.stdout[-4000:]
        ours, theirs = _checksums(template.folder), _checksums(output)
        assert ours.keys() == theirs.keys()
        differing = [name for name in ours if ours[name] != theirs[name]]
        assert not differing, f"different bytes from the same inputs: {', '.join(differing)}" + _manifest_diff(
            template.folder / "manifest.json", output / "manifest.json")
    finally:
        run(["umount", mount])
    (TEST_CACHE / "warm-build-seconds").write_text(f"{seconds:.0f}\n")


def test_a_rebuild_from_the_manifest_offline_gives_the_same_bytes(template):
    """`--from-manifest` in a network namespace holding nothing but loopback, from a package cache with the
    .debs but no base layer: the base layer is made again from the .debs, and every SHA256SUMS line matches
    the first build's."""
    work = TEST_CACHE / "from-manifest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    manifest_file = work / "manifest.json"
    shutil.copyfile(template.folder / "manifest.json", manifest_file)
    cache = image_fixtures.offline_cache(work / "cache", manifest_file)
    ns = f"vrt-offline-{os.getpid()}"
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "link", "set", "lo", "up"], ns=ns)
        child = subprocess.run(["ip", "netns", "exec", ns, sys.executable, image_fixtures.__file__,
                                work / "template", manifest_file, cache],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        run(["ip", "netns", "del", ns])
    assert child.returncode == 0, child.stdout[-4000:]
    assert ": cache miss: mmdebstrap" in child.stdout
    assert "the rebuild gives the manifest's bytes" in child.stdout
    assert _checksums(work / "template") == _checksums(template.folder)


def test_a_rebuild_from_the_manifest_lists_what_the_cache_lacks_and_changes_nothing(template, tmp_path):
    cache = image_fixtures.offline_cache(tmp_path / "cache", template.folder / "manifest.json")
    packages = json.loads((template.folder / "manifest.json").read_text())["packages"]
    gone = [f"{p['name']}_{p['version'].replace(':', '%3a')}_{p['architecture']}.deb"
            for p in packages if p["name"] in ("libc6", "vr-scripts")]
    for name in gone:
        (cache / "trixie" / name).unlink()
    output = tmp_path / "out"
    output.mkdir()
    (output / "kept").write_text("in force\n")
    with pytest.raises(VrpipeError) as failed:
        build_command({"cache_dir": str(cache)}, None, from_manifest=str(template.folder / "manifest.json"),
                      output_dir=str(output))
    assert "2 .deb(s) of the manifest missing" in str(failed.value)
    assert all(name in str(failed.value) for name in gone)
    assert (output / "kept").read_text() == "in force\n"


def _manifest_diff(first, second) -> str:
    """What differs between two manifests, field by field and package by package (for the failure message)."""
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    fields = [k for k in sorted(a.keys() | b.keys()) if k != "packages" and a.get(k) != b.get(k)]
    packages_a = {p["name"]: p for p in a.get("packages", [])}
    packages_b = {p["name"]: p for p in b.get("packages", [])}
    packages = [f"{n}: {packages_a.get(n)} / {packages_b.get(n)}"
                for n in sorted(packages_a.keys() | packages_b.keys()) if packages_a.get(n) != packages_b.get(n)]
    return f"; manifest fields {fields}; packages {packages[:5]}"


def _other(current, first, second):
    """first, unless the first build ran with it already."""
    return second if current == first else first


def _umask() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("Umask:", 1)[1].split()[0], 8)


def _checksums(folder) -> dict[str, str]:
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}
