"""The system-container deployer: each router runs the template's rootfs through its own overlayfs, in its
own network namespace, with systemd as PID 1 (new mount, PID and UTS namespaces) and its boot parameters
in a file. Its NICs are veth pairs to bridges in the host namespace that plays the hypervisor host, where
the control bridge holds the link-local gateway address: many routers on one machine.
"""

import contextlib
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vr import contract

from orchestration.deployers import cgroup
from orchestration.deployers.base import CONTROL_DEVICE, Boot, Deployer
from orchestration.deployers.hostnet import CONTROL_BRIDGE, ensure_host, kill_processes_in, nic_mac, plug, remove_link
from orchestration.store import Network, Router
from orchestration.transports import Transport
from vrpipe.errors import SettingsError
from vrpipe.run import run, spawn

log = logging.getLogger("vrpipe.container")
BOOT_PARAMS = Path(contract.BOOT_PARAMS_FILE.lstrip("/"))
# Units with nothing to do in a container: kernel modules, logins on consoles nobody reads, and udev (no
# devices of its own, yet it hears every uevent of the host: 60 routers' udevds ran 1,200 workers at a
# load of 700 while more routers were plugged in).
MASKED = (
    "systemd-modules-load.service", "getty.target", "console-getty.service",
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service",
)
STOP_TIMEOUT = 30.0
# systemd takes several inotify instances per container: the kernel's default of 128 for all of root's
# processes runs out at about 20 routers. Container hosts raise it (as LXD's production setup does).
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_INSTANCES_MIN = 4096


@dataclass(frozen=True)
class ContainerConfig:
    rootfs: Path  # the template's rootfs directory (lower layer, never written)
    state_dir: Path  # per router: overlay upper/work/merged, pid and console files
    host_netns: str | None  # the namespace playing the hypervisor host (None: this host's own network)
    netns_prefix: str = "vrp-"

    def __post_init__(self) -> None:
        if not (Path(self.rootfs) / "sbin/init").exists() and not (Path(self.rootfs) / "lib/systemd/systemd").exists():
            raise SettingsError(
                f"{self.rootfs} is not a router rootfs (no systemd in it)", hint="build it: invoke build-template"
            )


