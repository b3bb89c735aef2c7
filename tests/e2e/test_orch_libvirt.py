"""The libvirt deployer with a real libvirtd (started here, in the lab's host namespace, stopped by its PID):
bad input refused whole; a router booted (TCG) from an overlay over the template's qcow2 in a storage pool,
its boot parameters over fw_cfg, full replay, DHCP and a port forward for a VM; a second guest network
hot-plugged, used and unplugged live; stop, start and destroy. Then a router on a "remote" host: libvirt
reached over qemu+ssh through an sshd in the host namespace, the router through that host (jump): that one
boots in a thread alongside the first router (two TCG domains at once), and its test at the end checks it.
Tests run in file order.
"""

import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree

import libvirt
import pytest
from vr import contract

from orchestration.commands import Command, Query
from orchestration.deployers.hostnet import ensure_bridge, ensure_host, nic_mac, plug
from orchestration.lab.lab import Lab
from orchestration.lab.libvirt_host import remove_pool, start_libvirt, stop_libvirt
from orchestration.lab.netlab import Vm
from orchestration.lab.netns import Link, Namespaces
from orchestration.manager import Manager
from orchestration.store import Network
from orchestration.transports import ensure_key
from vrpipe.errors import VrpipeError
from vrpipe.run import run

from .engine_fixtures import connect, serve
from .image_fixtures import scratch
from .orch_fixtures import assert_healthy, close_lab, manager_config
from .orch_rootfs import router_image
from .test_orch_jump import HYPERVISOR_IP, MANAGER_IP, start_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PREFIX = f"hlv{os.getpid() % 10000}"
HOST = f"{PREFIX}hv"
ROUTER = f"{PREFIX}r1"
REMOTE_ROUTER = f"{PREFIX}r2"
SECOND_BRIDGE = f"{PREFIX}g2"
URI = "qemu:///system"


@pytest.fixture(scope="module")
def libvirt_lab(tmp_path_factory):
    """(manager, lab) with libvirtd running in the lab's host namespace; all of it gone afterwards."""
    state_dir = tmp_path_factory.mktemp("libvirt")
    pool_dir = scratch(f"{PREFIX}-pool")
    config = manager_config(
        state_dir, host_netns=HOST, ssh_netns=HOST, netns_prefix=f"{PREFIX}-", image=router_image(),
        libvirt_pool=f"{PREFIX}pool", libvirt_pool_dir=pool_dir,
    )
    ensure_host(HOST)
    daemons = start_libvirt(HOST)
    manager = Manager(config)
    lab = Lab(manager, config.netns_prefix)
    try:
        lab.up_public()
        yield manager, lab
    finally:
        try:
            for router in manager.store.routers():
                manager.destroy(router.name)
            remove_pool(f"{PREFIX}pool")
        finally:
            stop_libvirt(daemons)
            close_lab(manager, lab)
            shutil.rmtree(pool_dir, ignore_errors=True)


def _domain_xml(name):
    connection = libvirt.open(URI)
    try:
        return ElementTree.fromstring(connection.lookupByName(name).XMLDesc())
    finally:
        connection.close()


def _macs(name):
    return [m.get("address") for m in _domain_xml(name).findall("devices/interface/mac")]


def test_bad_input_is_refused_with_one_error_and_nothing_left_behind(libvirt_lab):
    manager, _ = libvirt_lab
    with pytest.raises(VrpipeError, match="cannot reach libvirt at qemu\\+unix:///system"):
        manager.create(f"{PREFIX}x1", deployer="libvirt", host="qemu+unix:///system?socket=/nonexistent/sock")
    missing = manager_config(manager.config.state_dir, image=Path("/nonexistent/vr-router.qcow2"))
    with Manager(missing) as other, pytest.raises(VrpipeError, match="is not a file: a libvirt router needs"):
        other.create(f"{PREFIX}x2", deployer="libvirt")
    taken = f"{PREFIX}x3"
    connection = libvirt.open(URI)
    try:
        other = connection.defineXML(
            f"<domain type='qemu'><name>{taken}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>"
        )
        with pytest.raises(VrpipeError, match=f"already has a domain named '{taken}'"):
            manager.create(taken, deployer="libvirt")
        other.undefine()
    finally:
        connection.close()
    assert manager.store.routers() == []
    assert list(manager.config.libvirt_pool_dir.iterdir()) == []


