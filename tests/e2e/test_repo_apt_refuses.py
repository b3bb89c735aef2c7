"""A real apt client (Debian 13 chroot) refuses a broken repository with its own error, and installs
nothing from it: a tampered Packages index, an unsigned Release, a Release signed by another key, and
an expired Valid-Until (a replayed old repository, correctly signed).
"""

import re

import pytest

from repo import signing
from repo.publish import publish
from repo.serve import serving

from .apt_client import apt_client
from .repo_fixtures import copy_tree, expire, resign, tamper_packages, throwaway_config, unsign

pytestmark = pytest.mark.e2e
CHANNEL = "stable"


def _sign_with_other_key(tree, cfg, where):
    resign(tree, CHANNEL, where / "other-gnupg", signing.dev_key(where / "other-gnupg"))


BROKEN = {
    # name: (how to break a copy of the tree, what apt says)
    "tampered": (
        lambda tree, cfg, where: tamper_packages(tree, CHANNEL),
        r"Hash Sum mismatch|File has unexpected size",
    ),
    "unsigned": (
        lambda tree, cfg, where: unsign(tree, CHANNEL),
        r"The repository '.*unsigned stable Release' is not signed",
    ),
    "other-key": (_sign_with_other_key, r"Missing key [0-9A-F]{40}, which is needed|NO_PUBKEY"),
    "expired": (
        lambda tree, cfg, where: expire(tree, CHANNEL, cfg.gnupghome, signing.dev_key(cfg.gnupghome)),
        r"InRelease is expired \(invalid since",
    ),
}


@pytest.fixture(scope="module")
def broken_repos(tmp_path_factory):
    """One published repository, and a broken copy of it per case, all served from one loopback server."""
    where = tmp_path_factory.mktemp("refuses")
    cfg = throwaway_config(where)
    publish(cfg)
    www = where / "www"
    www.mkdir()
    copy_tree(cfg.public, www / "intact")
    for name, (breaks, _) in BROKEN.items():
        breaks(copy_tree(cfg.public, www / name), cfg, where)
    try:
        with serving(www) as url:
            yield url, cfg
    finally:
        signing.stop_agent(cfg.gnupghome)
        signing.stop_agent(where / "other-gnupg")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with apt_client(tmp_path_factory.mktemp("apt-refuses")) as chroot:
        yield chroot


def test_apt_takes_an_intact_copy(broken_repos, client):
    """The control: the same copy, unbroken, served the same way, is accepted."""
    url, cfg = broken_repos
    client.use_repository(url + "intact/", CHANNEL, cfg.keyring)
    client.update()
    policy = client.run("apt-cache", "policy", "vr-scripts").stdout
    assert re.search(r"Candidate: \d", policy), policy


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_apt_refuses_broken_repository(case, broken_repos, client):
    url, cfg = broken_repos
    client.use_repository(url + case + "/", CHANNEL, cfg.keyring)
    update = client.update(check=False)
    output = update.stdout + update.stderr
    assert update.returncode != 0, output
    assert re.search(BROKEN[case][1], output), output
    assert client.install("vr-scripts", check=False).returncode != 0
    assert client.installed_version("vr-scripts") == ""
