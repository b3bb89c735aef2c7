"""The libvirt deployer: each router a libvirt domain on the host a libvirt URI names (qemu:///system, or
qemu+ssh://root@HOST/system), its disk a qcow2 overlay over the template in the host's storage pool, its
boot parameters in the domain's fw_cfg sysinfo (opt/vr/cmdline), its NICs bridge interfaces with the MACs
the manager assigns. NICs hot-plug into a running router; an unplug waits until the guest lets go.
"""

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import libvirt
from vr import contract

from orchestration.deployers.base import CONTROL_DEVICE, Boot, Deployer
from orchestration.deployers.hostnet import CONTROL_BRIDGE, ensure_bridge, ensure_host, nic_mac
from orchestration.render import render
from orchestration.store import Network, Router
from orchestration.transports import Transport, TransportError
from vrpipe.errors import SettingsError, VrpipeError, shown

log = logging.getLogger("vrpipe.libvirt")
DEFAULT_URI = "qemu:///system"
DOMAIN_TYPES = {"tcg": "qemu", "kvm": "kvm"}
POWEROFF_TIMEOUT = 120.0
UNPLUG_TIMEOUT = 120.0  # CloudStack's KVM agent waits as long for a guest to release an unplugged NIC
# A VM's kernel names its NICs eth0, eth1, ... in PCI order, and a hot-plugged one takes the lowest free name.
VM_DEVICE = re.compile(r"eth([0-9]{1,2})")
LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG

# libvirt prints every error to stderr besides raising it: the errors raised here say it once.
libvirt.registerErrorHandler(lambda _context, _error: None, None)


class LibvirtError(VrpipeError):
    pass


@contextlib.contextmanager
def _refused(what: str, hint: str = "") -> Iterator[None]:
    """A libvirt error as one LibvirtError that says what was being done."""
    try:
        yield
    except libvirt.libvirtError as err:
        raise LibvirtError(f"{what}: {err.get_error_message()}", hint) from None


def is_local(uri: str) -> bool:
    """Whether the URI names this machine's own libvirt (its bridges are then made here)."""
    return not urlsplit(uri).hostname


