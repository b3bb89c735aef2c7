"""The pure logic of in-place upgrades: apt's simulation parsed into changes, reboot and problem lines,
the sources file, the rollout's waves and stop rules, the post-check comparisons, and the store records."""

import argparse
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from orchestration.store import LockTimeout, Store
from orchestration.transports import TransportError
from orchestration.upgrade import apt, checks
from orchestration.upgrade import cli as upgrade_cli
from orchestration.upgrade.cli import version_text, versions_columns
from orchestration.upgrade.inplace import ROUTER_KEYRING, UpgradeConfig, UpgradeOutcome
from orchestration.upgrade.records import lagging, note_release, record, records
from orchestration.upgrade.rollout import RolloutPolicy, roll_out, stop_reason, waves
from vrpipe.errors import SettingsError

SIMULATION = """\
Reading package lists...
The following packages will be upgraded:
   libc6 vr-scripts
Inst libc6 [2.41-12] (2.41-12+deb13u1 Debian-Security:13/stable-security [amd64])
Inst vr-scripts [1.0.0] (1.0.1 vrpipe:stable [all])
Inst conntrack (1:1.4.8-2 Debian:13.1/stable [amd64])
Conf libc6 (2.41-12+deb13u1 Debian-Security:13/stable-security [amd64])
Conf vr-scripts (1.0.1 vrpipe:stable [all])
"""

DPKG_FAILURE = """\
Setting up vr-scripts (1.0.1) ...
dpkg: error processing package vr-scripts (--configure):
 installed vr-scripts package post-installation script subprocess returned error exit status 1
Errors were encountered while processing:
 vr-scripts
E: Sub-process /usr/bin/dpkg returned an error code (1)
"""


def test_simulation_gives_upgrades_and_new_packages_in_order():
    changes = apt.parse_simulation(SIMULATION)
    assert [str(c) for c in changes] == [
        "libc6 2.41-12 -> 2.41-12+deb13u1",
        "vr-scripts 1.0.0 -> 1.0.1",
        "conntrack (new) -> 1:1.4.8-2",
    ]
    assert changes[2].to_json() == {"package": "conntrack", "from": None, "to": "1:1.4.8-2"}
    assert apt.reboot_required(changes) == ["libc6"]
    assert apt.reboot_required([apt.PackageChange("linux-image-6.12.0-1-amd64", "", "6.12.5-1")])
    assert apt.parse_simulation("0 upgraded, 0 newly installed\n") == []


def test_install_pins_exact_versions_and_rollback_skips_new_packages():
    changes = apt.parse_simulation(SIMULATION)
    argv = apt.install(changes, 30)
    assert argv[4:8] == ["setsid", "--wait", "flock", apt.LOCK_FILE]
    assert argv[-3:] == ["libc6=2.41-12+deb13u1", "vr-scripts=1.0.1", "conntrack=1:1.4.8-2"]
    assert "DPkg::Lock::Timeout=30" in argv and "Dpkg::Options::=--force-confold" in argv
    assert "DEBIAN_FRONTEND=noninteractive" in argv
    back = apt.install(changes, 30, downgrade=True)
    assert back[-2:] == ["libc6=2.41-12", "vr-scripts=1.0.0"] and "--allow-downgrades" in back


def test_commands_that_need_stderr_never_become_shell_code():
    argv = apt.update(10)
    assert argv[:4] == ["sh", "-c", 'exec "$@" 2>&1', "sh"]
    assert "--error-on=any" in argv and f"Dir::Etc::SourceParts={apt.SOURCES_DIR}" in argv


def test_problems_quote_the_dpkg_error_with_its_reason():
    found = apt.problems(DPKG_FAILURE)
    assert found[0].startswith("dpkg: error processing package vr-scripts (--configure): installed vr-scripts")
    assert found[-1] == "E: Sub-process /usr/bin/dpkg returned an error code (1)"
    assert apt.problems("just one line\nand the last\n") == ["just one line", "and the last"]


