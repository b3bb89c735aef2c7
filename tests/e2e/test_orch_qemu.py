"""The qemu deployer: a router booted from the template's qcow2 through its own overlay, its boot
parameters over fw_cfg, reached over SSH on its control address through a tap in the host's control
bridge; full replay, health, a change, and a clean power-off. (TCG: about a minute to boot.)
"""

import pytest

from orchestration.commands import Command, Query
from orchestration.store import Network

from .orch_fixtures import close_lab, open_lab
from .orch_rootfs import router_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    manager, lab = open_lab(tmp_path_factory.mktemp("qemu"), tag="q", image=router_image())
    yield manager
    close_lab(manager, lab)


def test_a_vm_router_boots_replays_applies_and_powers_off(manager):
    manager.create("q1", [Network("eth1", "g-q1")], deployer="qemu")
    outcome = manager.start("q1")
    assert outcome.ok
    health = manager.query("q1", Query.HEALTH)
    assert health["ok"], health
    guests = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.7.0.1/24"}]})
    dhcp = Command("add", "dhcp", {"mac": "02:00:00:07:00:05", "ip": "10.7.0.5", "hostname": "vm5"})
    applied = manager.apply("q1", [guests, dhcp])
    assert applied.ok, applied.error
    assert manager.query("q1", Query.HEALTH)["state"]["dhcp"] == 1
    manager.stop("q1")
    assert not manager.running("q1")
