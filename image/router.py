"""The router set-up of the rootfs after its packages are in: apt sources for later upgrades, sshd on port
3922 with keys only, IP forwarding, no unattended jobs, and nothing machine-specific left behind (machine-id,
SSH host keys, random seed, logs): each router makes its own on first boot.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vr import contract

from vrpipe.run import run

from .config import TemplateConfig
from .paths import make_dirs, write_file
from .render import render

SSH_PORT = contract.SSH_PORT
HOST_KEY = Path("/etc/ssh/ssh_host_ed25519_key")  # the router's only SSH host key, made on its first boot
ESP_LABEL = "VR-ESP"
KEYRING = Path(contract.ARCHIVE_KEYRING)
FILES = Path(__file__).parent / "files"
# Jobs that would change a router behind its operator's back; its manager upgrades it (vrpipe).
MASKED_UNITS = (
    # Debian's own units would run keepalived and conntrackd with Debian's files at every boot; a redundant
    # router runs them as vr-keepalived and vr-conntrackd, with the engine's files, when its state says so
    "conntrackd.service",
    "keepalived.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
    # trixie's socket activation listens on port 22 and hands that socket to sshd, whatever its Port says
    "ssh.socket",
    # networkd manages no link here (vr-boot and the engine set addresses), so this would hold every unit
    # ordered after network-online.target (dnsmasq, haproxy) for its two-minute timeout
    "systemd-networkd-wait-online.service",
    # gettys on tty2-tty6 for machines without logind: nobody logs in on a router's VGA consoles (tty1 and
    # the serial console keep theirs), and starting them took 15-25 s of a TCG boot
    "getty-static.service",
    # Kernel interfaces a router never uses (debug and trace file systems, FUSE, configfs, huge pages, binfmt,
    # DRM, EFI pstore, udev rules from credentials; static nodes for modules not loaded: /dev/fuse,
    # /dev/net/tun...). Each unit starts at the same instant of early boot, and on a TCG boot's one vCPU
    # each took 3-4 s; kmod-static-nodes was on the way to vr-boot.
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "dev-hugepages.mount",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-binfmt.service",
    "kmod-static-nodes.service",
    "systemd-udev-load-credentials.service",
    "modprobe@drm.service",
    "modprobe@fuse.service",
    "modprobe@configfs.service",
    "modprobe@efi_pstore.service",
)
# Enabled in Debian's packaging, but the engine starts them only when a state asks for them (dnsmasq for guest
# networks, haproxy for load balancers, charon for IPsec): started at every boot besides, Debian's dnsmasq
# answered DNS with its own defaults until the state's apply, and the three took 15-32 s each of a TCG boot.
DISABLED_UNITS = ("dnsmasq.service", "haproxy.service", "strongswan.service")
PRESET = Path("etc/systemd/system-preset/00-vr.preset")
# udev loaded these for the devices of qemu's PC (floppy, parallel port, PC speaker, SMBus, PS/2 mouse, VGA
# frame buffer) and the CPU (nested KVM, frequency scaling): 15 s of a TCG boot, and delaying the units ordered
# after network-online.target (dnsmasq, haproxy). Disk and NIC drivers stay (some hypervisors' disks are IDE).
BLACKLISTED_MODULES = (
    "floppy", "parport", "parport_pc", "ppdev", "lp", "pcspkr", "i2c_piix4", "psmouse", "serio_raw", "vga16fb",
    "kvm", "kvm_amd", "kvm_intel", "powernow_k8", "sg",
)
# systemd 257.13's ssh generator (sshd on AF_VSOCK, for hosts that offer it) fails on every boot where the VM
# has the vsock module but no vsock CID ("Failed to query local AF_VSOCK CID"); routers use sshd on port 3922.
MASKED_GENERATORS = ("systemd-ssh-generator",)
# Left by the build, or made per machine: none of it may be shared by every router of the template.
BUILD_LEFTOVERS = (
    "etc/ssh/ssh_host_*",
    "var/lib/systemd/random-seed",
    "var/lib/dbus/machine-id",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/log/**/*.log",
    "var/log/apt/*",
    "var/log/journal/*",
)


@dataclass(frozen=True)
class OurRepository:
    """Our repository as routers reach it later: the configured URL, not the build's loopback server."""

    url: str
    suites: tuple[str, ...]
    keyring: Path  # the archive's public keyring on the build machine


