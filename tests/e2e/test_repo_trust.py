"""What keeps routers trusting the right repository, with a real apt client (Debian 13 chroot): a
publish is refused before it touches anything when its settings would make Release files apt trusts
forever, and a tree whose Release files are not signed for the exported keyring or carry no future
Valid-Until is never served; a repository published with a key never gets another one by accident.
"""

import re
import subprocess
from dataclasses import replace

import pytest

from repo import keys, signing
from repo.publish import publish
from repo.serve import serving
from vrpipe.errors import VrpipeError

from .apt_client import apt_client
from .repo_fixtures import drop_valid_until, invoke, offline_key_file, resign, throwaway_config

pytestmark = pytest.mark.e2e
SUITES = "stable stable-previous security"


@pytest.fixture
def where(tmp_path):
    yield tmp_path
    signing.stop_agent(tmp_path / "gnupg")
    signing.stop_agent(tmp_path / "other-gnupg")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with apt_client(tmp_path_factory.mktemp("apt-trust")) as chroot:
        yield chroot


def candidate(client) -> str:
    policy = client.run("apt-cache", "policy", "vr-scripts").stdout
    found = re.search(r"Candidate: (\S+)", policy)
    assert found, policy
    return found.group(1)


def served_release(cfg, codename: str) -> str:
    return (cfg.public / "dists" / codename / "Release").read_text()


@pytest.mark.parametrize("valid_for", ["0d", "91d"])
def test_bad_valid_for_is_refused_before_anything_is_made(where, valid_for):
    refused = invoke(where, "publish-repo", "--version", "1.0.0", valid_for=valid_for)
    assert refused.returncode != 0
    assert f"repo.valid_for: '{valid_for}' is" in refused.stderr and "choose 1 to 90 days" in refused.stderr
    assert not (where / "repo").exists() and not (where / "gnupg").exists()  # no key, no conf/, no agent


def test_bad_valid_for_leaves_a_published_repository_as_it_was(where, client):
    assert invoke(where, "publish-repo", "--version", "1.0.0").returncode == 0
    cfg = throwaway_config(where)
    conf = (cfg.dir / "conf" / "distributions").read_text()
    refused = invoke(where, "publish-repo", "--version", "1.0.1", "--refresh", valid_for="0d")
    assert refused.returncode != 0 and "repo.valid_for: '0d' is 0 days" in refused.stderr
    assert (cfg.dir / "conf" / "distributions").read_text() == conf
    with serving(cfg.public) as url:
        client.use_repository(url, SUITES, cfg.keyring)
        client.update()
    assert candidate(client) == "1.0.0"
    assert "Valid-Until: " in served_release(cfg, "stable")


def _drop_valid_until(cfg, where):
    drop_valid_until(cfg.dir / "work", "security", cfg.gnupghome, signing.dev_key(cfg.gnupghome))


def _sign_with_other_key(cfg, where):
    resign(cfg.dir / "work", "security", where / "other-gnupg", signing.dev_key(where / "other-gnupg"))


BAD_EXPORTS = {
    # name: (how the exported Release of `security` goes wrong, what the refusal names)
    "no-valid-until": (_drop_valid_until, "dists/security: Release has no Valid-Until"),
    "other-key": (_sign_with_other_key, "dists/security: bad signature"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPORTS))
