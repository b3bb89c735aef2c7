"""A Debian library fix on a live router, deterministic: the template's own libssl package rebuilt as a newer
version (same library, new version, new file bytes), published in the test repository's security channel,
and upgraded in place while traffic runs; afterwards vr-restart-stale has renewed every daemon that mapped
the old library (and left alone those that do not), no process maps it, no connection failed and no
lease was lost. And Debian's real fixes through the mirror (invoke mirror-security), which `vrpipe upgrade`
takes by default when the repository serves it.
"""

import json
from dataclasses import replace

import pytest
from vr import contract

from orchestration.lab.security_fix import LIBSSL, publish_into, rebuilt_libssl
from orchestration.lab.upgrade_lab import traffic
from orchestration.upgrade.apt import DEBIAN_SECURITY, SOURCES_FILE, SecuritySource
from orchestration.upgrade.inplace import upgrade_fleet
from orchestration.upgrade.rollout import RolloutPolicy
from repo.mirror import DEBIAN_KEYRING, mirror_security, template_mirror

from .engine_fixtures import wait_for
from .image_fixtures import shared_template
from .orch_rootfs import router_rootfs
from .test_repo_mirror import debian_reachable
from .upgrade_fixtures import upgrade_lab

pytestmark = pytest.mark.e2e


def old_code(lab, name):
    """The processes on the router that still map a deleted file (what vr-restart-stale finds)."""
    report = json.loads(lab.execute(name, [contract.command("vr-restart-stale"), "--dry-run"]))
    return report["still_old"]


def test_a_libssl_fix_renews_every_daemon_that_mapped_the_old_library(tmp_path):
    with upgrade_lab(tmp_path, ["r1"], tag="s") as lab:
        deb, old, fixed = rebuilt_libssl(router_rootfs(), tmp_path)
        publish_into(lab.repo, deb)
        leases = lab.execute("r1", ["cat", contract.LEASES_FILE])
        assert old_code(lab, "r1") == []
        with traffic(lab.lab.public, 1, lab.vms["r1"]) as counts:
            wait_for(lambda: lab.forwards(1), "traffic before the upgrade")
            report = upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy())
        (outcome,) = report.outcomes
        print(f"\n{outcome.line()}\ntraffic during the upgrade: {counts}")
        assert outcome.status == "upgraded", outcome.line()
        assert [str(c) for c in outcome.changes] == [f"{LIBSSL} {old} -> {fixed}"]
        # every daemon linking libssl or libcrypto, each its least disruptive way; dnsmasq links neither
        renewed = {"PID 1 (daemon-reexec)", "haproxy.service (reload)", "ssh.service (restart)"}
        assert renewed <= set(outcome.restarts), outcome.restarts
        assert not any(r.startswith("dnsmasq") for r in outcome.restarts), outcome.restarts
        assert installed_version_on(lab, "r1") == fixed
        stale = old_code(lab, "r1")  # a new connection: the one from before the ssh restart has ended
        assert stale == [], stale
        maps = lab.execute("r1", ["sh", "-c", "grep -lE 'lib(ssl|crypto).so.3 .deleted.' /proc/[0-9]*/maps || true"])
        assert maps.strip() == "", maps
        assert counts["failed_connections"] == 0, counts
        assert counts["connections"] > 20 and counts["lost_pings"] <= 1, counts
        assert lab.execute("r1", ["cat", contract.LEASES_FILE]) == leases
        assert lab.health("r1")["ok"]


def test_a_router_takes_debians_fixes_from_the_mirror_by_default(tmp_path):
    manifest = shared_template().folder / "manifest.json"
    if not debian_reachable(DEBIAN_SECURITY.rstrip("/")):
        pytest.skip(f"Debian's security archive {DEBIAN_SECURITY} cannot be reached from this machine")
    with upgrade_lab(tmp_path, ["r1"], tag="m", plays_debian=False) as lab:
        mirrored = mirror_security(lab.repo, template_mirror(manifest, None, DEBIAN_KEYRING))
        print("\n" + mirrored.summary())
        # what `vrpipe upgrade` does without --security-url: the mirror when the repository serves it
        config = replace(lab.config(), security=SecuritySource(), security_mirror=True)
        report = upgrade_fleet(lab.manager, ["r1"], config, RolloutPolicy())
        (outcome,) = report.outcomes
        print(outcome.line())
        sources = lab.execute("r1", ["cat", SOURCES_FILE])
        assert f"URIs: {lab.url}\nSuites: trixie-security\n" in sources, sources
        assert "deb.debian.org" not in sources, sources
        assert outcome.status in ("upgraded", "up-to-date"), outcome.line()
        for change in outcome.changes:
            assert mirrored.packages.get(change.package) == change.new, change  # every change from the mirror
        assert lab.health("r1")["ok"] and old_code(lab, "r1") == []


def installed_version_on(lab, name):
    return lab.execute(name, ["dpkg-query", "-W", "-f=${Version}", LIBSSL])
