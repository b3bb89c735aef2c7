"""In-place upgrades of live routers (system containers) from a signed repository served on the control
network: a dry run changes nothing; a new version reaches every router while traffic flows through port
forwards, the load balancer and source NAT without a failed connection; an unreachable repository, one
signed by another key, and an SSH connection cut mid-upgrade each fail cleanly on a router that keeps
forwarding (and the retry completes); a broken postinst fails on the canary, which is rolled back.
Tests run in file order on one lab, each building on the versions the previous ones left.
"""

import contextlib
import io
import json
import threading

import pytest

from orchestration import cli
from orchestration.lab.upgrade_lab import repo_served, traffic
from orchestration.settings import CONFIG_FILE
from orchestration.upgrade.apt import OS_RELEASE, SOURCES_FILE
from orchestration.upgrade.inplace import read_versions, upgrade_fleet
from orchestration.upgrade.records import records
from orchestration.upgrade.rollout import RolloutPolicy
from repo import signing

from ..unit.test_upgrade_logic import refuses_older_releases
from .engine_fixtures import http_get, wait_for
from .orch_postgres import postgres_url  # noqa: F401 - fixture
from .repo_fixtures import copy_tree, resign
from .test_orch_lock import Holder
from .upgrade_fixtures import (
    POSTINST_FAILS,
    POSTINST_SLOW,
    POSTINST_STARTED,
    base_version,
    expiring,
    publish_version,
    release_date,
    upgrade_lab,
    version,
)

pytestmark = pytest.mark.e2e
ROUTERS = ("r1", "r2")
FRESH = "r3"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with upgrade_lab(tmp_path_factory.mktemp("upgrade"), ROUTERS) as test_lab:
        yield test_lab


@pytest.fixture(scope="module")
def fresh(lab):
    """A router created late, from the template: never upgraded, its apt lists without our repository."""
    lab.lab.create_router(FRESH)
    lab.manager.start(FRESH)
    return FRESH


def vrpipe(lab, *args, **settings):
    """Run the `vrpipe` command on the lab's state directory, with these manager settings added to its
    config file; returns (exit status, JSON result)."""
    lab.manager.config.save()
    saved = lab.manager.config.state_dir / CONFIG_FILE
    saved.write_text(json.dumps({**json.loads(saved.read_text()), **settings}))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["--state-dir", str(lab.manager.config.state_dir), "--json", *args])
    return code, json.loads(printed.getvalue())


def assert_forwards(lab, index, name):
    vm = lab.vms[name]
    assert [a.split(" from ")[0] for a in lab.forwards(index)] == [vm.name, vm.name], f"{name} stopped forwarding"


def test_dry_run_reports_the_plan_and_changes_nothing(lab):
    publish_version(lab.repo, version(1))
    before = {n: (lab.versions(n), lab.ruleset(n)) for n in ROUTERS}
    code, report = vrpipe(
        lab, "upgrade", "--dry-run", "--repo-url", lab.url, "--security-url", lab.url, "--security-suite", "security",
        "--security-keyring", lab.config().keyring,
    )  # fmt: skip
    assert code == 0, report
    for router in report["routers"]:
        assert router["status"] == "planned", router
        planned = {c["package"]: (c["from"], c["to"]) for c in router["changes"]}
        assert planned["vr-scripts"] == (base_version(), version(1))
        assert "vr-metadata.service" in router["restarts"]
        assert router["reboot_required"] == []
    assert {n: (lab.versions(n), lab.ruleset(n)) for n in ROUTERS} == before
    assert records(lab.manager.store) == {}