def test_versions_and_units_from_dpkg_query():
    text = "vr-base ii  1.0.0\nvr-scripts iF  1.0.1\nvr-old rc  0.9\nlibc6 iUR 2.41-12\n"
    assert apt.parse_versions(text) == {
        "vr-base": "1.0.0",
        "vr-scripts": "1.0.1 (half-configured)",
        "libc6": "2.41-12 (unpacked)",
    }
    assert apt.bare_version("1.0.1 (half-configured)") == "1.0.1"
    files = "/usr/lib/systemd/system/vr-metadata.service\n/opt/vr/bin/vr\n\n/lib/systemd/system/ssh@.service\n"
    assert apt.service_units(files) == ["vr-metadata.service"]
    shown = "Type=oneshot\nActiveState=active\nId=vr-boot.service\n\n"
    shown += "Type=simple\nActiveState=active\nId=vr-metadata.service\n"
    assert apt.restartable(shown) == ["vr-metadata.service"]


def test_sources_name_our_channels_with_previous_and_debian_security():
    config = UpgradeConfig(repo_url="http://169.254.0.1:8080/", channels=("stable", "security"))
    text = apt.sources_text(config.sources("trixie"))
    suites = "stable stable-previous stable-previous-2 security security-previous security-previous-2"
    assert f"Suites: {suites}\n" in text  # the repository keeps three versions of each channel
    two = UpgradeConfig(repo_url="http://169.254.0.1:8080/", keep=2)
    assert "Suites: stable stable-previous\n" in apt.sources_text(two.sources("trixie"))
    with pytest.raises(SettingsError, match="keep 11"):
        UpgradeConfig(keep=11)
    assert "URIs: http://deb.debian.org/debian-security/\nSuites: trixie-security\n" in text
    assert text.count("Signed-By: ") == 2
    only_ours = UpgradeConfig(security=None)
    assert not only_ours.needs_release
    assert apt.sources_text(only_ours.sources()).count("Types: deb") == 1


def test_the_security_suite_comes_from_our_mirror_by_default_when_it_is_served():
    parser = argparse.ArgumentParser()
    upgrade_cli.add_parser(parser.add_subparsers())
    config, _ = upgrade_cli.config_from(parser.parse_args(["upgrade"]))
    assert config.security_mirror and config.needs_release
    mirrored = config.sources("trixie", mirrored=True)[1]
    assert (mirrored.url, mirrored.suites, mirrored.keyring) == (config.repo_url, ("trixie-security",), ROUTER_KEYRING)
    assert config.sources("trixie")[1].url == apt.DEBIAN_SECURITY  # not served: Debian's own
    given, _ = upgrade_cli.config_from(parser.parse_args(["upgrade", "--security-url", "http://m.example/d/"]))
    assert not given.security_mirror and given.sources("trixie")[1].url == "http://m.example/d/"
    assert apt.served_query("http://x/")[-1] == "http://x/"  # the URL is an argument, never code


def test_the_security_suite_follows_the_routers_release_unless_given():
    default = UpgradeConfig()
    assert default.needs_release
    ours = ("stable", "stable-previous", "stable-previous-2")
    assert [s.suites for s in default.sources("bookworm")] == [ours, ("bookworm-security",)]
    assert [s.suites for s in default.sources("trixie")][1] == ("trixie-security",)
    fixed = UpgradeConfig(security=apt.SecuritySource(suite="bookworm-security"))
    assert not fixed.needs_release and fixed.sources("trixie")[1].suites == ("bookworm-security",)
    os_release = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
    assert apt.release_codename(os_release) == "bookworm"
    assert apt.release_codename("VERSION_CODENAME='trixie'\n") == "trixie"
    assert apt.release_codename('PRETTY_NAME="Debian GNU/Linux forky/sid"\n') == ""


