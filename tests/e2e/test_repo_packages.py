"""The router packages as dpkg-deb and lintian see them: identical bytes from two builds, no lintian
errors, root-owned files in the router's layout, the version stamped into the engine, and maintainer
scripts that are valid shell.
"""

import subprocess

import pytest

from repo.packages import ROUTER_KEYRING, build_keyring_package, build_packages, engine_version
from repo.render import SOURCES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    return {deb.name.split("_")[0]: deb for deb in build_packages(tmp_path_factory.mktemp("debs"), "9.8.7")}


def dpkg_deb(*argv):
    return subprocess.run(["dpkg-deb", *argv], capture_output=True, text=True, check=True).stdout


def test_two_builds_give_identical_bytes(tmp_path):
    first = build_packages(tmp_path / "first")
    second = build_packages(tmp_path / "second")
    assert [d.name for d in first] == [f"vr-base_{engine_version()}_all.deb", f"vr-scripts_{engine_version()}_all.deb"]
    assert [d.read_bytes() for d in first] == [d.read_bytes() for d in second]


def test_lintian_reports_no_errors(debs):
    checked = subprocess.run(["lintian", "--fail-on", "error", *debs.values()], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "E: " not in checked.stdout


def test_vr_scripts_layout_owner_and_version(debs, tmp_path):
    listing = dpkg_deb("--contents", debs["vr-scripts"])
    assert all(" root/root " in line for line in listing.splitlines()), listing
    for launcher in (SOURCES / "bin").iterdir():
        assert f"./opt/vr/bin/{launcher.name}" in listing
    for unit in (SOURCES / "systemd").iterdir():
        assert f"./usr/lib/systemd/system/{unit.name}" in listing
    assert "./opt/vr/lib/vr/__init__.py" in listing and "__pycache__" not in listing
    dpkg_deb("--extract", debs["vr-scripts"], tmp_path)
    assert '__version__ = "9.8.7"' in (tmp_path / "opt/vr/lib/vr/__init__.py").read_text()
    fields = dpkg_deb("--field", debs["vr-scripts"])
    assert "Version: 9.8.7" in fields and "Depends: vr-base (>= 9.8.7)" in fields


def test_vr_base_depends_on_the_router_package_set(debs):
    depends = dpkg_deb("--field", debs["vr-base"], "Depends")
    for package in ("nftables", "dnsmasq", "haproxy", "openssh-server", "python3-jinja2", "conntrack"):
        assert package in depends


def test_maintainer_scripts_are_valid_shell(debs, tmp_path):
    dpkg_deb("--control", debs["vr-scripts"], tmp_path)
    for script in ("postinst", "prerm", "postrm"):
        subprocess.run(["sh", "-n", tmp_path / script], check=True)
    postinst = (tmp_path / "postinst").read_text()
    assert "/opt/vr/bin/vr-apply --reapply" in postinst
    assert "[ -d /run/systemd/system ]" in postinst


def test_keyring_package_is_reproducible_lintian_clean_and_links_the_router_keyring(tmp_path):
    first = build_keyring_package(tmp_path / "first", b"keys", 4, 1_700_000_000)
    second = build_keyring_package(tmp_path / "second", b"keys", 4, 1_700_000_000)
    assert first.name == "vr-archive-keyring_4_all.deb" and first.read_bytes() == second.read_bytes()
    checked = subprocess.run(["lintian", "--fail-on", "error", first], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dpkg_deb("--extract", first, tmp_path / "root")
    assert (tmp_path / "root" / ROUTER_KEYRING.relative_to("/")).read_bytes() == b"keys"  # a link inside the root
    assert "conffiles" not in dpkg_deb("--info", first)
    depends = dpkg_deb("--field", build_packages(tmp_path / "debs", "9.8.7")[0], "Depends")
    assert "vr-archive-keyring" in depends
