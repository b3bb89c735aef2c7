"""Pure logic of packaging and publishing: versions, unit handling in the maintainer scripts, the
Acquire-By-Hash mark, and the one-line summaries."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repo.hook import mark_by_hash
from repo.packages import Unit, check_version, systemd_units
from repo.publish import Result
from repo.render import render
from repo.verify import VerifyReport
from vrpipe.errors import VrpipeError


@pytest.mark.parametrize("version", ["1.0.0", "2.1~rc1", "10.0+hotfix2"])
def test_good_versions(version):
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", "v1.0", "1.0-1", "1:2.0", "1.0 beta"])
def test_bad_versions_are_named(version):
    with pytest.raises(VrpipeError, match="is not a Debian version"):
        check_version(version)


def test_units_enabled_and_restarted_by_kind(tmp_path):
    (tmp_path / "vr-metadata.service").write_text("[Service]\nExecStart=/x\n[Install]\nWantedBy=multi-user.target\n")
    (tmp_path / "vr-reapply.service").write_text("[Service]\nType=oneshot\n[Install]\nWantedBy=multi-user.target\n")
    (tmp_path / "vr-helper.service").write_text("[Service]\nExecStart=/y\n")
    assert systemd_units(tmp_path) == [
        Unit("vr-helper.service", enable=False, restart=True),
        Unit("vr-metadata.service", enable=True, restart=True),
        Unit("vr-reapply.service", enable=True, restart=False),
    ]
    assert systemd_units(tmp_path / "missing") == []


def test_postinst_enables_reapplies_and_restarts_only_when_systemd_runs():
    units = [
        Unit("vr-metadata.service", True, True),
        Unit("vr-reapply.service", True, False),
        Unit("vr-other.service", False, True),
    ]
    postinst = render("postinst.j2", units=units)
    assert "deb-systemd-helper enable 'vr-metadata.service'" in postinst
    assert "deb-systemd-helper enable 'vr-reapply.service'" in postinst
    # an enabled service is restarted, which starts it when this version brings it; others only if running
    assert "deb-systemd-invoke restart 'vr-metadata.service'" in postinst
    assert "try-restart 'vr-other.service'" in postinst
    assert "'vr-reapply.service' || true" not in postinst
    restart = postinst.index("deb-systemd-invoke restart")
    assert postinst.rindex("systemd_running", 0, restart) > postinst.index("vr-apply --reapply")
    assert render("postinst.j2", units=[]).count("deb-systemd") == 0


def test_mark_by_hash_once_before_the_checksums():
    release = "Origin: vrpipe\nCodename: stable\nMD5Sum:\n abc 1 main/binary-amd64/Packages\n"
    marked = mark_by_hash(release)
    assert marked.index("Acquire-By-Hash: yes\n") < marked.index("MD5Sum:")
    assert mark_by_hash(marked) == marked


def test_summaries():
    unchanged = Result("stable", {"vr-scripts": "1.0.0"}, seconds=0.1)
    assert unchanged.summary().startswith("stable: already up to date (vr-scripts 1.0.0)")
    new = Result("stable", {"vr-scripts": "1.0.1"}, {"vr-scripts": "1.0.0"}, Path("trees/7"), 0.42)
    assert new.summary() == (
        "stable: published vr-scripts 1.0.1; previous in stable-previous: vr-scripts 1.0.0; serving tree 7 in 0.42 s"
    )
    assert "2 problem(s)" in VerifyReport("here", ["a", "b"], 3, 1).summary()


def test_report_names_the_earliest_valid_until():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    until = {"dists/stable": now + timedelta(days=6, hours=23, minutes=59), "dists/security": now + timedelta(hours=30)}
    report = VerifyReport("here", indexes=2, packages=1, valid_until=until, now=now)
    assert report.summary().endswith("valid; valid for 1 d 6 h more (dists/security first, until 2026-12-02 18:00 UTC)")
    assert VerifyReport("here", now=now).time_left() == ""
    assert report.expires_within(timedelta(days=2)) and not report.expires_within(timedelta(hours=30))
    expired = VerifyReport("here", valid_until={"d": now - timedelta(hours=1)}, now=now)
    assert "valid for 0 d 0 h more" in expired.time_left()
