"""Signatures that do not expire by neglect: the shipped systemd service and timer are valid units whose
command re-signs every distribution without publishing a package, an apt client (Debian 13 chroot)
fetches the re-signed Release, and verify-repo reports how long the served Release files stay valid.
"""

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from debian.deb822 import Release

from repo import signing
from repo.publish import publish
from repo.render import PROJECT
from repo.serve import serving

from .apt_client import apt_client
from .repo_fixtures import invoke, throwaway_config

pytestmark = pytest.mark.e2e
UNITS = PROJECT / "repo" / "systemd"
SHIPPED_CHECKOUT = "/srv/vrpipe"


@pytest.fixture
def where(tmp_path):
    yield tmp_path
    signing.stop_agent(tmp_path / "gnupg")


def installed_units(dest: Path) -> Path:
    """The shipped units as an operator installs them, for this checkout instead of /srv/vrpipe."""
    dest.mkdir()
    for unit in UNITS.iterdir():
        (dest / unit.name).write_text(unit.read_text().replace(SHIPPED_CHECKOUT, str(PROJECT)))
    return dest


def unit_settings(unit: Path) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", unit.read_text(), flags=re.M))


def valid_until(cfg, codename: str) -> str:
    return Release((cfg.public / "dists" / codename / "Release").read_text())["Valid-Until"]


def test_shipped_units_are_valid(tmp_path):
    units = installed_units(tmp_path / "units")
    checked = subprocess.run(
        ["systemd-analyze", "verify", *sorted(units.iterdir())], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    timer = unit_settings(units / "vrpipe-repo-refresh.timer")
    assert timer["OnCalendar"] == "daily" and timer["Persistent"] == "true"
    service = unit_settings(units / "vrpipe-repo-refresh.service")
    assert service["Type"] == "oneshot" and service["WorkingDirectory"] == str(PROJECT)


def test_the_services_commands_re_sign_and_the_client_takes_it(where, tmp_path):
    assert invoke(where, "publish-repo", "--version", "1.0.1").returncode == 0  # newer than the checkout's
    cfg = throwaway_config(where)
    before = valid_until(cfg, "security")
    service = unit_settings(installed_units(tmp_path / "units") / "vrpipe-repo-refresh.service")
    with apt_client(tmp_path) as client, serving(cfg.public) as url:
        client.use_repository(url, "stable security", cfg.keyring)
        client.update()
        time.sleep(1.1)  # Date and Valid-Until have one-second resolution
        env = {**os.environ, "INVOKE_REPO_DIR": str(cfg.dir), "INVOKE_REPO_GNUPGHOME": str(cfg.gnupghome)}
        for command in (service["ExecStart"], service["ExecStartPost"]):
            argv = shlex.split(command)
            ran = subprocess.run(argv, cwd=service["WorkingDirectory"], env=env, capture_output=True, text=True)
            assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
        assert "valid for 6 d 23 h more" in ran.stdout, ran.stdout
        assert valid_until(cfg, "security") != before
        updated = client.update()
        assert re.search(r"^Get:\d+ \S+ security InRelease", updated.stdout, flags=re.M), updated.stdout
        policy = client.run("apt-cache", "policy", "vr-scripts").stdout
        assert "Candidate: 1.0.1" in policy, policy  # the refresh published no package of its own


def test_refresh_of_a_repository_never_published_is_refused(where):
    refused = invoke(where, "publish-repo", "--refresh")
    assert refused.returncode != 0 and "has never been published: nothing to refresh" in refused.stderr
    assert not (where / "gnupg").exists()


def test_verify_repo_reports_the_time_left(where):
    publish(throwaway_config(where), version="1.0.0")
    verified = invoke(where, "verify-repo")
    assert verified.returncode == 0, verified.stderr
    assert "warning" not in verified.stdout
    left = r"valid for 6 d 23 h more \(dists/\S+ first, until \d{4}-\d\d-\d\d \d\d:\d\d UTC\)"
    assert re.search(left, verified.stdout), verified.stdout
    shortened = invoke(where, "publish-repo", "--refresh", valid_for="1d")
    assert shortened.returncode == 0, shortened.stderr
    verified = invoke(where, "verify-repo")
    assert "valid for 0 d 23 h more" in verified.stdout
    assert "warning: valid for less than 2 days: is the daily refresh running?" in verified.stdout