def test_the_security_suite_follows_each_routers_release(lab):
    os_release = lab.execute("r2", ["cat", OS_RELEASE])
    lab.manager.transport("r2").copy(
        os_release.replace("VERSION_CODENAME=trixie", "VERSION_CODENAME=bookworm"), OS_RELEASE
    )
    try:
        code, report = vrpipe(
            lab, "upgrade", "--dry-run", "--repo-url", lab.url, "--security-url", lab.url,
            "--security-keyring", lab.config().keyring,
        )  # fmt: skip
        sources = {name: lab.execute(name, ["cat", SOURCES_FILE]) for name in ROUTERS}
    finally:
        lab.manager.transport("r2").copy(os_release, OS_RELEASE)
    assert code == 0, report
    assert [r["status"] for r in report["routers"]] == ["planned", "planned"], report
    assert f"URIs: {lab.url}\nSuites: trixie-security\n" in sources["r1"], sources["r1"]
    assert f"URIs: {lab.url}\nSuites: bookworm-security\n" in sources["r2"], sources["r2"]


def test_new_version_reaches_every_router_in_place_without_dropping_traffic(lab):
    ruleset = lab.ruleset("r1")
    leases = lab.execute("r1", ["cat", "/var/lib/misc/dnsmasq.leases"])
    lines = []
    with traffic(lab.lab.public, 1, lab.vms["r1"]) as counts:
        wait_for(lambda: lab.forwards(1), "traffic before the upgrade")
        report = upgrade_fleet(lab.manager, ROUTERS, lab.config(), RolloutPolicy(), progress=lines.append)
    print(f"\ntraffic during the upgrade of r1: {counts}")
    assert report.ok, report.summary()
    assert [o.status for o in report.outcomes] == ["upgraded", "upgraded"], [o.line() for o in report.outcomes]
    assert counts["failed_connections"] == 0, counts
    assert counts["connections"] > 20 and counts["lost_pings"] <= 1, counts
    for index, name in enumerate(ROUTERS, 1):
        assert lab.versions(name) == {"vr-base": version(1), "vr-scripts": version(1)}
        health = lab.health(name)
        assert health["ok"] and health["version"] == version(1), health
        assert_forwards(lab, index, name)
    assert lab.ruleset("r1") == ruleset
    assert lab.execute("r1", ["cat", "/var/lib/misc/dnsmasq.leases"]) == leases
    vm = lab.vms["r1"]
    assert http_get(vm.ns, "http://10.1.1.1/latest/meta-data/instance-id") == (200, vm.name)
    assert lines[0].startswith("[1/2] r1: upgraded: vr-base") and lines[1].startswith("[2/2] r2: upgraded")
    code, listing = vrpipe(lab, "list")
    assert code == 0
    assert {r["name"]: (r["packages"]["vr-scripts"], r["last_upgrade"], r["lags"]) for r in listing} == {
        "r1": (version(1), "upgraded", False),
        "r2": (version(1), "upgraded", False),
    }


def test_a_router_locked_by_another_vrpipe_fails_and_stops_the_rollout_by_its_budget(lab):
    holder = Holder(lab.manager.store.url, "r2")
    try:
        assert holder.said("acquired", 60)
        code, report = vrpipe(lab, "upgrade", "--repo-url", lab.url, "--no-security", "r1", "r2", lock_timeout=2)
    finally:
        holder.kill()
    assert code == 1, report
    first, locked = report["routers"]
    assert first["status"] == "up-to-date", first
    assert locked["status"] == "failed", locked
    assert locked["error"] == "router 'r2' stayed locked by another vrpipe for 2s", locked
    assert report["stopped"] == "1 router failed, more than the failure budget of 0", report
    assert records(lab.manager.store)["r2"].outcome == "failed"
    assert lab.versions("r2")["vr-scripts"] == version(1)


def test_unreachable_repository_fails_cleanly_and_the_router_keeps_forwarding(lab):
    config = lab.config(repo_url="http://169.254.0.1:8099/", security=None)  # nothing listens there
    report = upgrade_fleet(lab.manager, ["r1"], config, RolloutPolicy())
    (outcome,) = report.outcomes
    assert not report.ok and outcome.status == "skipped", outcome.line()
    assert "repository check (apt-get update) failed" in outcome.error and "8099" in outcome.error, outcome.error
    assert lab.versions("r1")["vr-scripts"] == version(1)
    assert_forwards(lab, 1, "r1")