def test_a_router_boots_over_fw_cfg_replays_and_serves_dhcp_and_a_port_forward(libvirt_lab, remote_boot):
    """remote_boot: the remote host's router boots meanwhile."""
    manager, lab = libvirt_lab
    lab.create_router(ROUTER, deployer="libvirt")
    xml = _domain_xml(ROUTER)
    entry = xml.find(f"sysinfo[@type='fwcfg']/entry[@name='{contract.FW_CFG_NAME}']")
    assert entry is not None and f"hostname={ROUTER}" in entry.text
    overlay = manager.config.libvirt_pool_dir / f"{ROUTER}.qcow2"
    assert str(router_image().resolve()) in run(["qemu-img", "info", str(overlay)]).stdout
    assert manager.start(ROUTER).ok
    assert_healthy(manager, ROUTER)
    vm = lab.add_vm(ROUTER, 1, 0)
    serve(vm.ns, 7000, vm.name)
    outcome = manager.apply(ROUTER, [*lab.network_commands(1), *lab.vm_commands(vm, 1, 0)])
    assert outcome.ok, outcome.error
    assert lab.dhcp(vm), "no lease on the first guest network"
    assert connect(lab.public, "203.0.113.11", 2200).startswith(vm.name)
    lab.first_vm = vm


def test_a_second_guest_network_is_hot_plugged_used_and_unplugged(libvirt_lab):
    manager, lab = libvirt_lab
    router = manager.plug(ROUTER, Network("eth3", SECOND_BRIDGE))
    assert [n.device for n in manager.store.router(ROUTER).networks] == ["eth1", "eth2", "eth3"]
    mac = nic_mac(router, 3)
    assert mac in _macs(ROUTER)
    first = lab.network_commands(1)[0]
    tiers = [*first.data["guests"], {"device": "eth3", "gateway": "10.2.2.1/24"}]
    vm = _vm_on(lab, SECOND_BRIDGE, "02:00:00:02:00:05", "10.2.2.5")
    dhcp = Command("add", "dhcp", {"mac": vm.mac, "ip": vm.ip, "hostname": "tier2vm"})
    outcome = manager.apply(ROUTER, [Command("add", "interfaces", {**first.data, "guests": tiers}), dhcp])
    assert outcome.ok, outcome.error
    assert lab.dhcp(vm), "no lease on the hot-plugged network"

    with pytest.raises(VrpipeError, match="eth3 still carries a guest network"):
        manager.unplug(ROUTER, "eth3")
    remove = [Command("remove", "dhcp", {"mac": vm.mac}), first]
    assert manager.apply(ROUTER, remove).ok
    # down, so it holds no address (IPv6 link-local included) when it vanishes: see vr/interfaces.py
    status, link = manager.deployer(router).execute(router, ["ip", "-br", "address", "show", "dev", "eth3"])
    assert (status, link.split()) == (0, ["eth3", "DOWN"]), link
    manager.unplug(ROUTER, "eth3")
    assert mac not in _macs(ROUTER)
    assert [n.device for n in manager.store.router(ROUTER).networks] == ["eth1", "eth2"]
    assert_healthy(manager, ROUTER)
    assert lab.dhcp(lab.first_vm), "the first network stopped serving DHCP"
    assert connect(lab.public, "203.0.113.11", 2200).startswith(lab.first_vm.name)


def _vm_on(lab, bridge, mac, ip):
    name = f"{lab.prefix}t2vm"
    lab._add_namespace(name)
    plug(lab.host, bridge, f"{PREFIX}t2v"[:15], name, "eth0", mac)
    return Vm(name, name, mac, ip)