def configure(root: Path, config: TemplateConfig, source: OurRepository) -> None:
    _apt_sources(root, config, source)
    files = {
        "etc/ssh/sshd_config.d/vr.conf": render("sshd-vr.conf.j2", port=SSH_PORT, host_key=HOST_KEY),
        "etc/systemd/system/sshd-keygen.service.d/ed25519.conf": render("sshd-keygen-ed25519.conf.j2", key=HOST_KEY),
        "etc/sysctl.d/90-vr-forwarding.conf": render("sysctl-vr.conf.j2"),
        "etc/modprobe.d/vr-router.conf": render("modprobe-vr.conf.j2", modules=BLACKLISTED_MODULES),
        "etc/apt/apt.conf.d/10vr-no-periodic": render("no-periodic-apt.conf.j2"),
        "etc/fstab": render("fstab.j2", esp_label=ESP_LABEL),
        "etc/hosts": render("hosts.j2"),
        "etc/resolv.conf": render("resolv.conf.j2"),
        "etc/hostname": "vr\n",
    }
    for path, text in files.items():
        write_file(root / path, text)
    _install(FILES / "vr-esp", root / "etc/initramfs/post-update.d/vr-esp", 0o755)
    _install(FILES / "vr-kernel", root / "usr/local/sbin/vr-kernel", 0o755)
    run(["systemctl", f"--root={root}", "mask", *MASKED_UNITS])
    run(["systemctl", f"--root={root}", "disable", *DISABLED_UNITS])
    _mask_generators(root)
    write_file(root / PRESET, render("vr.preset.j2", enabled=enabled_units(root)))


def enabled_units(root: Path) -> list[str]:
    """The preset lines of the units the build left enabled (its .wants links; masked ones left out)."""
    units = root / "etc/systemd/system"
    masked = {link.name for link in units.iterdir() if link.is_symlink() and os.readlink(link) == "/dev/null"}
    return sorted({_preset_line(link.name) for link in units.glob("*.wants/*") if link.name not in masked})


def _preset_line(name: str) -> str:
    """"getty@tty1.service" -> "getty@.service tty1" (a preset names an instance so); others as they are."""
    stem, _, suffix = name.rpartition(".")
    template, _, instance = stem.partition("@")
    return f"{template}@.{suffix} {instance}" if instance else name


def _mask_generators(root: Path) -> None:
    """A generator is masked by a /dev/null link of its name in /etc/systemd/system-generators."""
    folder = root / "etc/systemd/system-generators"
    make_dirs(folder)
    for name in MASKED_GENERATORS:
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to("/dev/null")


def forget_build(root: Path) -> None:
    """Remove what the build made that must be per router; systemd makes machine-id at boot."""
    for pattern in BUILD_LEFTOVERS:
        for path in sorted(root.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # Empty: systemd makes a new machine-id at boot and commits it, without first-boot semantics ("uninitialized"
    # would run preset-all, 4 s of a TCG boot, and the units with ConditionFirstBoot): the build's enablement holds.
    write_file(root / "etc/machine-id", "", mode=0o444)


def mark_updated(root: Path) -> None:
    """Tell systemd that /etc and /var are up to date with /usr (call once times are clamped): otherwise a
    router's first boot runs ldconfig, systemd-update-done and the other ConditionNeedsUpdate units before
    vr-boot (15 s under TCG). The files are what systemd-update-done writes: /usr's time, in nanoseconds."""
    usr = (root / "usr").stat().st_mtime_ns
    for folder in ("etc", "var"):
        stamp = root / folder / ".updated"
        write_file(stamp, f"# written by the template build, as systemd-update-done would\nTIMESTAMP_NSEC={usr}\n")
        os.utime(stamp, ns=(usr, usr), follow_symlinks=False)


def _apt_sources(root: Path, config: TemplateConfig, source: OurRepository) -> None:
    """Replace the build's sources (mmdebstrap leaves them, loopback URL included) by the lasting ones."""
    lists = root / "etc/apt/sources.list.d"
    for stale in [root / "etc/apt/sources.list", *lists.iterdir()]:
        stale.unlink(missing_ok=True)
    write_file(lists / "debian.sources", render("debian.sources.j2", config=config))
    ours = render("vrpipe.sources.j2", url=source.url, suites=source.suites, keyring=KEYRING)
    write_file(lists / "vrpipe.sources", ours)
    _install(source.keyring, root / KEYRING.relative_to("/"), 0o644)


def _install(source: Path, dest: Path, mode: int) -> None:
    make_dirs(dest.parent)
    shutil.copyfile(source, dest)
    dest.chmod(mode)