def test_repository_signed_by_another_key_is_refused(lab, tmp_path):
    tree = copy_tree(lab.repo.public.resolve(), tmp_path / "tree")
    other = tmp_path / "other-gnupg"
    try:
        resign(tree, "stable", other, signing.dev_key(other))
        with repo_served(lab.lab.host, tree, "169.254.0.1:8081") as url:
            report = upgrade_fleet(lab.manager, ["r1"], lab.config(repo_url=url, security=None), RolloutPolicy())
    finally:
        signing.stop_agent(other)
    (outcome,) = report.outcomes
    assert outcome.status == "skipped", outcome.line()
    assert "signature verification failed" in outcome.error and "Missing key" in outcome.error, outcome.error
    assert lab.versions("r1")["vr-scripts"] == version(1)
    assert_forwards(lab, 1, "r1")


def test_ssh_cut_mid_upgrade_fails_cleanly_and_a_retry_completes(lab):
    publish_version(lab.repo, version(2), POSTINST_SLOW)
    router = lab.manager.store.router("r1")
    started = lab.manager.config.state_dir / "containers/r1/upper" / POSTINST_STARTED
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(report=upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy()))
    )
    thread.start()
    with lab.ssh_cut() as cut:
        wait_for(started.exists, "the upgrade's postinst to start", timeout=60)
        cut(router.control_address)
        thread.join(timeout=120)
    (outcome,) = result["report"].outcomes
    assert outcome.status == "failed" and "connection lost while upgrading" in outcome.error, outcome.line()
    assert_forwards(lab, 1, "r1")
    retry = upgrade_fleet(lab.manager, ["r1"], lab.config(), RolloutPolicy())
    assert retry.ok, [o.line() for o in retry.outcomes]
    assert lab.versions("r1") == {"vr-base": version(2), "vr-scripts": version(2)}
    assert lab.health("r1")["version"] == version(2)
    assert_forwards(lab, 1, "r1")


def test_an_interrupted_dpkg_is_finished_before_the_upgrade(lab):
    cached = lab.execute("r2", ["ls", "/var/cache/apt/archives"]).split()
    deb = next(name for name in cached if name.startswith("vr-base_") and name.endswith(".deb"))
    lab.execute("r2", ["dpkg", "--unpack", f"/var/cache/apt/archives/{deb}"])  # unpacked, never configured
    assert "vr-base" in lab.execute("r2", ["dpkg", "--audit"])
    unpacked = deb.split("_")[1]
    assert read_versions(lab.manager, ["r2"])["r2"]["vr-base"] == f"{unpacked} (unpacked)"
    report = upgrade_fleet(lab.manager, ["r2"], lab.config(), RolloutPolicy())
    assert report.ok, [o.line() for o in report.outcomes]
    assert lab.execute("r2", ["dpkg", "--audit"]).strip() == ""
    assert lab.versions("r2") == {"vr-base": version(2), "vr-scripts": version(2)}
    assert_forwards(lab, 2, "r2")


def test_broken_postinst_fails_on_the_canary_which_is_rolled_back(lab):
    publish_version(lab.repo, version(3), POSTINST_FAILS)
    r2_before = lab.versions("r2")
    code, report = vrpipe(
        lab, "upgrade", "--canary", "r1", "--repo-url", lab.url, "--no-security", "r1", "r2",
    )  # fmt: skip
    assert code != 0
    canary, other = report["routers"]
    assert canary["status"] == "rolled-back", canary
    assert "post-installation script subprocess returned error exit status 1" in canary["error"], canary["error"]
    assert other["status"] == "not-reached", other
    assert "r1" in report["stopped"]
    assert lab.versions("r1") == {"vr-base": version(2), "vr-scripts": version(2)}
    assert lab.health("r1")["ok"]
    assert_forwards(lab, 1, "r1")
    assert lab.versions("r2") == r2_before
    assert records(lab.manager.store)["r1"].outcome == "rolled-back"


