"""A key rotation as lab routers live it (issue: repository trust): a router that trusts only the old key
upgrades through the overlap, learns the new key from the vr-archive-keyring package, and keeps upgrading
once the old key is retired; a router that missed the overlap is refused with apt's own words."""

import pytest

from orchestration.upgrade.inplace import upgrade_fleet
from orchestration.upgrade.rollout import RolloutPolicy
from repo.rotation import rotate_key

from .upgrade_fixtures import base_version, publish_version, upgrade_lab, version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def upgrade(lab, name):
    report = upgrade_fleet(lab.manager, [name], lab.config(security=None), RolloutPolicy())
    (outcome,) = report.outcomes
    return outcome


def keyring_package(lab, name):
    out = lab.execute(name, ["dpkg-query", "-W", "-f=${Version}", "vr-archive-keyring"])
    return int(out)


def test_a_router_follows_a_rotation_and_one_that_missed_it_is_refused(tmp_path_factory):
    with upgrade_lab(tmp_path_factory.mktemp("rotation"), ["k1", "k2"], tag="k") as lab:
        before = keyring_package(lab, "k1")
        started = rotate_key(lab.repo)  # a new key signs beside the old one
        publish_version(lab.repo, version(1))
        overlap = upgrade(lab, "k1")  # k2 is not upgraded during the overlap
        assert overlap.status == "upgraded", overlap.line()
        assert keyring_package(lab, "k1") == before + 1
        rotate_key(lab.repo, retire=True)  # only the new key signs from now on
        publish_version(lab.repo, version(2))
        after = upgrade(lab, "k1")
        assert after.status == "upgraded", after.line()
        assert lab.versions("k1")["vr-scripts"] == version(2)
        missed = upgrade(lab, "k2")
        assert missed.status == "skipped", missed.line()
        assert "Missing key" in missed.error or "NO_PUBKEY" in missed.error, missed.error
        assert started.keys.newest[-8:] in missed.error, missed.error  # apt names the key it lacks
        assert lab.versions("k2")["vr-scripts"] == base_version()
