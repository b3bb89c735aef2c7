"""Routers as system containers driven through the store: a change made through the manager reaches the
router and traffic flows through it (DHCP with a real client, metadata, port forwarding, firewall); a
router stopped and started again gets a full replay: the same ruleset (counters aside) and leases.
Tests run in file order on one router, each building on the previous one.
"""

from dataclasses import replace

import pytest

from orchestration.commands import Query
from vrpipe.run import run

from .engine_fixtures import connect, http_get, serve, wait_for
from .orch_fixtures import orch_lab  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e
VMS = 2


@pytest.fixture(scope="module")
def lab(orch_lab):  # noqa: F811
    manager, lab = orch_lab
    lab.create_router("r1")
    manager.start("r1")
    lab.vms = [lab.add_vm("r1", 1, i) for i in range(VMS)]
    for vm in lab.vms:
        serve(vm.ns, 7000, vm.name)
    return manager, lab


def router_exec(manager, argv):
    status, out = manager.deployer(manager.store.router("r1")).execute(manager.store.router("r1"), argv)
    assert status == 0, out
    return out


def ruleset(manager):
    """The router's nftables table, stateless (without counter values)."""
    return router_exec(manager, ["nft", "-s", "list", "table", "inet", "vr"])


def test_router_boots_and_answers_health_with_the_pinned_host_key(lab):
    manager, _ = lab
    health = manager.query("r1", Query.HEALTH)
    assert health["ok"], health
    assert manager.store.router("r1").host_key.startswith("ssh-ed25519 ")


def test_a_change_through_the_store_reaches_the_router_and_vms_get_dhcp_and_metadata(lab):
    manager, lab_ = lab
    commands = lab_.network_commands(1)
    for i, vm in enumerate(lab_.vms):
        commands += lab_.vm_commands(vm, 1, i)
    outcome = manager.apply("r1", commands)
    assert outcome.ok, outcome.error
    assert [a.ok for a in outcome.answers] == [True] * len(commands)
    assert len(manager.store.state("r1")["dhcp"]) == VMS
    for vm in lab_.vms:
        assert lab_.dhcp(vm), f"{vm.name} got no lease"
    vm = lab_.vms[0]
    url = "http://10.1.1.1/latest/meta-data/instance-id"
    # systemd reports the metadata service started before it listens
    code, body = wait_for(lambda: http_get(vm.ns, url, timeout=1)[0] and http_get(vm.ns, url), "metadata")
    assert (code, body) == (200, vm.name)


def test_port_forward_and_firewall_let_the_outside_reach_a_vm(lab):
    manager, lab_ = lab
    vm0, vm1 = lab_.vms
    assert connect(lab_.public, "203.0.113.11", 2200).startswith(vm0.name)
    assert connect(lab_.public, "203.0.113.11", 2201).startswith(vm1.name)
    firewall_rule = lab_.vm_commands(vm1, 1, 1)[3]
    answer = manager.apply("r1", [replace(firewall_rule, op="remove")], aggregate=False)
    assert answer[0].ok, answer[0].error
    assert connect(lab_.public, "203.0.113.11", 2201, timeout=1) == ""
    assert connect(lab_.public, "203.0.113.11", 2200).startswith(vm0.name)


def test_stop_and_start_gets_a_full_replay_with_the_same_ruleset_and_leases(lab):
    manager, lab_ = lab
    before = ruleset(manager)
    leases = router_exec(manager, ["cat", "/var/lib/misc/dnsmasq.leases"])
    manager.stop("r1")
    assert not manager.running("r1")
    assert connect(lab_.public, "203.0.113.11", 2200, timeout=1) == ""
    outcome = manager.start("r1")
    assert outcome.ok
    assert ruleset(manager) == before
    assert router_exec(manager, ["cat", "/var/lib/misc/dnsmasq.leases"]) == leases
    forwarded = wait_for(lambda: connect(lab_.public, "203.0.113.11", 2200, timeout=1), "the forward after replay")
    assert forwarded.startswith(lab_.vms[0].name)
    assert run(["ip", "-4", "-o", "address", "show", "eth0"], ns=lab_.vms[0].ns).stdout


def test_recreate_makes_a_new_router_with_the_whole_state_and_the_leases(lab):
    manager, lab_ = lab
    before = ruleset(manager)
    leases = router_exec(manager, ["cat", "/var/lib/misc/dnsmasq.leases"])
    old_machine_id = router_exec(manager, ["cat", "/etc/machine-id"])
    outcome = manager.recreate("r1")
    assert outcome.ok
    assert router_exec(manager, ["cat", "/etc/machine-id"]) != old_machine_id  # a new router from the template
    assert ruleset(manager) == before
    assert router_exec(manager, ["cat", "/var/lib/misc/dnsmasq.leases"]) == leases
    forwarded = wait_for(lambda: connect(lab_.public, "203.0.113.11", 2200, timeout=1), "the forward after recreate")
    assert forwarded.startswith(lab_.vms[0].name)
    assert lab_.dhcp(lab_.vms[0]), "the VM renews its lease on the new router"
