"""What keeps routers trusting the right repository, with a real apt client (Debian 13 chroot): a
publish is refused before it touches anything when its settings would make Release files apt trusts
forever, and a tree whose Release files are not signed for the exported keyring or carry no future
Valid-Until is never served.
"""

import re

import pytest

from repo import signing
from repo.publish import publish
from repo.run import RepoError
from repo.serve import serving

from .apt_client import apt_client
from .repo_fixtures import drop_valid_until, invoke, resign, throwaway_config

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
    with pytest.raises(RepoError, match=re.escape(complaint)):
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
