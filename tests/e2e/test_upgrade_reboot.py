"""Reboot-required and `vrpipe reboot` on container routers: an upgrade whose package writes Debian's
/run/reboot-required(.pkgs) is recorded as needing a reboot and `vrpipe list` says so; `vrpipe reboot
--rolling` reboots one router at a time through the health gates, state re-applied and leases kept, and the
record is cleared; a router that cannot pass the gates stops the rollout.
"""

import pytest
from vr import contract

from orchestration.upgrade.inplace import upgrade_fleet
from orchestration.upgrade.records import records
from orchestration.upgrade.rollout import RolloutPolicy

from .test_upgrade_inplace import assert_forwards, vrpipe
from .upgrade_fixtures import publish_version, upgrade_lab, version

pytestmark = pytest.mark.e2e
ROUTERS = ("r1", "r2")
WRITES_REBOOT_REQUIRED = "touch /run/reboot-required\necho vr-scripts >> /run/reboot-required.pkgs\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with upgrade_lab(tmp_path_factory.mktemp("reboot"), ROUTERS, tag="b") as test_lab:
        yield test_lab


def test_reboot_required_is_recorded_listed_and_cleared_by_a_rolling_reboot(lab):
    publish_version(lab.repo, version(1), WRITES_REBOOT_REQUIRED)
    report = upgrade_fleet(lab.manager, list(ROUTERS), lab.config(), RolloutPolicy())
    assert report.ok, [o.line() for o in report.outcomes]
    assert all(o.reboot_required == ("vr-scripts",) for o in report.outcomes), [o.line() for o in report.outcomes]
    assert {n: r.reboot_required for n, r in records(lab.manager.store).items()} == {n: ["vr-scripts"] for n in ROUTERS}
    code, listing = vrpipe(lab, "list")
    assert code == 0 and all(r["reboot_required"] == ["vr-scripts"] for r in listing), listing
    leases = {name: lab.execute(name, ["cat", contract.LEASES_FILE]) for name in ROUTERS}
    ruleset = lab.ruleset("r1")

    code, result = vrpipe(lab, "reboot", "--rolling", "--batch", "1", *ROUTERS)
    print(f"\n{result}")
    assert code == 0 and result["stopped"] is None, result
    assert [r["status"] for r in result["routers"]] == ["rebooted", "rebooted"], result
    assert all(r["reboot_required"] == [] for r in result["routers"]), result
    assert {n: r.reboot_required for n, r in records(lab.manager.store).items()} == {n: [] for n in ROUTERS}
    for index, name in enumerate(ROUTERS, 1):
        assert lab.health(name)["ok"]
        assert lab.execute(name, ["cat", contract.LEASES_FILE]) == leases[name]
        assert_forwards(lab, index, name)
    assert lab.ruleset("r1") == ruleset


def test_a_router_that_fails_the_gates_stops_the_rollout(lab):
    # haproxy masked: it cannot come back after the reboot, so r1 never passes the gates
    lab.execute("r1", ["systemctl", "mask", "haproxy.service"])
    try:
        code, result = vrpipe(lab, "reboot", "--rolling", *ROUTERS)
    finally:
        lab.execute("r1", ["systemctl", "unmask", "haproxy.service"])
        lab.manager.stop("r1")
        lab.manager.start("r1")
    print(f"\n{result}")
    assert code != 0 and "r1" in result["stopped"], result
    assert [r["status"] for r in result["routers"]] == ["failed", "not-reached"], result
    assert "did not become ready" in result["routers"][0]["error"], result  # vr-boot waits on haproxy