def hypervisor_of(uri: str) -> str | None:
    """The hypervisor host a remote URI names, as the jump transport takes it ([user@]host), or None."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return None
    return f"{parts.username or 'root'}@{parts.hostname}"


@dataclass(frozen=True)
class LibvirtConfig:
    image: Path  # the template's qcow2 on the host (backing file of every overlay, never written)
    uri: str = DEFAULT_URI
    host_netns: str | None = None  # where a local host's bridges are (None: this host's own network)
    pool: str = "vrpipe"  # the storage pool that holds the routers' overlays, made in pool_dir if missing
    pool_dir: Path = Path("/var/lib/libvirt/images/vrpipe")
    memory_mib: int = 1024
    accel: str = "tcg"
    unplug_timeout: float = UNPLUG_TIMEOUT

    def __post_init__(self) -> None:
        if self.accel not in DOMAIN_TYPES:
            raise SettingsError(f"accel {shown(self.accel)} is not one of {', '.join(DOMAIN_TYPES)}")
        if not self.uri.startswith("qemu"):
            raise SettingsError(f"libvirt URI {shown(self.uri)} is not a qemu one", hint=f"e.g. {DEFAULT_URI}")
        # A remote host's template is checked by libvirt, when the first overlay is made over it.
        if is_local(self.uri) and not Path(self.image).is_file():
            raise SettingsError(f"{self.image} is not a file: a libvirt router needs the template's qcow2")


class LibvirtDeployer(Deployer):
    kind = "libvirt"
    hot_plug = True
    boot_timeout = 400.0  # TCG boots take a minute or more on a busy machine

    def __init__(self, config: LibvirtConfig, transport: Callable[[str], Transport]):
        super().__init__(transport)
        self.config = config
        self._connection: libvirt.virConnect | None = None
        self._guard = threading.Lock()

    # the host

    def connection(self) -> libvirt.virConnect:
        with self._guard:
            if self._connection is None or not self._connection.isAlive():
                hint = "is libvirtd running there (virsh -c URI version)? pass another --host URI"
                with _refused(f"cannot reach libvirt at {self.config.uri}", hint):
                    self._connection = libvirt.open(self.config.uri)
            return self._connection

    def _domain(self, router: Router) -> libvirt.virDomain | None:
        try:
            return self.connection().lookupByName(router.name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def _pool(self) -> libvirt.virStoragePool:
        """The storage pool, defined, built and started on the host if it is not yet."""
        connection = self.connection()
        try:
            pool = connection.storagePoolLookupByName(self.config.pool)
        except libvirt.libvirtError:
            xml = render("libvirt-pool.xml.j2", name=self.config.pool, path=str(self.config.pool_dir))
            pool = connection.storagePoolDefineXML(xml)
            pool.build()
            pool.setAutostart(True)
        if not pool.isActive():
            pool.create()
        return pool

    def _volume(self, router: Router) -> str:
        return f"{router.name}.qcow2"

    # lifecycle

    def create(self, router: Router, boot: Boot) -> None:
        """The router's overlay and its (persistent, inactive) domain; either both or neither."""
        nics = self._nics(router)
        if self._domain(router) is not None:
            raise LibvirtError(
                f"{self.config.uri} already has a domain named {shown(router.name)}",
                hint="choose another router name, or undefine that domain (virsh undefine)",
            )
        pool = self._pool()
        volume_xml = render("libvirt-volume.xml.j2", name=self._volume(router), backing=str(self.config.image))
        hint = "is the template's qcow2 at that path on the host? (--image)"
        with _refused(f"cannot make {router.name}'s disk over {self.config.image} on {self.config.uri}", hint):
            volume = pool.createXML(volume_xml)
        try:
            with _refused(f"libvirt refused {router.name}'s domain"):
                self.connection().defineXML(self._domain_xml(router, boot, nics))
        except LibvirtError:
            volume.delete()
            raise

    def _domain_xml(self, router: Router, boot: Boot, nics: list[dict[str, str]]) -> str:
        return render(
            "libvirt-domain.xml.j2",
            name=router.name,
            domain_type=DOMAIN_TYPES[self.config.accel],
            memory_mib=self.config.memory_mib,
            fw_cfg_name=contract.FW_CFG_NAME,
            boot_params=boot.text(),
            pool=self.config.pool,
            volume=self._volume(router),
            nics=nics,
            console=f"/var/log/libvirt/qemu/{router.name}-console.log",
        )

    def running(self, router: Router) -> bool:
        domain = self._domain(router)
        return domain is not None and bool(domain.isActive())

    def start(self, router: Router) -> None:
        domain = self._existing(router)
        if domain.isActive():
            return
        self._ensure_bridges(router, (Network(CONTROL_DEVICE, CONTROL_BRIDGE), *router.networks))
        hint = f"libvirt's log of it: /var/log/libvirt/qemu/{router.name}.log on the host"
        with _refused(f"libvirt could not start {router.name}", hint):
            domain.create()
        log.info("router %s: booting on %s (%s)", router.name, self.config.uri, self.config.accel)

    def stop(self, router: Router) -> None:
        """`systemctl poweroff` over SSH (an ACPI shutdown through libvirt if SSH fails); the domain is
        destroyed (powered off hard) if the guest is still up after the timeout."""
        domain = self._domain(router)
        if domain is None or not domain.isActive():
            return
        try:
            self.execute(router, ["systemctl", "poweroff", "--no-block"])
        except TransportError:
            with contextlib.suppress(libvirt.libvirtError):
                domain.shutdown()
        deadline = time.monotonic() + POWEROFF_TIMEOUT
        while domain.isActive() and time.monotonic() < deadline:
            time.sleep(0.5)
        if domain.isActive():
            log.warning("router %s: no power-off within %.0fs, destroying the domain", router.name, POWEROFF_TIMEOUT)
            domain.destroy()

    def destroy(self, router: Router) -> None:
        """Stop the router, undefine its domain and delete its overlay."""
        self.stop(router)
        domain = self._domain(router)
        if domain is not None:
            with _refused(f"libvirt could not undefine {router.name}"):
                domain.undefine()
        with contextlib.suppress(libvirt.libvirtError):
            self._pool().storageVolLookupByName(self._volume(router)).delete()

    def _existing(self, router: Router) -> libvirt.virDomain:
        domain = self._domain(router)
        if domain is None:
            raise LibvirtError(f"{self.config.uri} has no domain named {shown(router.name)}",
                               hint="recreate the router (vrpipe recreate)")
        return domain

    # NICs

    def _nics(self, router: Router) -> list[dict[str, str]]:
        """Every NIC as the domain template takes it; the devices must be the names the guest gives them."""
        devices = [CONTROL_DEVICE, *(n.device for n in router.networks)]
        if devices != [f"eth{i}" for i in range(len(devices))]:
            raise SettingsError(
                f"router {router.name}: NICs {', '.join(devices)}: a VM names its NICs eth0, eth1, ... in order",
                hint="name the networks eth1, eth2, ... (eth0 is the control network)",
            )
        return [self._nic(router, n) for n in (Network(CONTROL_DEVICE, CONTROL_BRIDGE), *router.networks)]

    def _index(self, network: Network) -> int:
        match = VM_DEVICE.fullmatch(network.device)
        if match is None:
            raise SettingsError(f"device {shown(network.device)}: a VM's NICs are named eth0, eth1, ...")
        return int(match[1])

    def _nic(self, router: Router, network: Network) -> dict[str, str]:
        index = self._index(network)
        return {"mac": nic_mac(router, index), "bridge": network.bridge, "tap": f"vl{router.id}n{index}"[:15]}

    def _ensure_bridges(self, router: Router, networks: tuple[Network, ...]) -> None:
        """On this machine the bridges are made where libvirtd runs; a remote host has its own."""
        if not is_local(self.config.uri):
            return
        ensure_host(self.config.host_netns)
        for network in networks:
            ensure_bridge(self.config.host_netns, network.bridge)

    def _interface_xml(self, router: Router, network: Network) -> str:
        return render("libvirt-interface.xml.j2", nic=self._nic(router, network))

    def prepare(self, router: Router, network: Network) -> None:
        """Plug a NIC into the router: live (at once) when it runs, and into its definition for later boots.
        The guest names it the lowest ethN it does not use, so `network.device` must be that name."""
        others = {CONTROL_DEVICE, *(n.device for n in router.networks if n != network)}
        expected = next(f"eth{i}" for i in range(len(others) + 1) if f"eth{i}" not in others)
        if network.device != expected:
            raise SettingsError(
                f"router {router.name}: a NIC plugged now is named {expected} by the guest, not {network.device}",
                hint=f"plug it as {expected}",
            )
        domain = self._existing(router)
        self._ensure_bridges(router, (network,))
        mac = self._nic(router, network)["mac"]
        live = domain.isActive() and mac not in domain.XMLDesc()
        defined = mac in domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        flags = (LIVE if live else 0) | (0 if defined else CONFIG)
        if flags:
            with _refused(f"router {router.name}: cannot plug {network.device} into {network.bridge}"):
                domain.attachDeviceFlags(self._interface_xml(router, network), flags)
        log.info("router %s: %s plugged into %s (%s)", router.name, network.device, network.bridge, mac)

    def cleanup(self, router: Router, network: Network) -> None:
        """Unplug a NIC: from the running guest first (done only once the guest acknowledges it, within
        unplug_timeout), then from the domain's definition. Only the last NIC: the guest would name the
        ones after it anew at its next boot."""
        index = self._index(network)
        later = [n.device for n in router.networks if self._index(n) > index]
        if later:
            raise SettingsError(
                f"router {router.name}: unplugging {network.device} would rename {', '.join(later)} at its next "
                "boot (a VM names its NICs in order)",
                hint=f"unplug {later[-1]} first",
            )
        domain = self._existing(router)
        xml = self._interface_xml(router, network)
        mac = self._nic(router, network)["mac"]
        with _refused(f"router {router.name}: cannot unplug {network.device}"):
            if domain.isActive() and mac in domain.XMLDesc():
                domain.detachDeviceFlags(xml, LIVE)
                self._wait_released(router, domain, network, mac)
            if mac in domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE):
                domain.detachDeviceFlags(xml, CONFIG)
        log.info("router %s: %s unplugged from %s", router.name, network.device, network.bridge)

    def _wait_released(self, router: Router, domain: libvirt.virDomain, network: Network, mac: str) -> None:
        """libvirt answers a detach at once; the NIC is gone only when the guest has let go of it."""
        deadline = time.monotonic() + self.config.unplug_timeout
        while mac in domain.XMLDesc():
            if time.monotonic() > deadline:
                raise LibvirtError(
                    f"router {router.name}: the guest did not release {network.device} ({mac}) "
                    f"within {self.config.unplug_timeout:.0f}s",
                    hint="it is still plugged (and still in the store): try the unplug again later",
                )
            time.sleep(0.25)
