"""Modes of what the build creates do not follow the umask: a build under umask 0077 must give the same
rootfs (and an apt cache the download user can use). And the first boot's preset, read from the links the
build made."""

import os
import stat

import pytest

from image import router
from image.config import load_config
from image.paths import make_dirs


@pytest.fixture
def strict_umask():
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_make_dirs_gives_every_new_folder_its_mode_and_leaves_existing_ones(tmp_path, strict_umask):
    (tmp_path / "kept").mkdir(mode=0o700)
    make_dirs(tmp_path / "kept/var/cache/apt/archives/partial")
    assert mode(tmp_path / "kept") == 0o700
    for folder in ("var", "var/cache", "var/cache/apt", "var/cache/apt/archives", "var/cache/apt/archives/partial"):
        assert mode(tmp_path / "kept" / folder) == 0o755, folder
    make_dirs(tmp_path / "kept/var")  # already there: nothing to do


def test_router_set_up_under_umask_0077_makes_world_readable_folders(tmp_path, strict_umask):
    """configure() on a bare root with the real systemctl: sshd-keygen.service.d, /etc/initramfs and its
    post-update.d (0700 before, under this umask) and the files in them."""
    root = tmp_path / "root"
    make_dirs(root / "etc/apt/sources.list.d")
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"key")
    config = load_config({}, source_date_epoch=1700000000)
    router.configure(root, config, router.OurRepository("http://repo.invalid/", ("stable",), keyring))
    for folder in ("etc/systemd/system/sshd-keygen.service.d", "etc/initramfs", "etc/initramfs/post-update.d",
                   "etc/apt/keyrings", "etc/sysctl.d", "etc/systemd/system-generators"):
        assert mode(root / folder) == 0o755, folder
    assert mode(root / "etc/initramfs/post-update.d/vr-esp") == 0o755
    assert mode(root / "etc/systemd/system/sshd-keygen.service.d/ed25519.conf") == 0o644


def test_the_first_boot_preset_enables_exactly_what_the_build_enabled(tmp_path):
    units = tmp_path / "etc/systemd/system"
    for wants, name in (("multi-user.target.wants", "dnsmasq.service"), ("getty.target.wants", "getty@tty1.service"),
                        ("multi-user.target.wants", "keepalived.service")):
        make_dirs(units / wants)
        (units / wants / name).symlink_to(f"/usr/lib/systemd/system/{name}")
    (units / "keepalived.service").symlink_to("/dev/null")  # masked: no preset may enable it
    assert router.enabled_units(tmp_path) == ["dnsmasq.service", "getty@.service tty1"]
    preset = router.render("vr.preset.j2", enabled=router.enabled_units(tmp_path)).splitlines()
    assert [line for line in preset if not line.startswith("#")] == [
        "enable dnsmasq.service", "enable getty@.service tty1", "disable *"]
