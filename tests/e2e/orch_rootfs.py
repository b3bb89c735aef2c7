"""The router rootfs the orchestration tests boot as system containers: the template's rootfs when a
finished `invoke build-template` left one, otherwise a development rootfs made here once with mmdebstrap
(cached under build/cache, git-ignored) with the engine from this checkout copied into /opt/vr.
"""

import os
import shutil
from pathlib import Path

from image.build import STAMP, Template
from orchestration.netns import run

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATE = Template(PROJECT / "build" / "template")
DEV_ROOTFS = PROJECT / "build" / "cache" / "orch-rootfs"
PACKAGES = "systemd-sysv,openssh-server,dnsmasq,haproxy,nftables,python3,python3-jinja2,iproute2,procps"
SSHD_CONFIG = "Port 3922\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
# Each router makes its own host keys at first boot, as the template's routers do.
HOST_KEYS_DROPIN = "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n"
METADATA_UNIT = (
    "[Unit]\nDescription=VR metadata service\n[Service]\nExecStart=/opt/vr/bin/vr-metadata\n"
    "ExecReload=/bin/kill -HUP $MAINPID\n"
)


def router_rootfs():
    """The rootfs directory to boot routers from (the template's if built, else the development one;
    VRPIPE_TEST_ROOTFS=dev picks the development one, e.g. while a template is being rebuilt)."""
    if (
        os.environ.get("VRPIPE_TEST_ROOTFS") != "dev"
        and (TEMPLATE.folder / STAMP).exists()
        and (TEMPLATE.rootfs_dir / "opt/vr/bin/vr-apply").exists()
    ):
        return TEMPLATE.rootfs_dir
    if not (DEV_ROOTFS / "usr/sbin/sshd").exists():
        _debootstrap(DEV_ROOTFS)
    _install_engine(DEV_ROOTFS)
    return DEV_ROOTFS


def _debootstrap(root):
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = ["mmdebstrap", "--mode=root", "--format=directory", "--variant=minbase", f"--include={PACKAGES}"]
    run([*argv, "trixie", str(partial), "http://deb.debian.org/debian"], timeout=900)
    for key in (partial / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    partial.rename(root)


def _install_engine(root):
    """This checkout's engine, launchers and units, as the vr-scripts package would install them."""
    source = PROJECT / "vr_scripts"
    shutil.rmtree(root / "opt/vr", ignore_errors=True)
    shutil.copytree(source / "bin", root / "opt/vr/bin", symlinks=True)
    shutil.copytree(source / "vr", root / "opt/vr/lib/vr", ignore=shutil.ignore_patterns("__pycache__"))
    units = root / "usr/lib/systemd/system"
    for unit in (source / "systemd").glob("*.service"):
        shutil.copy(unit, units / unit.name)
    if not (source / "systemd/vr-metadata.service").exists():
        (units / "vr-metadata.service").write_text(METADATA_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    (wants / "vr-boot.service").unlink(missing_ok=True)
    (wants / "vr-boot.service").symlink_to("/usr/lib/systemd/system/vr-boot.service")
    for disabled in ("dnsmasq.service", "haproxy.service"):
        (wants / disabled).unlink(missing_ok=True)
    _write(root / "etc/ssh/sshd_config.d/vr.conf", SSHD_CONFIG)
    _write(root / "etc/systemd/system/ssh.service.d/host-keys.conf", HOST_KEYS_DROPIN)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
