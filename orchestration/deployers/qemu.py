"""The qemu deployer: each router boots the template's qcow2 through its own copy-on-write overlay, with
its boot parameters handed over fw_cfg (opt/vr/cmdline) since it boots from its own bootloader. Its NICs
are tap devices in the host namespace's bridges; it is powered off through QMP (system_powerdown).
"""

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vr import contract

from orchestration.deployers.base import CONTROL_DEVICE, Boot, Deployer
from orchestration.deployers.hostnet import CONTROL_BRIDGE, ensure_host, nic_mac, remove_link, tap
from orchestration.store import Network, Router
from orchestration.transports import Transport, TransportError
from vrpipe.errors import SettingsError, shown
from vrpipe.run import run

log = logging.getLogger("vrpipe.qemu")
ACCELERATORS = ("tcg", "kvm")
POWEROFF_TIMEOUT = 120.0


@dataclass(frozen=True)
class QemuConfig:
    image: Path  # the template's qcow2 (backing file of every overlay, never written)
    state_dir: Path  # per router: overlay, boot parameters, pid, QMP socket, serial console
    host_netns: str | None  # None: this host's own network
    memory_mib: int = 1024
    accel: str = "tcg"  # KVM guests are known to hang early on some hosts: TCG unless told otherwise

    def __post_init__(self) -> None:
        if not Path(self.image).is_file():
            raise SettingsError(f"{self.image} is not a file: a qemu router needs the template's qcow2")
        if self.accel not in ACCELERATORS:
            raise SettingsError(f"accel {shown(self.accel)} is not one of {', '.join(ACCELERATORS)}")


class QemuDeployer(Deployer):
    kind = "qemu"
    boot_timeout = 400.0  # TCG boots take a minute or more on a busy machine

    def __init__(self, config: QemuConfig, transport: Callable[[str], Transport]):
        super().__init__(transport)
        self.config = config

    def _dir(self, router: Router) -> Path:
        return Path(self.config.state_dir) / router.name

    def _networks(self, router: Router) -> tuple[Network, ...]:
        return (Network(CONTROL_DEVICE, CONTROL_BRIDGE), *router.networks)

    def _tap(self, router: Router, index: int) -> str:
        return f"vq{router.id}n{index}"[:15]

    def create(self, router: Router, boot: Boot) -> None:
        directory = self._dir(router)
        directory.mkdir(parents=True)
        backing = Path(self.config.image).resolve()
        run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(backing),
                str(directory / "disk.qcow2"),
            ]
        )
        (directory / "boot-params").write_text(boot.text())

    def running(self, router: Router) -> bool:
        pid = self._pid(router)
        return pid is not None and Path(f"/proc/{pid}").exists()

    def start(self, router: Router) -> None:
        if self.running(router):
            return
        ensure_host(self.config.host_netns)
        for network in self._networks(router):
            self.prepare(router, network)
        directory = self._dir(router)
        params = (directory / "boot-params").read_text().strip()
        argv = ["qemu-system-x86_64", "-name", router.name]
        argv += ["-accel", self.config.accel, "-m", str(self.config.memory_mib), "-display", "none"]
        argv += ["-monitor", "none", "-serial", f"file:{directory / 'console.log'}"]
        argv += ["-qmp", f"unix:{directory / 'qmp.sock'},server=on,wait=off", "-pidfile", str(directory / "pid")]
        argv += ["-drive", f"file={directory / 'disk.qcow2'},format=qcow2,if=virtio"]
        # commas separate qemu's options: the value doubles them (the parameters themselves have none)
        argv += ["-fw_cfg", f"name={contract.FW_CFG_NAME},string={params.replace(',', ',,')}", "-daemonize"]
        for index, _ in enumerate(self._networks(router)):
            argv += ["-netdev", f"tap,id=n{index},ifname={self._tap(router, index)},script=no,downscript=no"]
            argv += ["-device", f"virtio-net-pci,netdev=n{index},mac={nic_mac(router, index)}"]
        run(argv, ns=self.config.host_netns, timeout=60)
        log.info("router %s: booting (qemu pid %s, %s)", router.name, self._pid(router), self.config.accel)

    def stop(self, router: Router) -> None:
        """`systemctl poweroff` over SSH (ACPI power-off through QMP if SSH fails: guests without a
        power-key handler ignore that one); qemu is terminated if the guest is still up after the timeout."""
        pid = self._pid(router)
        if pid is not None and self.running(router):
            try:
                self.execute(router, ["systemctl", "poweroff", "--no-block"])
            except TransportError:
                with contextlib.suppress(OSError):
                    _qmp(self._dir(router) / "qmp.sock", "system_powerdown")
            deadline = time.monotonic() + POWEROFF_TIMEOUT
            while self.running(router) and time.monotonic() < deadline:
                time.sleep(0.5)
            if self.running(router):
                log.warning("router %s: no power-off within %.0fs, terminating qemu", router.name, POWEROFF_TIMEOUT)
                os.kill(pid, signal.SIGTERM)
        (self._dir(router) / "pid").unlink(missing_ok=True)
        for network in self._networks(router):
            self.cleanup(router, network)

    def destroy(self, router: Router) -> None:
        self.stop(router)
        for name in ("disk.qcow2", "boot-params", "console.log", "qmp.sock"):
            (self._dir(router) / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir(router).rmdir()

    def _tap_of(self, router: Router, network: Network) -> str:
        return self._tap(router, [n.device for n in self._networks(router)].index(network.device))

    def prepare(self, router: Router, network: Network) -> None:
        """The NIC's tap device in the host's bridge (NICs are plugged at start: no hot-plug)."""
        tap(self.config.host_netns, network.bridge, self._tap_of(router, network))

    def cleanup(self, router: Router, network: Network) -> None:
        remove_link(self.config.host_netns, self._tap_of(router, network))

    def _pid(self, router: Router) -> int | None:
        try:
            return int((self._dir(router) / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None


def _qmp(path: Path, command: str) -> None:
    """Send one QMP command, after the capabilities handshake."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rw")
        stream.readline()  # the greeting
        for execute in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": execute}) + "\n")
            stream.flush()
            json.loads(stream.readline())
