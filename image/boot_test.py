"""Boots a template disk in qemu from its own bootloader (BIOS, or UEFI with Debian's OVMF), KVM when it
works here and TCG otherwise, hands it boot parameters over fw_cfg, forwards a loopback port to the
router's SSH port, waits for vr-boot's ready line on the serial console, and runs commands over SSH.
"""

import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vr import contract
from vr.boot import BootParams, format_params

from vrpipe.errors import CommandError
from vrpipe.run import run, spawn

from .router import SSH_PORT

READY_LINE = b"vr-boot: ready"
# systemd's console lines for a unit or a generator that failed
CONSOLE_FAILURE = re.compile(r"FAILED|failed with exit status|Failed to start")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# qemu's user-mode network: the router takes the address slirp would hand out, so hostfwd reaches it.
SLIRP_ADDRESS, SLIRP_GATEWAY = "10.0.2.15/24", "10.0.2.2"
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=10", "-o", "BatchMode=yes")


class BootFailed(Exception):
    """The VM did not reach ready; the message has the end of its serial console."""


@dataclass(frozen=True)
class BootedVm:
    process: subprocess.Popen
    ssh_port: int
    key: Path  # the private half of the key given in the boot parameters
    serial: Path
    seconds_to_ready: float

    def ssh(self, *command: str, input_text: str | None = None, timeout: float = 120) -> str:
        """Run a command on the router as root; raise CommandError if it fails. sshd hands the command
        to the router's shell, so each word is quoted for it."""
        remote = shlex.join(command)
        login: list[str | Path] = ["-i", self.key, "-p", str(self.ssh_port), "root@127.0.0.1"]
        argv = ["ssh", *SSH_OPTIONS, *login, remote]
        return run(argv, input=input_text, timeout=timeout).stdout

    def wait_for_ssh(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ssh("true", timeout=20)
                return
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


@functools.cache
def accelerator(kernel: Path) -> str:
    """"kvm" if a KVM guest gets through a kernel boot here (it panics at once without a root and exits
    thanks to -no-reboot), else "tcg"; a KVM that hangs early in boot is known on such machines."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    argv: list[str | Path] = ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-display", "none", "-serial", "none",
            "-monitor", "none", "-no-reboot", "-kernel", kernel, "-append", "console=ttyS0 panic=-1"]
    try:
        run(argv, timeout=20)
    except CommandError:  # a hung KVM guest is killed by the timeout
        return "tcg"
    return "kvm"


def make_key(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key file, public key line)."""
    key = folder / "id_ed25519"
    key.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vrpipe-image-test", "-f", key])
    return key, key.with_suffix(".pub").read_text().strip()


def console_failures(serial_text: str) -> list[str]:
    """The serial console's lines that report a failed unit or generator."""
    return [line.strip() for line in serial_text.splitlines() if CONSOLE_FAILURE.search(line)]


def router_params(public_key: str, hostname: str) -> str:
    """Boot parameters for a router on qemu's user-mode network, reachable with public_key."""
    return format_params(
        BootParams(hostname=hostname, control=SLIRP_ADDRESS, gateway=SLIRP_GATEWAY, authorized_key=public_key)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def booted(disk: Path, fmt: str, params: str, key: Path, folder: Path, *, accel: str, uefi: bool = False,
           nics: int = 1, timeout: float = 400) -> Iterator[BootedVm]:
    """A VM booted from disk (never written: snapshot=on) until vr-boot says ready; stopped afterwards.
    The first NIC (eth0) carries the forwarded SSH port; further ones lead nowhere (public, guest)."""
    port, serial = free_port(), folder / f"serial-{disk.suffix[1:]}{'-uefi' if uefi else ''}.log"
    argv = [
        "qemu-system-x86_64", "-accel", accel, "-m", "1024", "-display", "none", "-monitor", "none",
        "-serial", f"file:{serial}", "-no-reboot",
        "-drive", f"file={disk},format={fmt},if=virtio,snapshot=on",
        # restrict=on: the guest reaches nothing but the forwarded port, and nothing outside this machine
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{SSH_PORT}",
        "-device", "virtio-net-pci,netdev=n0",
        *(arg for n in range(1, nics) for arg in ("-netdev", f"user,id=n{n},restrict=on",
                                                  "-device", f"virtio-net-pci,netdev=n{n}")),
        "-fw_cfg", f"name={contract.FW_CFG_NAME},string={params}",
        *(_uefi_firmware(folder) if uefi else []),
    ]
    serial.unlink(missing_ok=True)  # an earlier boot's ready line must not count for this one
    started = time.monotonic()
    process = spawn(argv, output=folder / f"{serial.stem}.qemu.log")
    try:
        _wait_ready(process, serial, timeout)
        yield BootedVm(process, port, key, serial, time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _uefi_firmware(folder: Path) -> list[str]:
    variables = folder / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, variables)
    return ["-machine", "q35",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={variables}"]


def _wait_ready(process: subprocess.Popen, serial: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serial.exists() and READY_LINE in serial.read_bytes():
            return
        if process.poll() is not None:
            raise BootFailed(f"qemu exited with {process.returncode} before ready:\n{_tail(serial)}")
        time.sleep(1)
    raise BootFailed(f"not ready after {timeout:.0f} s:\n{_tail(serial)}")


def _tail(serial: Path) -> str:
    return serial.read_bytes()[-3000:].decode(errors="replace") if serial.exists() else "(no serial output)"
