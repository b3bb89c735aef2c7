"""A real apt client (Debian 13 chroot) against our repository served on loopback: it installs
vr-scripts and the router commands run; it takes a newer version and goes back to the previous one;
apt-get update running while versions are published one after another never sees a mix of trees; and
the last `keep` versions stay installable.
"""

import re
import threading
import time
from dataclasses import replace

import pytest

from repo import signing
from repo.packages import systemd_units
from repo.publish import publish
from repo.render import SOURCES
from repo.serve import serving

from .apt_client import apt_client
from .repo_fixtures import throwaway_config

pytestmark = pytest.mark.e2e
SUITES = "stable stable-previous"
HASH_ERRORS = re.compile(r"Hash Sum mismatch|File has unexpected size|Mirror sync in progress")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    cfg = throwaway_config(tmp_path_factory.mktemp("apt"))
    publish(cfg, version="1.0.0")
    try:
        with serving(cfg.public) as url:
            yield cfg, url
    finally:
        signing.stop_agent(cfg.gnupghome)


@pytest.fixture(scope="module")
def client(repo, tmp_path_factory):
    cfg, url = repo
    with apt_client(tmp_path_factory.mktemp("apt-client")) as chroot:
        chroot.use_repository(url, SUITES, cfg.keyring)
        yield chroot


def engine_version(client):
    """The version the installed engine reports (stamped at build time)."""
    code = "import sys; sys.path.insert(0, '/opt/vr/lib'); import vr; print(vr.__version__)"
    return client.run("python3", "-c", code).stdout.strip()


def test_install_and_run_router_commands(client):
    client.update()
    client.install("vr-scripts")
    assert client.installed_version("vr-scripts") == "1.0.0"
    assert client.installed_version("vr-base") == "1.0.0"
    assert engine_version(client) == "1.0.0"
    launchers = sorted(p.name for p in (client.root / "opt/vr/bin").iterdir())
    assert "vr-apply" in launchers and "vr-health" in launchers, launchers
    for launcher in ("vr-apply", "vr-health", "vr-state", "vr-cmd"):
        assert "usage" in client.run(f"/opt/vr/bin/{launcher}", "--help").stdout.lower()
    for unit in systemd_units(SOURCES / "systemd"):
        # is_symlink, not exists: the link points at /usr/lib/... inside the chroot
        wants = (client.root / "etc/systemd/system").glob("*.wants")
        assert any((folder / unit.name).is_symlink() for folder in wants) == unit.enable, unit


def test_upgrade_takes_new_version_and_downgrade_returns(repo, client):
    cfg, _ = repo
    client.install("vr-scripts=1.0.0", "vr-base=1.0.0")
    publish(cfg, version="1.0.1")
    client.update()
    client.run("apt-get", "install", "-y", "-q", "--only-upgrade", "vr-scripts")
    assert client.installed_version("vr-scripts") == "1.0.1"
    assert engine_version(client) == "1.0.1"
    client.install("vr-scripts=1.0.0")  # from stable-previous
    assert client.installed_version("vr-scripts") == "1.0.0"
    assert engine_version(client) == "1.0.0"


def test_update_during_publishes_never_sees_a_mix(repo, client):
    cfg, _ = repo
    versions = [f"1.1.{n}" for n in range(5)]
    done = threading.Event()
    updates = []

    def update_loop():
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline and len(updates) < 500:
            updates.append(client.update(check=False))

    updater = threading.Thread(target=update_loop)
    updater.start()
    try:
        for version in versions:
            publish(cfg, version=version)
    finally:
        done.set()
        updater.join()
    for update in updates:
        output = update.stdout + update.stderr
        assert update.returncode == 0 and not HASH_ERRORS.search(output), output
    fetched_new_indexes = sum(" stable/main amd64 Packages" in u.stdout for u in updates)
    print(f"\n{len(updates)} apt-get updates during {len(versions)} publishes, {fetched_new_indexes} got new indexes")
    assert fetched_new_indexes >= 2, "the updates did not overlap the publishes"
    client.update()
    policy = client.run("apt-cache", "policy", "vr-scripts").stdout
    assert f"Candidate: {versions[-1]}" in policy, policy


def test_the_last_keep_versions_stay_installable(client, tmp_path):
    cfg = replace(throwaway_config(tmp_path), keep=3)
    try:
        for version in ("2.0.0", "2.0.1", "2.0.2", "2.0.3"):
            publish(cfg, version=version)
        suites = ["stable", *cfg.history("stable")]
        assert suites == ["stable", "stable-previous", "stable-previous-2"]
        with serving(cfg.public) as url:
            client.use_repository(url, " ".join(suites), cfg.keyring)
            client.update()
            madison = client.run("apt-cache", "madison", "vr-scripts").stdout
            assert set(re.findall(r"\|\s+(\S+) \|", madison)) == {"2.0.1", "2.0.2", "2.0.3"}, madison
            for version in ("2.0.1", "2.0.3", "2.0.2"):
                client.install(f"vr-scripts={version}", f"vr-base={version}")
                assert client.installed_version("vr-scripts") == version == engine_version(client)
            assert client.install("vr-scripts=2.0.0", check=False).returncode != 0  # dropped out
        pool = sorted(p.name for p in cfg.dir.glob("work/pool/main/v/vr-scripts/*"))
        assert pool == [f"vr-scripts_{v}_all.deb" for v in ("2.0.1", "2.0.2", "2.0.3")]  # 2.0.0 cleaned up
    finally:
        signing.stop_agent(cfg.gnupghome)