class ContainerDeployer(Deployer):
    kind = "container"

    def __init__(self, config: ContainerConfig, transport: Callable[[str], Transport]):
        super().__init__(transport)
        self.config = config

    # where things are

    def _dir(self, router: Router) -> Path:
        return Path(self.config.state_dir) / router.name

    def netns(self, router: Router) -> str:
        return f"{self.config.netns_prefix}{router.name}"[:32]

    def _merged(self, router: Router) -> Path:
        return self._dir(router) / "merged"

    def _pid_file(self, router: Router) -> Path:
        return self._dir(router) / "pid"

    # lifecycle

    def create(self, router: Router, boot: Boot) -> None:
        directory = self._dir(router)
        if directory.exists():
            raise FileExistsError(f"router {router.name}: {directory} already exists")
        upper = directory / "upper"
        for name in ("upper", "work", "merged"):
            (directory / name).mkdir(parents=True)
        (upper / BOOT_PARAMS).parent.mkdir(parents=True)
        (upper / BOOT_PARAMS).write_text(boot.text() + "\n")
        (upper / BOOT_PARAMS).chmod(0o600)
        # Its own identity, as a container manager gives it: systemd then makes no first boot of it
        # (no presets run, nothing prompts on a console).
        (upper / "etc/machine-id").write_text(f"{uuid.uuid4().hex}\n")
        units = upper / "etc/systemd/system"
        units.mkdir(parents=True, exist_ok=True)
        for unit in MASKED:
            (units / unit).symlink_to("/dev/null")

    def running(self, router: Router) -> bool:
        pid = self._pid(router)
        return pid is not None and _alive(pid)

    def start(self, router: Router) -> None:
        if self.running(router):
            return
        ensure_host(self.config.host_netns)
        _ensure_inotify_instances()
        merged, directory = self._merged(router), self._dir(router)
        if not os.path.ismount(merged):
            options = f"lowerdir={self.config.rootfs},upperdir={directory / 'upper'},workdir={directory / 'work'}"
            run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
        netns = self.netns(router)
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "set", "lo", "up"], ns=netns)
        for network in self._networks(router):
            self.prepare(router, network)
        self._boot(router, netns, merged)

    def _boot(self, router: Router, netns: str, merged: Path) -> None:
        """systemd as PID 1 of new mount/PID/UTS namespaces, rooted in the overlay; `container=` tells it
        so. It outlives this process: its pid is kept in a file."""
        own = cgroup.make(netns)
        argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "--pid", "--uts", "--fork"]
        argv += ["--cgroup"] if own else []
        argv += ["--propagation", "private", f"--root={merged}", "--mount-proc", "/lib/systemd/systemd", "--system"]
        argv = cgroup.launcher(own, argv) if own else argv
        env = {"container": "vrpipe", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        proc = spawn(argv, env=env, output=self._dir(router) / "console.log", append=True, new_session=True)
        self._pid_file(router).write_text(f"{proc.pid}\n")
        log.info("router %s: booting (unshare pid %d) in %s", router.name, proc.pid, netns)

    def stop(self, router: Router) -> None:
        """Power the container off through systemd, kill what is left after STOP_TIMEOUT, unmount, unplug."""
        pid = self._pid(router)
        init = _child(pid) if pid and _alive(pid) else None
        if pid and init is not None:
            os.kill(init, signal.SIGRTMIN + 4)  # systemd: start poweroff.target
            if not _wait_gone(pid, STOP_TIMEOUT):
                log.warning("router %s: no clean poweroff within %.0fs, killing it", router.name, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)  # PID 1 of its namespace: takes every process in it along
                _wait_gone(pid, 10)
        self._pid_file(router).unlink(missing_ok=True)
        cgroup.remove(self.netns(router))  # what outlived its PID 1 (none, normally), then the cgroups
        merged = self._merged(router)
        if os.path.ismount(merged):
            run(["umount", str(merged)])
        netns = self.netns(router)
        if netns in run(["ip", "netns", "list"]).stdout.split():
            kill_processes_in(netns)
            run(["ip", "netns", "del", netns])  # takes the router's veth ends, and so their host ends

    def destroy(self, router: Router) -> None:
        self.stop(router)
        shutil.rmtree(self._dir(router), ignore_errors=True)

    # NICs

    def _host_end(self, router: Router, network: Network) -> str:
        return f"vr{router.id}{network.device}"[:15]

    def _networks(self, router: Router) -> tuple[Network, ...]:
        return (Network(CONTROL_DEVICE, CONTROL_BRIDGE), *router.networks)

    def prepare(self, router: Router, network: Network) -> None:
        """Plug a NIC: a veth pair, `network.device` in the router, the other end in the host's bridge.
        The router's end keeps its MAC address across restarts, as a VM's NIC does, so that neighbours'
        ARP caches stay right."""
        mac = nic_mac(router, [n.device for n in self._networks(router)].index(network.device))
        host_end = self._host_end(router, network)
        plug(self.config.host_netns, network.bridge, host_end, self.netns(router), network.device, mac)

    def cleanup(self, router: Router, network: Network) -> None:
        remove_link(self.config.host_netns, self._host_end(router, network))

    def _pid(self, router: Router) -> int | None:
        try:
            return int(self._pid_file(router).read_text())
        except (FileNotFoundError, ValueError):
            return None


def _ensure_inotify_instances() -> None:
    if int(INOTIFY_INSTANCES.read_text()) < INOTIFY_INSTANCES_MIN:
        log.warning("raising fs.inotify.max_user_instances to %d for system containers", INOTIFY_INSTANCES_MIN)
        INOTIFY_INSTANCES.write_text(f"{INOTIFY_INSTANCES_MIN}\n")


def _child(pid: int) -> int | None:
    """The first child of `pid`: unshare's child is systemd, PID 1 inside the router."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


def _alive(pid: int) -> bool:
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False