def test_stop_start_and_destroy_leave_no_domain_and_no_overlay(libvirt_lab):
    manager, _ = libvirt_lab
    manager.stop(ROUTER)
    assert not manager.running(ROUTER)
    assert manager.start(ROUTER).ok
    assert manager.query(ROUTER, Query.HEALTH)["state"]["dhcp"] == 1
    manager.destroy(ROUTER)
    assert ROUTER not in _defined_domains()
    assert not (manager.config.libvirt_pool_dir / f"{ROUTER}.qcow2").exists()


@pytest.fixture(scope="module")
def remote_host(libvirt_lab, tmp_path_factory):
    """A second manager on the same store whose ssh runs in a management namespace linked only to an sshd in
    the host namespace: it reaches libvirt over qemu+ssh and routers only through that host. Yields
    (manager, URI of the host, management namespace)."""
    manager, _ = libvirt_lab
    folder = tmp_path_factory.mktemp("remote")
    with Namespaces(prefix=f"{PREFIX}m") as namespaces:
        management = namespaces.add("mgmt")
        namespaces.veth(Link(management, "mgmt0"), Link(HOST, "mgmt0"))
        run(["ip", "address", "add", f"{MANAGER_IP}/24", "dev", "mgmt0"], ns=management)
        run(["ip", "address", "add", f"{HYPERVISOR_IP}/24", "dev", "mgmt0"], ns=HOST)
        sshd = start_sshd(HOST, folder / "sshd", Path(f"{ensure_key(manager.key)}.pub"))
        # libvirt's own ssh runs where this process does: a wrapper puts it in the management namespace
        wrapper = folder / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {management} ssh "$@"\n')
        wrapper.chmod(0o755)
        uri = f"qemu+ssh://root@{HYPERVISOR_IP}/system?keyfile={manager.key}&no_verify=1&no_tty=1&command={wrapper}"
        remote = Manager(manager_config(
            manager.config.state_dir, host_netns=HOST, ssh_netns=management, netns_prefix=f"{PREFIX}-",
            image=router_image(), libvirt_pool=f"{PREFIX}pool", libvirt_pool_dir=manager.config.libvirt_pool_dir,
        ))
        try:
            yield remote, uri, management
        finally:
            try:
                for router in remote.store.routers():
                    remote.destroy(router.name)
            finally:
                remote.close()
                sshd.kill()
                sshd.wait()


@pytest.fixture(scope="module")
def remote_boot(remote_host):
    """The remote host's router made there, and its start (boot, wait, replay) begun in a thread; yields
    (router, the start's future)."""
    remote, uri, _ = remote_host
    ensure_bridge(HOST, f"g-{REMOTE_ROUTER}")  # a remote host's bridges are its own
    router = remote.create(REMOTE_ROUTER, [Network("eth1", f"g-{REMOTE_ROUTER}")], deployer="libvirt", host=uri)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="remote-boot") as pool:
        started: Future = pool.submit(remote.start, REMOTE_ROUTER)
        yield router, started


def test_a_router_on_a_remote_host_is_made_there_and_reached_through_it(remote_host, remote_boot):
    remote, uri, management = remote_host
    router, started = remote_boot
    assert router.jump_host == f"root@{HYPERVISOR_IP}"
    assert remote.store.router(REMOTE_ROUTER).settings["host"] == uri
    unreachable = run(["ping", "-c", "1", "-W", "1", router.control_address], ns=management, check=False)
    assert unreachable.returncode != 0, "the management namespace must reach routers only through their host"
    assert started.result().ok
    assert_healthy(remote, REMOTE_ROUTER)
    remote.destroy(REMOTE_ROUTER)
    assert REMOTE_ROUTER not in _defined_domains()


def _defined_domains():
    connection = libvirt.open(URI)
    try:
        return [d.name() for d in connection.listAllDomains()]
    finally:
        connection.close()
