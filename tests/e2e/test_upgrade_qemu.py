"""One router as a qemu VM (TCG) booted from the template's qcow2, upgraded in place through apt like the
container routers: the new version runs, and traffic through its port forward and load balancer never
fails while it upgrades. (Slow: the VM boots in about a minute.)
"""

import pytest

from orchestration.lab.upgrade_lab import traffic
from orchestration.upgrade.inplace import upgrade_fleet
from orchestration.upgrade.rollout import RolloutPolicy

from .orch_rootfs import router_image
from .upgrade_fixtures import publish_version, upgrade_lab, version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_vm_router_is_upgraded_in_place_without_dropping_traffic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upgrade-qemu")
    with upgrade_lab(tmp, ["q1"], tag="q", deployer="qemu", image=router_image()) as lab:
        publish_version(lab.repo, version(1))
        with traffic(lab.lab.public, 1, lab.vms["q1"]) as counts:
            report = upgrade_fleet(lab.manager, ["q1"], lab.config(), RolloutPolicy())
        print(f"\ntraffic during the upgrade of the VM router: {counts}")
        assert report.ok, [o.line() for o in report.outcomes]
        assert lab.versions("q1") == {"vr-base": version(1), "vr-scripts": version(1)}
        assert lab.health("q1")["version"] == version(1)
        assert counts["failed_connections"] == 0 and counts["lost_pings"] <= 1, counts
        vm = lab.vms["q1"]
        assert [a.split(" from ")[0] for a in lab.forwards(1)] == [vm.name, vm.name]
