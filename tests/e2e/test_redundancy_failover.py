"""A redundant pair of container routers under traffic: the MASTER stopped outright, and only its
keepalived killed; the BACKUP takes over in under 3 s with every long-lived flow (source NAT and port
forward) kept, DHCP and metadata working on the new MASTER; the old MASTER coming back stays BACKUP
(no preemption) and a handover fails back with the same guarantees."""

import json
import sys

import pytest
from vr import contract

from orchestration.lab import pair_lab
from vrpipe.run import run

from .orch_fixtures import close_lab, open_lab

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux namespaces")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    manager, lab = open_lab(tmp_path_factory.mktemp("pair"), tag="h")
    try:
        yield manager, lab, pair_lab.create_pair(manager, lab, "ha1")
    finally:
        close_lab(manager, lab)


def _assert_kept(result):
    print(f"failover {result.master_before} -> {result.master_after}: {result}")
    assert result.master_after != result.master_before
    assert result.seconds < 3.0, result
    assert result.flows_kept == result.flows, result.errors
    assert result.pings_lost < result.pings_sent / 2, result


def _metadata(lab, vm):
    url = "http://10.1.1.1/latest/meta-data/instance-id"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    return run([sys.executable, "-c", code], ns=vm.ns, check=False).stdout.strip()


def test_both_members_take_the_same_state_and_one_is_master(pair):
    manager, lab, ha = pair
    roles = pair_lab.roles(manager, ha)
    assert sorted(roles.values()) == ["BACKUP", "MASTER"], roles
    for member in ha.members:
        status, out = manager.transport(member).execute([contract.command("vr-health")])
        health = json.loads(out)
        assert health["vrrp"] == roles[member] and status == 0, health["problems"]
        assert health["services"]["vr-keepalived"] == health["services"]["vr-conntrackd"] == "active"


def test_killing_the_masters_keepalived_fails_over_keeping_every_flow(pair):
    manager, lab, ha = pair
    result = pair_lab.failover(manager, lab, ha, pair_lab.kill_keepalived(manager))
    _assert_kept(result)
    # systemd restarts the killed keepalived: it comes back as BACKUP, without taking over again
    assert pair_lab.wait_for_master(manager, ha) == result.master_after


def test_stopping_the_master_outright_fails_over_keeping_every_flow(pair):
    manager, lab, ha = pair
    result = pair_lab.failover(manager, lab, ha, pair_lab.pull_the_plug(manager, lab))
    _assert_kept(result)
    assert lab.dhcp(ha.vm), "no DHCP renewal from the new MASTER"
    assert _metadata(lab, ha.vm) == ha.vm.name


def test_a_member_back_stays_backup_and_a_handover_fails_back(pair):
    manager, lab, ha = pair
    master = pair_lab.wait_for_master(manager, ha)
    down = next(m for m in ha.members if m != master)
    if pair_lab.role(manager, down) == "down":
        manager.stop(down)
        assert manager.start(down).ok
    assert pair_lab.roles(manager, ha) == {master: "MASTER", down: "BACKUP"}  # no preemption

    def hand_over(current):
        manager.transport(current).execute([contract.command("vr-vrrp"), "handover"])

    result = pair_lab.failover(manager, lab, ha, hand_over)
    manager.transport(master).execute([contract.command("vr-vrrp"), "resume"])
    _assert_kept(result)
    assert result.master_after == down