def test_list_shows_the_versions_of_routers_never_upgraded_or_not_reached_and_that_they_lag(lab, fresh):
    code, listing = vrpipe(lab, "list")
    assert code == 0
    row = {r["name"]: r for r in listing}[fresh]
    assert (row["packages"], row["versions_from"], row["lags"]) == (
        {"vr-base": base_version(), "vr-scripts": base_version()},
        "router",
        True,
    ), row
    holder = Holder(lab.manager.store.url, "r1")
    try:
        assert holder.said("acquired", 60)
        code, report = vrpipe(lab, "upgrade", "--repo-url", lab.url, "--no-security", "r1", fresh, lock_timeout=2)
    finally:
        holder.kill()
    assert code == 1 and [r["status"] for r in report["routers"]] == ["failed", "not-reached"], report
    assert report["routers"][1]["versions"]["vr-scripts"] == base_version(), report
    assert records(lab.manager.store)[fresh].packages["vr-scripts"] == base_version()
    code, listing = vrpipe(lab, "list")
    row = {r["name"]: r for r in listing}[fresh]
    assert (row["packages"]["vr-scripts"], row["versions_from"], row["lags"]) == (base_version(), "record", True), row


def test_an_older_copy_of_the_repository_is_refused_by_plan_and_run(lab, fresh):
    older, newest = release_date(lab.first_tree), release_date(lab.repo.public.resolve())
    assert older < newest
    with lab.serving(lab.first_tree):
        for dry_run in (["--dry-run"], []):
            code, report = vrpipe(lab, "upgrade", *dry_run, "--repo-url", lab.url, "--no-security", fresh)
            (router,) = report["routers"]
            assert code == 1 and router["status"] == "skipped", router
            for date in (older, newest):
                assert f"{date:%Y-%m-%d %H:%M:%S} UTC" in router["error"], router["error"]
    assert lab.versions(fresh)["vr-scripts"] == base_version()
    code, report = vrpipe(lab, "upgrade", "--dry-run", "--repo-url", lab.url, "--no-security", fresh)
    assert code == 0 and report["routers"][0]["status"] == "planned", report


def test_a_plan_warns_when_the_repository_expires_within_two_days(lab, tmp_path):
    tree = copy_tree(lab.repo.public.resolve(), tmp_path / "tree")
    expiring(tree, lab.repo.gnupghome, hours=30)
    with lab.serving(tree):
        code, report = vrpipe(lab, "upgrade", "--dry-run", "--repo-url", lab.url, "--no-security", "r1")
    (router,) = report["routers"]
    assert code == 0 and router["status"] == "planned", router
    (warning,) = router["warnings"]
    assert f"{lab.url} stable: its Release is valid only until" in warning and "(30 hours)" in warning, warning


def test_to_installs_an_older_version_across_the_fleet_with_canary_batches_and_checks(lab):
    publish_version(lab.repo, version(4))
    publish_version(lab.repo, version(5))  # stable has version 5, stable-previous version 4
    upgraded = upgrade_fleet(lab.manager, ROUTERS, lab.config(security=None), RolloutPolicy())
    assert upgraded.ok, [o.line() for o in upgraded.outcomes]
    code, report = vrpipe(lab, "upgrade", "--dry-run", "--to", version(1), "--repo-url", lab.url, "--no-security", "r1")
    assert code == 1 and report["routers"][0]["status"] == "skipped", report
    assert f"version {version(1)} is not in the repository" in report["routers"][0]["error"], report
    lines = []
    report = upgrade_fleet(
        lab.manager,
        ROUTERS,
        lab.config(security=None, to_version=version(4)),
        RolloutPolicy(canary="r2"),
        progress=lines.append,
    )
    assert report.ok, [o.line() for o in report.outcomes]
    assert lines[0].startswith(f"[1/2] r2: upgraded: vr-base {version(5)} -> {version(4)}"), lines
    for index, name in enumerate(ROUTERS, 1):
        assert lab.versions(name) == {"vr-base": version(4), "vr-scripts": version(4)}
        assert lab.health(name)["version"] == version(4)
        assert_forwards(lab, index, name)


def test_release_dates_are_kept_on_postgresql_too(request):
    refuses_older_releases(request.getfixturevalue("postgres_url"))
