"""Key rotation with a real apt client (Debian 13 chroot): a router that trusts only the old key gets the
new one by upgrading vr-archive-keyring during the overlap, and keeps upgrading once the old key is
retired; a router that missed the overlap fails apt-get update naming the key it lacks.
"""

import re
import subprocess
from dataclasses import replace

import pytest

from repo import keys, signing
from repo.packages import KEYRING_PACKAGE
from repo.publish import publish
from repo.rotation import rotate_key
from repo.serve import serving
from repo.verify import verify
from vrpipe.errors import VrpipeError

from .apt_client import apt_client
from .repo_fixtures import invoke, offline_key_file, throwaway_config

pytestmark = pytest.mark.e2e
SUITES = "stable stable-previous"


@pytest.fixture
def cfg(tmp_path):
    config = throwaway_config(tmp_path)
    yield config
    signing.stop_agent(config.gnupghome)


def signers(cfg, codename: str = "stable") -> list[str]:
    """The fingerprints of the good signatures on the served InRelease."""
    status = subprocess.run(
        ["gpgv", "--status-fd", "1", "--keyring", cfg.keyring, cfg.public / "dists" / codename / "InRelease"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return re.findall(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]{40})", status, flags=re.M)


def upgrade(client) -> None:
    client.update()
    client.run("apt-get", "upgrade", "-y", "-q", "--with-new-pkgs")


def test_router_follows_the_rotation_and_one_that_missed_it_fails(cfg, tmp_path):
    publish(cfg, version="1.0.0")
    (old,) = signing.keyring_fingerprints(cfg.keyring)
    old_keyring = cfg.keyring.read_bytes()
    with apt_client(tmp_path) as client, serving(cfg.public) as url:
        client.use_repository(url, SUITES, cfg.keyring)  # as the template installs it: the old key only
        client.update()
        client.install("vr-scripts")
        assert client.installed_version(KEYRING_PACKAGE) == "1" and client.trusted_keys() == [old]

        started = rotate_key(cfg)
        new = started.keys.newest
        assert started.keys.signing == (old, new) and "retire the old key" in started.summary()
        assert sorted(signers(cfg)) == sorted([old, new]) and sorted(signers(cfg, "security")) == sorted([old, new])
        (tmp_path / "old.gpg").write_bytes(old_keyring)
        assert not verify(cfg.public, tmp_path / "old.gpg", cfg.codenames).problems  # as routers see it
        upgrade(client)  # accepted on the old key's signature; brings the new key
        assert client.installed_version(KEYRING_PACKAGE) == "2"
        assert sorted(client.trusted_keys()) == sorted([old, new])
        publish(cfg, version="1.0.1")
        upgrade(client)
        assert client.installed_version("vr-scripts") == "1.0.1"

        retired = rotate_key(cfg, retire=True)
        assert retired.retired == (old,) and retired.keys.signing == (new,)
        assert signers(cfg) == [new] and signing.keyring_fingerprints(cfg.keyring) == [new]
        problems = verify(cfg.public, tmp_path / "old.gpg", cfg.codenames).problems
        assert problems and all("bad signature" in p for p in problems), problems
        upgrade(client)
        assert client.installed_version(KEYRING_PACKAGE) == "3" and client.trusted_keys() == [new]
        publish(cfg, version="1.0.2")
        upgrade(client)
        assert client.installed_version("vr-scripts") == "1.0.2"

        client.trust(old_keyring)  # a router that slept through the overlap
        publish(cfg, version="1.0.3")
        # --error-on=any, as vrpipe upgrade runs it: plain apt-get update only warns and keeps old lists
        missed = client.run("apt-get", "update", "-q", "--error-on=any", check=False)
        said = missed.stdout + missed.stderr
        assert missed.returncode != 0, said
        assert f"Missing key {new}, which is needed to verify signature" in said, said
        assert "The repository is not updated and the previous index files will be used" in said, said
        policy = client.run("apt-cache", "policy", "vr-scripts").stdout
        assert "Candidate: 1.0.2" in policy, policy


def test_rotation_refuses_what_would_strand_routers(cfg, tmp_path):
    with pytest.raises(VrpipeError, match="has never been published: there is no key to rotate"):
        rotate_key(cfg)
    assert not cfg.dir.exists() and not cfg.gnupghome.exists()
    publish(cfg, version="1.0.0")
    (old,) = signing.keyring_fingerprints(cfg.keyring)
    with pytest.raises(VrpipeError, match=f"no rotation to end: {old} is the only key"):
        rotate_key(cfg, retire=True)
    with pytest.raises(VrpipeError, match=f"{old} already signs"):
        rotate_key(cfg, new_key=old)
    with pytest.raises(VrpipeError, match="no secret key ABAB"):
        rotate_key(cfg, new_key="AB" * 20)
    assert keys.load(cfg.dir).signing == (old,) and keys.load(cfg.dir).generation == 1

    # a production key, imported into gnupghome, through the task as an operator runs it
    production, key_file = offline_key_file(tmp_path)
    gpg_import = ["gpg", "--homedir", cfg.gnupghome, "--batch", "--import", key_file]
    subprocess.run(gpg_import, check=True, capture_output=True)
    where = cfg.dir.parent
    started = invoke(where, "rotate-key", "--key", production)
    assert started.returncode == 0 and f"signed by {old} and {production}" in started.stdout, started.stderr
    again = invoke(where, "rotate-key")
    assert again.returncode != 0 and "a rotation is already in its overlap" in again.stderr
    refused = invoke(where, "rotate-key", "--retire", key=old)
    assert refused.returncode != 0 and "the key being retired" in refused.stderr
    assert f"hint: set it to {production} first" in refused.stderr
    assert keys.load(cfg.dir).signing == (old, production)
    retired = invoke(where, "rotate-key", "--retire", key=production)
    assert retired.returncode == 0 and f"retired {old}" in retired.stdout, retired.stderr
    assert signers(cfg) == [production]
    assert publish(cfg, version="1.0.1").tree is not None  # the development key is not used again
    assert signers(cfg) == [production]
    with pytest.raises(VrpipeError, match="name a production key: name the new one with --key"):
        rotate_key(replace(cfg, key=production))  # never a development key for a production repository
    assert keys.load(cfg.dir).signing == (production,)
