"""Pure logic of the libvirt deployer and of plugging NICs: which URIs are local and which host a remote
one is reached through, the NIC names a VM's kernel gives, and what `plug`/`unplug` refuse (on a real
SQLite store, with a stopped container router: no libvirt, no root)."""

import json
from pathlib import Path

import libvirt
import pytest

from orchestration import commands as cmds
from orchestration.cli import main
from orchestration.commands import Command
from orchestration.deployers.libvirt import LibvirtConfig, LibvirtDeployer, hypervisor_of, is_local
from orchestration.manager import Manager
from orchestration.settings import ManagerConfig
from orchestration.store import Network, Router
from vrpipe.errors import SettingsError, VrpipeError


@pytest.mark.parametrize(
    ("uri", "local", "jump"),
    [
        ("qemu:///system", True, None),
        ("qemu+unix:///system?socket=/run/x.sock", True, None),
        ("qemu+ssh://kvm1/system", False, "root@kvm1"),
        ("qemu+ssh://admin@kvm2.example.internal:2222/system", False, "admin@kvm2.example.internal"),
    ],
)
def test_local_uris_and_the_host_a_remote_one_is_reached_through(uri, local, jump):
    assert is_local(uri) is local
    assert hypervisor_of(uri) == jump


def test_a_config_refuses_a_missing_template_a_non_qemu_uri_and_a_bad_accelerator(tmp_path):
    with pytest.raises(SettingsError, match="is not a file"):
        LibvirtConfig(tmp_path / "missing.qcow2")
    LibvirtConfig(tmp_path / "missing.qcow2", uri="qemu+ssh://kvm1/system")  # the host's path: checked there
    image = tmp_path / "t.qcow2"
    image.touch()
    with pytest.raises(SettingsError, match="not a qemu one"):
        LibvirtConfig(image, uri="xen:///system")
    with pytest.raises(SettingsError, match="accel"):
        LibvirtConfig(image, accel="hvf")


def _router(*devices):
    return Router(7, "r7", "libvirt", "169.254.1.8", None, None, tuple(Network(d, f"b-{d}") for d in devices))


def _deployer(tmp_path):
    image = tmp_path / "t.qcow2"
    image.touch()
    return LibvirtDeployer(LibvirtConfig(image), transport=lambda name: None)


def test_a_vm_router_names_its_nics_eth0_eth1_in_order(tmp_path):
    deployer = _deployer(tmp_path)
    nics = deployer._nics(_router("eth1", "eth2"))
    assert [n["mac"] for n in nics] == ["0a:00:00:07:00:00", "0a:00:00:07:00:01", "0a:00:00:07:00:02"]
    assert [n["tap"] for n in nics] == ["vl7n0", "vl7n1", "vl7n2"]
    with pytest.raises(SettingsError, match="a VM names its NICs eth0, eth1, ... in order"):
        deployer._nics(_router("eth2"))


def test_a_hot_plugged_nic_must_take_the_lowest_free_name(tmp_path):
    deployer = _deployer(tmp_path)
    # eth1 was unplugged: the guest's kernel gives the next NIC that name again, not eth4
    router = _router("eth2", "eth3", "eth4")
    with pytest.raises(SettingsError, match="named eth1 by the guest, not eth4"):
        deployer.prepare(router, Network("eth4", "b-eth4"))


def test_only_the_last_nic_is_unplugged_since_the_guest_would_rename_the_later_ones(tmp_path):
    deployer = _deployer(tmp_path)
    with pytest.raises(SettingsError, match="unplugging eth1 would rename eth2, eth3 at its next boot"):
        deployer.cleanup(_router("eth1", "eth2", "eth3"), Network("eth1", "b-eth1"))


@pytest.fixture
def manager(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "sbin").mkdir(parents=True)
    (rootfs / "sbin/init").touch()
    config = ManagerConfig(tmp_path / "state", rootfs=rootfs)
    config.state_dir.mkdir()
    with Manager(config) as manager:
        manager.store.add_router("r1", "container", "169.254.1.2", [Network("eth1", "g1")], None,
                                 {"rootfs": str(rootfs)})
        yield manager


def test_plug_and_unplug_a_stopped_router_change_the_store(manager):
    manager.plug("r1", Network("eth2", "pub"))
    assert [n.device for n in manager.store.router("r1").networks] == ["eth1", "eth2"]
    manager.unplug("r1", "eth1")
    assert manager.store.router("r1").networks == (Network("eth2", "pub"),)


def test_plug_refuses_a_device_the_router_has(manager):
    for device in ("eth0", "eth1"):
        with pytest.raises(SettingsError, match=f"already has a NIC {device}"):
            manager.plug("r1", Network(device, "x"))
    assert manager.store.router("r1").networks == (Network("eth1", "g1"),)


def test_unplug_refuses_an_unknown_nic_and_one_that_carries_a_guest_network(manager):
    with pytest.raises(SettingsError, match="no NIC eth5 to unplug .*eth0 is the control network"):
        manager.unplug("r1", "eth5")
    guests = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]})
    manager.store.record("r1", cmds.validate([guests], {}))
    with pytest.raises(SettingsError, match="eth1 still carries a guest network"):
        manager.unplug("r1", "eth1")
    assert manager.store.router("r1").networks == (Network("eth1", "g1"),)


def test_host_is_only_for_libvirt_routers(manager):
    with pytest.raises(SettingsError, match="--host is for libvirt routers"):
        manager.create("r2", deployer="container", host="qemu:///system")
    assert Path(manager.config.state_dir).is_dir() and [r.name for r in manager.store.routers()] == ["r1"]


class _StuckGuest:
    """A running domain whose guest never acknowledges the unplug: its NIC stays in the live XML."""

    def __init__(self, mac):
        self.mac, self.detached = mac, []

    def isActive(self):
        return True

    def XMLDesc(self, flags=0):
        return f"<domain><devices><interface><mac address='{self.mac}'/></interface></devices></domain>"

    def detachDeviceFlags(self, xml, flags):
        self.detached.append(flags)


def test_an_unplug_the_guest_never_acknowledges_fails_after_the_timeout_with_the_nic_still_defined(tmp_path):
    image = tmp_path / "t.qcow2"
    image.touch()
    deployer = LibvirtDeployer(LibvirtConfig(image, unplug_timeout=0.3), transport=lambda name: None)
    router = _router("eth1", "eth2")
    guest = _StuckGuest("0a:00:00:07:00:02")
    deployer._existing = lambda r: guest
    with pytest.raises(VrpipeError, match=r"did not release eth2 \(0a:00:00:07:00:02\) within 0s"):
        deployer.cleanup(router, Network("eth2", "b-eth2"))
    assert guest.detached == [libvirt.VIR_DOMAIN_AFFECT_LIVE]  # never taken out of the definition


def test_vrpipe_plug_and_unplug_say_what_they_did(manager, capsys):
    state = ["--state-dir", str(manager.config.state_dir), "--json"]
    assert main([*state, "plug", "r1", "eth2=pub"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["networks"] == [{"device": "eth1", "bridge": "g1"}, {"device": "eth2", "bridge": "pub"}]
    assert "eth2 plugged into pub on r1" in err
    assert main([*state, "unplug", "r1", "eth3"]) == 1
    assert "no NIC eth3 to unplug" in capsys.readouterr().err
    assert main([*state, "unplug", "r1", "eth2"]) == 0
    assert "eth2 unplugged from r1" in capsys.readouterr().err