@pytest.mark.parametrize(
    "bad",
    [
        lambda: UpgradeConfig(channels=()),
        lambda: UpgradeConfig(repo_url="ftp://x/"),
        lambda: UpgradeConfig(keyring="relative.gpg"),
        lambda: apt.AptSource("http://x/", ("Bad Suite",), "/k"),
        lambda: apt.SecuritySource(suite="Bad Suite"),
        lambda: apt.SecuritySource(url="deb.debian.org"),
        lambda: RolloutPolicy(batch="0"),
        lambda: RolloutPolicy(batch="150%"),
        lambda: RolloutPolicy(batch="x"),
        lambda: RolloutPolicy(failure_budget=-1),
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_waves_put_the_canary_alone_first_then_batches():
    names = [f"r{i}" for i in range(1, 11)]
    assert waves(names, RolloutPolicy()) == [["r1"], *[[n] for n in names[1:]]]
    assert waves(names, RolloutPolicy(canary="r5", batch="4")) == [
        ["r5"],
        ["r1", "r2", "r3", "r4"],
        ["r6", "r7", "r8", "r9"],
        ["r10"],
    ]
    assert [len(w) for w in waves(names, RolloutPolicy(batch="50%"))] == [1, 5, 4]
    assert waves(["r1"], RolloutPolicy(batch="10%")) == [["r1"]]
    with pytest.raises(ValueError, match="canary"):
        waves(names, RolloutPolicy(canary="r99"))


def outcome(name, status):
    return UpgradeOutcome(name, status, error=f"{name} {status}")


def test_stop_rules():
    policy = RolloutPolicy(failure_budget=1)
    assert stop_reason([outcome("r1", "upgraded"), outcome("r2", "skipped")], policy, "r1") is None
    assert "budget" in stop_reason([outcome("r2", "skipped"), outcome("r3", "failed")], policy, "r1")
    assert "canary r1" in stop_reason([outcome("r1", "skipped")], policy, "r1")
    assert "new version failed on r2" in stop_reason([outcome("r2", "rolled-back")], policy, "r1")


def make_outcome(name, status, error):
    return UpgradeOutcome(name, status, error=error)


def test_rollout_stops_and_leaves_the_rest_not_reached():
    results = {"r1": "upgraded", "r2": "rolled-back"}
    upgraded, finished = [], []

    def upgrade_one(name):
        upgraded.append(name)
        return outcome(name, results.get(name, "upgraded"))

    lines = []
    outcomes, reason = roll_out(
        ["r1", "r2", "r3", "r4"], RolloutPolicy(), upgrade_one, make_outcome, lines.append, finished.append
    )
    assert upgraded == ["r1", "r2"]
    assert [o.status for o in outcomes] == ["upgraded", "rolled-back", "not-reached", "not-reached"]
    assert "r2" in reason
    assert lines[0].startswith("[1/4] r1: upgraded")
    assert [o.name for o in finished] == ["r1", "r2"]


def test_a_router_whose_upgrade_raises_fails_and_counts_against_the_budget():
    def upgrade_one(name):
        if name in ("r2", "r3"):
            raise LockTimeout(f"router {name!r} stayed locked for 1s")
        if name == "r4":
            raise KeyError(name)  # a bug: still this router's failure, named by its type
        return outcome(name, "upgraded")

    names = ["r1", "r2", "r3", "r4", "r5"]
    outcomes, reason = roll_out(names, RolloutPolicy(), upgrade_one, make_outcome, lambda line: None)
    assert [o.status for o in outcomes] == ["upgraded", "failed", "not-reached", "not-reached", "not-reached"]
    assert outcomes[1].error == "router 'r2' stayed locked for 1s"
    assert "1 router failed, more than the failure budget of 0" in reason

    outcomes, reason = roll_out(
        names, RolloutPolicy(batch="2", failure_budget=1), upgrade_one, make_outcome, lambda line: None
    )
    assert [o.status for o in outcomes] == ["upgraded", "failed", "failed", "not-reached", "not-reached"]
    assert "2 routers failed" in reason

    outcomes, reason = roll_out(names, RolloutPolicy(failure_budget=3), upgrade_one, make_outcome, lambda line: None)
    assert [o.status for o in outcomes] == ["upgraded", "failed", "failed", "failed", "upgraded"]
    assert outcomes[3].error == "KeyError: 'r4'" and reason is None


def snapshot(**changes):
    base = checks.Snapshot(
        health={"ok": True, "version": "1.0.0"},
        ruleset="table inet vr { }",
        leases=frozenset({("02:00:00:01:00:0a", "10.1.1.10")}),
        active=frozenset({"dnsmasq.service", "ssh.service"}),
        versions={"vr-base": "1.0.0", "vr-scripts": "1.0.0"},
        last_apply="2026-01-01 10:00:00,000 " + '{"ok":true,"kind":"state","version":"1.0.0"}',
    )
    return replace(base, **changes)


def test_post_checks_pass_when_only_versions_moved_and_the_state_was_reapplied():
    after = snapshot(
        health={"ok": True, "version": "1.0.1"},
        versions={"vr-base": "1.0.1", "vr-scripts": "1.0.1"},
        last_apply="2026-01-01 10:01:00,000 " + '{"ok":true,"kind":"reapply","version":"1.0.1"}',
    )
    assert checks.post_check_problems(snapshot(), after, {"vr-base": "1.0.1", "vr-scripts": "1.0.1"}) == []


def test_post_checks_name_every_difference():
    after = snapshot(
        health={"ok": False, "problems": ["dnsmasq is not running"], "version": "1.0.0"},
        ruleset="table inet vr { chain x { } }",
        leases=frozenset(),
        active=frozenset({"ssh.service"}),
    )
    problems = checks.post_check_problems(snapshot(), after, {"vr-scripts": "1.0.1"})
    text = "\n".join(problems)
    for expected in (
        "vr-health not ok: dnsmasq is not running",
        "versions not as planned: vr-scripts is 1.0.0, not 1.0.1",
        "no longer active: dnsmasq.service",
        "the nftables ruleset changed",
        "DHCP leases lost: 10.1.1.10",
        "vr-health reports version 1.0.0, not 1.0.1",
        "not re-applied by vr-scripts 1.0.1",
    ):
        assert expected in text, text


def test_pre_checks_want_health_and_free_space():
    assert checks.pre_check_problems(snapshot(), 500, 64) == []
    unhealthy = snapshot(health={"ok": False, "problems": ["haproxy is not running"]})
    assert checks.pre_check_problems(unhealthy, 10, 64) == [
        "vr-health not ok: haproxy is not running",
        "only 10 MiB free on /var, 64 MiB needed",
    ]


def test_leases_parse_mac_and_address():
    text = "1764240000 02:00:00:01:00:0a 10.1.1.10 vm0 01:02:00:00:01:00:0a\n\n"
    assert checks.parse_leases(text) == {("02:00:00:01:00:0a", "10.1.1.10")}


def test_store_keeps_versions_and_last_outcome_and_shows_laggards(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    try:
        for name in ("r1", "r2", "r3"):
            store.add_router(name, "container", f"169.254.1.{len(store.routers()) + 2}")
        record(store, "r1", {"vr-scripts": "1.0.10"}, "upgraded")
        record(store, "r2", {"vr-scripts": "1.0.9"}, "rolled-back", "postinst failed")
        record(store, "r2", {}, "skipped", "unreachable")  # no versions known: the old ones stay
        found = records(store)
        assert set(found) == {"r1", "r2"}
        assert found["r2"].packages == {"vr-scripts": "1.0.9"}
        assert (found["r2"].outcome, found["r2"].detail) == ("skipped", "unreachable")
        assert found["r1"].upgraded_at is not None
        assert lagging({n: r.packages for n, r in found.items()}) == {"r2"}  # Debian order: 1.0.9 < 1.0.10
        store.remove_router("r1")
        store.add_router("r1", "container", "169.254.1.9")
        assert "r1" not in records(store)  # a new router of the same name has no record yet
    finally:
        store.close()


class FakeRouters:
    """What versions_columns needs of a manager: the store, and routers that answer dpkg-query."""

    def __init__(self, store, answers):
        self.store, self.answers = store, answers

    def transport(self, name):
        if name not in self.answers:
            raise TransportError(f"router {name}: no answer")
        return SimpleNamespace(execute=lambda argv, input=None: (0, self.answers[name]))


def test_listing_shows_recorded_or_read_versions_of_every_router_and_which_lag(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    try:
        for name in ("r1", "r2", "r3", "r4"):
            store.add_router(name, "container", f"169.254.1.{len(store.routers()) + 2}")
        record(store, "r1", {"vr-base": "1.0.1", "vr-scripts": "1.0.1"}, "upgraded")
        answers = {
            "r1": "vr-base ii  9.9\nvr-scripts ii  9.9\n",  # has a record: not asked
            "r2": "vr-base ii  1.0.0\nvr-scripts ii  1.0.0\n",  # never upgraded: read
            "r3": "vr-base ii  1.0.1\nvr-scripts iF  1.0.1\n",  # dpkg left vr-scripts half-configured
        }  # r4 does not answer
        rows = [{"name": n, "status": "running"} for n in ("r1", "r2", "r3", "r4")]
        rows = {r["name"]: r for r in versions_columns(FakeRouters(store, answers), rows)}
        assert {n: (r["packages"].get("vr-scripts"), r["versions_from"], r["lags"]) for n, r in rows.items()} == {
            "r1": ("1.0.1", "record", False),
            "r2": ("1.0.0", "router", True),
            "r3": ("1.0.1 (half-configured)", "router", False),
            "r4": (None, None, False),
        }
        assert version_text(rows["r2"]) == "vr-scripts 1.0.0 (lags) vr-base 1.0.0"
        assert version_text(rows["r3"]) == "vr-scripts 1.0.1 (half-configured) vr-base 1.0.1"
        assert version_text(rows["r1"]) == "vr-scripts 1.0.1 vr-base 1.0.1 last upgrade upgraded"
        assert version_text(rows["r4"]) == "vr-scripts ? vr-base ?"
    finally:
        store.close()


INRELEASE = """\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: vrpipe
Codename: stable
Date: Tue, 01 Dec 2026 12:49:32 UTC
Valid-Until: Tue, 08 Dec 2026 12:49:32 UTC
Architectures: amd64
-----BEGIN PGP SIGNATURE-----

iQ==
-----END PGP SIGNATURE-----
"""


def test_release_dates_and_where_apt_keeps_them():
    release = apt.parse_release(INRELEASE)
    assert release.date == datetime(2026, 12, 1, 12, 49, 32, tzinfo=UTC)
    assert release.valid_until == datetime(2026, 12, 8, 12, 49, 32, tzinfo=UTC)
    assert apt.parse_release("Date: Tue, 01 Dec 2026 12:49:32 UTC\n").valid_until is None
    with pytest.raises(ValueError, match="no Date"):
        apt.parse_release("Origin: vrpipe\n")
    with pytest.raises(ValueError, match="no such file"):
        apt.parse_release("")
    now = datetime(2026, 12, 7, 12, 49, 32, tzinfo=UTC)
    warning = checks.expiry_warning("http://x/ stable", release, now)
    assert warning.startswith("http://x/ stable: its Release is valid only until 2026-12-08 12:49 UTC (24 hours)")
    assert checks.expiry_warning("x", release, now - timedelta(days=1)) is None
    assert checks.expiry_warning("x", replace(release, valid_until=None), now) is None
    refused = checks.rollback_problem("http://x/ stable", release, release.date + timedelta(days=1))
    assert "dated 2026-12-01 12:49:32 UTC, older than the one of 2026-12-02 12:49:32 UTC seen before" in refused
    assert (
        apt.list_file("http://169.254.0.1:8080/", "stable")
        == "/var/lib/apt/lists/169.254.0.1:8080_dists_stable_InRelease"
    )
    assert (
        apt.list_file("https://a_b.example/debian/", "trixie-security", "Release")
        == "/var/lib/apt/lists/a%5fb.example_debian_dists_trixie-security_Release"
    )


def test_the_store_refuses_a_release_older_than_one_seen(tmp_path):
    refuses_older_releases(f"sqlite:///{tmp_path / 'vrpipe.db'}")


def refuses_older_releases(store_url):
    """The store at store_url (SQLite here, PostgreSQL in tests/e2e) keeps the newest Release date."""
    store = Store(store_url)
    url, day = "http://169.254.0.1:8080/", datetime(2026, 12, 1, tzinfo=UTC)
    try:
        assert note_release(store, url, "stable", day) is None
        assert note_release(store, url, "stable", day + timedelta(hours=1)) is None
        assert note_release(store, url, "stable", day + timedelta(hours=1)) is None  # the same one again
        assert note_release(store, url, "stable", day) == day + timedelta(hours=1)
        assert note_release(store, url, "security", day) is None  # per channel
        assert note_release(store, "http://169.254.0.1:8081/", "stable", day) is None  # per repository
    finally:
        store.close()


def test_versions_available_from_apt_cache_madison():
    text = (
        " vr-scripts | 1.0.0+up5 | http://169.254.0.1:8080 stable/main amd64 Packages\n"
        " vr-scripts | 1.0.0+up4 | http://169.254.0.1:8080 stable-previous/main amd64 Packages\n"
        "    vr-base | 1.0.0+up5 | http://169.254.0.1:8080 stable/main amd64 Packages\n"
    )
    assert apt.parse_available(text) == {"vr-scripts": {"1.0.0+up5", "1.0.0+up4"}, "vr-base": {"1.0.0+up5"}}
    assert UpgradeConfig(to_version="1:1.0.0+up4~rc1").to_version == "1:1.0.0+up4~rc1"
    with pytest.raises(ValueError, match="not a Debian version"):
        UpgradeConfig(to_version="latest; rm -rf /")


def test_a_ruleset_is_the_same_whatever_order_nft_lists_set_elements_in():
    # what an element-level update and a whole load of the same state listed (seen on a lab router)
    a, b = "203.0.113.11 . tcp . 2200 . 0.0.0.0/0", "203.0.113.11 . tcp . 80 . 0.0.0.0/0"
    updated = f"set s {{\n\t\telements = {{ {a},\n\t\t\t     {b} }}\n}}"
    loaded = f"set s {{\n\t\telements = {{ {b},\n\t\t\t     {a} }}\n}}"
    assert checks.same_ruleset(updated) == checks.same_ruleset(loaded)
    assert checks.same_ruleset(updated) != checks.same_ruleset(loaded.replace("2200", "2201"))


def test_a_snapshot_kept_on_the_router_reads_back_the_same():
    snapshot = checks.Snapshot(
        health={"ok": True, "version": "1.0.1"},
        ruleset="table inet vr {\n}\n",
        leases=frozenset({("52:54:00:00:00:01", "10.1.1.10")}),
        active=frozenset({"haproxy.service", "ssh.service"}),
        versions={"vr-scripts": "1.0.1"},
        last_apply='2026-12-01 {"ok": true}',
    )
    assert checks.Snapshot.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot


def test_reboot_required_is_recorded_kept_and_listed(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    try:
        store.add_router("r1", "container", "169.254.1.2")
        record(store, "r1", {"vr-scripts": "1.0.1"}, "upgraded", reboot_required=["linux-image-amd64"])
        record(store, "r1", {"vr-scripts": "1.0.1"}, "up-to-date")  # not read again: kept
        assert records(store)["r1"].reboot_required == ["linux-image-amd64"]
        rows = versions_columns(FakeRouters(store, {}), [{"name": "r1", "status": "running"}])
        assert version_text(rows[0]).endswith("last upgrade up-to-date reboot required (linux-image-amd64)")
        record(store, "r1", {}, reboot_required=[])  # rebooted
        assert records(store)["r1"].reboot_required == []
        rows = versions_columns(FakeRouters(store, {}), [{"name": "r1", "status": "running"}])
        assert "reboot" not in version_text(rows[0])
    finally:
        store.close()
