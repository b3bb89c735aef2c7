"""Upgrades interrupted on a live router (issue 12, point 5): dpkg killed mid-upgrade is finished
(`dpkg --configure -a`) and then rolled back to the versions before; an upgrade whose end the manager never
saw (SSH cut) leaves the router's state before it on the router, and the next run checks the router against
it before it says anything is up to date. Tests run in file order on one lab.
"""

import threading

import pytest

from orchestration.upgrade.checks import GOOD_SNAPSHOT
from orchestration.upgrade.inplace import upgrade_fleet
from orchestration.upgrade.rollout import RolloutPolicy

from .engine_fixtures import wait_for
from .upgrade_fixtures import POSTINST_SLOW, POSTINST_STARTED, base_version, publish_version, upgrade_lab, version

pytestmark = pytest.mark.e2e
DAMAGE = ["nft", "add", "chain", "inet", "vr", "hse_not_in_the_state"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with upgrade_lab(tmp_path_factory.mktemp("interrupted"), ["r1"], tag="i") as test_lab:
        yield test_lab


def upgrade_in_background(lab):
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(report=upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy()))
    )
    thread.start()
    return thread, result


def postinst_started(lab):
    lab.execute("r1", ["rm", "-f", f"/{POSTINST_STARTED}"])  # through the router: its root is an overlay
    return lab.manager.config.state_dir / "containers/r1/upper" / POSTINST_STARTED


def wait_postinst(started, thread, result):
    """Until the postinst runs; an upgrade that ended before says why."""
    wait_for(lambda: started.exists() or not thread.is_alive(), "the upgrade's postinst to start", timeout=120)
    assert started.exists(), [o.line() for o in result["report"].outcomes]


def test_dpkg_killed_mid_upgrade_is_finished_then_rolled_back(lab):
    base = {"vr-base": base_version(), "vr-scripts": base_version()}
    publish_version(lab.repo, version(1), POSTINST_SLOW)
    started = postinst_started(lab)
    thread, result = upgrade_in_background(lab)
    wait_postinst(started, thread, result)
    for pid in lab.execute("r1", ["pidof", "dpkg"]).split():
        lab.execute("r1", ["kill", "-KILL", pid])
    thread.join(timeout=300)
    (outcome,) = result["report"].outcomes
    print(f"\n{outcome.line()}")
    assert outcome.status == "rolled-back", outcome.line()
    assert lab.execute("r1", ["dpkg", "--audit"]).strip() == ""
    assert lab.versions("r1") == base
    assert lab.health("r1")["ok"]
    assert lab.execute("r1", ["sh", "-c", f"test -e {GOOD_SNAPSHOT} && echo kept || echo gone"]).strip() == "gone"


def test_the_next_run_checks_the_router_against_its_state_before_an_unfinished_upgrade(lab):
    publish_version(lab.repo, version(2), POSTINST_SLOW)
    router = lab.manager.store.router("r1")
    started = postinst_started(lab)
    thread, result = upgrade_in_background(lab)
    with lab.ssh_cut() as cut:
        wait_postinst(started, thread, result)
        cut(router.control_address)
        thread.join(timeout=180)
    (outcome,) = result["report"].outcomes
    assert outcome.status == "failed" and "connection lost" in outcome.error, outcome.line()
    wait_for(lambda: lab.versions("r1")["vr-scripts"] == version(2), "dpkg to finish on the router", timeout=60)

    lab.execute("r1", DAMAGE)  # the router is no longer what it was before the upgrade
    damaged = upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy())
    (outcome,) = damaged.outcomes
    print(f"\n{outcome.line()}")
    assert outcome.status == "failed", outcome.line()  # before: "up-to-date", nothing checked
    assert "differs from its state before it" in outcome.error and "ruleset changed" in outcome.error

    lab.execute("r1", ["nft", "delete", "chain", "inet", "vr", DAMAGE[-1]])
    checked = upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy())
    (outcome,) = checked.outcomes
    print(outcome.line())
    assert outcome.status == "up-to-date", outcome.line()
    assert any("checked against the state before it" in w for w in outcome.warnings), outcome.warnings
    again = upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy())
    assert again.outcomes[0].status == "up-to-date" and not again.outcomes[0].warnings, again.outcomes[0].line()