def test_publish_with_a_bad_release_switches_nothing(case, where, client):
    cfg = throwaway_config(where)
    publish(cfg, version="1.0.0")
    served = cfg.public.readlink()
    breaks, complaint = BAD_EXPORTS[case]
    breaks(cfg, where)
    with pytest.raises(VrpipeError, match=re.escape(complaint)):
        publish(cfg, version="1.0.1")  # exports stable and stable-previous afresh; security stays bad
    assert cfg.public.readlink() == served
    assert sorted(t.name for t in (cfg.dir / "trees").iterdir()) == [served.name]
    with serving(cfg.public) as url:
        client.use_repository(url, SUITES, cfg.keyring)
        client.update()
        assert candidate(client) == "1.0.0"
        # re-signing every distribution (the daily refresh) repairs it, and the new version is served
        assert publish(cfg, version="1.0.1", refresh=True).tree is not None
        client.update()
        assert candidate(client) == "1.0.1"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--version", "1.0-1"], "version '1.0-1' is not a Debian version"),
        (["--version", "v2"], "version 'v2' is not a Debian version"),
        (["--channel", "testing"], "channel 'testing' is not one of stable, security"),
    ],
)
def test_bad_publish_arguments_are_refused_before_anything_is_made(where, args, complaint):
    refused = invoke(where, "publish-repo", *args)
    assert refused.returncode != 0 and complaint in refused.stderr, refused.stderr
    assert not (where / "repo").exists() and not (where / "gnupg").exists()


def test_lost_public_keyring_never_makes_a_new_key(where, client):
    cfg = throwaway_config(where)
    publish(cfg, version="1.0.0")
    (fingerprint,) = signing.secret_keys(cfg.gnupghome)
    keyring, served = cfg.keyring.read_bytes(), cfg.public.readlink()
    secret_files = sorted((cfg.gnupghome / "private-keys-v1.d").iterdir())
    (cfg.gnupghome / "pubring.kbx").unlink()  # the secret key stays in private-keys-v1.d
    for attempt in range(2):  # the second attempt used to publish with the key the first one made
        with pytest.raises(VrpipeError, match=f"has no secret key {fingerprint}, the archive key") as refused:
            publish(cfg, version="1.0.1")
        assert f"gpg --homedir {cfg.gnupghome} --import {cfg.keyring}" in str(refused.value), attempt
    assert sorted((cfg.gnupghome / "private-keys-v1.d").iterdir()) == secret_files
    assert not (cfg.gnupghome / "pubring.kbx").exists()
    assert cfg.keyring.read_bytes() == keyring and cfg.public.readlink() == served
    with serving(cfg.public) as url:
        client.use_repository(url, SUITES, cfg.keyring)
        client.update()
        assert candidate(client) == "1.0.0"
        # the recovery the error names: import the exported public key; the secret key is found again
        gpg = ["gpg", "--homedir", cfg.gnupghome, "--batch", "--import", cfg.keyring]
        subprocess.run(gpg, check=True, capture_output=True)
        publish(cfg, version="1.0.1")
        assert cfg.keyring.read_bytes() == keyring
        client.update()  # with the keyring the client had all along
        assert candidate(client) == "1.0.1"


def test_another_configured_key_is_refused_for_a_published_repository(where, tmp_path):
    cfg = throwaway_config(where)
    publish(cfg, version="1.0.0")
    (dev,) = signing.secret_keys(cfg.gnupghome)
    keyring = cfg.keyring.read_bytes()
    production, key_file = offline_key_file(tmp_path)
    with pytest.raises(VrpipeError, match=f"name {production}, but .* is signed with {dev}.*invoke rotate-key"):
        publish(replace(cfg, key_file=key_file), version="1.0.1")
    assert cfg.keyring.read_bytes() == keyring
    assert signing.keyring_fingerprints(cfg.keyring) == [dev]


def test_a_repository_published_before_the_record_keeps_its_key(where):
    """Repositories published before archive-keys.json existed: the exported keyring says the key."""
    cfg = throwaway_config(where)
    publish(cfg, version="1.0.0")
    (fingerprint,) = signing.keyring_fingerprints(cfg.keyring)
    (cfg.dir / keys.RECORD).unlink()
    (cfg.gnupghome / "pubring.kbx").unlink()
    with pytest.raises(VrpipeError, match=f"has no secret key {fingerprint}"):
        publish(cfg, version="1.0.1")
    assert keys.load(cfg.dir).signing == (fingerprint,)
    assert signing.keyring_fingerprints(cfg.keyring) == [fingerprint]
