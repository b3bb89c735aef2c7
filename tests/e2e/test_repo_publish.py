"""Publishing with the real reprepro and gpg: timing, idempotence, rollback versions, atomic trees,
keys (development, production by file or fingerprint), and verify on good and broken repositories.
"""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from debian.deb822 import Release

from repo import signing
from repo.packages import KEYRING_PACKAGE
from repo.publish import publish
from repo.render import PROJECT
from repo.reprepro import Reprepro
from repo.serve import make_server, serving
from repo.verify import verify
from vrpipe.errors import VrpipeError

from .repo_fixtures import copy_tree, expire, offline_key_file, resign, tamper_packages, throwaway_config, unsign

pytestmark = pytest.mark.e2e


@pytest.fixture
def cfg(tmp_path):
    config = throwaway_config(tmp_path)
    yield config
    signing.stop_agent(config.gnupghome)


def listing(cfg, codename):
    """Our router packages in codename (the keyring package is in every one: see test_repo_rotation)."""
    reprepro = Reprepro(cfg.dir, cfg.dir / "work", cfg.gnupghome)
    return {name: p.version for name, p in reprepro.list(codename).items() if name != KEYRING_PACKAGE}


def state_of(directory: Path):
    """Every path under directory with its inode and mtime: what a no-op publish must not touch."""
    return {str(p): (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in sorted(directory.rglob("*"))}


def test_publish_times_full_and_one_new_version(cfg):
    start = time.monotonic()
    publish(cfg, version="1.0.0")
    full = time.monotonic() - start
    start = time.monotonic()
    result = publish(cfg, version="1.0.1")
    one = time.monotonic() - start
    print(f"\nfull publish (new key, new repository): {full:.2f} s; one new version: {one:.2f} s")
    # the figures are printed, not asserted: on a shared 2-core machine a time limit fails by load alone
    assert result.tree is not None and result.versions == {"vr-base": "1.0.1", "vr-scripts": "1.0.1"}


def test_publishing_again_changes_nothing(cfg):
    publish(cfg, version="1.0.0")
    before = state_of(cfg.dir)
    result = publish(cfg, version="1.0.0")
    assert result.tree is None
    assert "nothing changed" in result.summary()
    changed = {p for p in set(before) | set(state_of(cfg.dir)) if before.get(p) != state_of(cfg.dir).get(p)}
    # reprepro itself rewrites db/version on every call; nothing else may change
    assert changed <= {str(cfg.dir / "db"), str(cfg.dir / "db" / "version")}, changed


def test_previous_version_stays_installable(cfg):
    publish(cfg, version="1.0.0")
    result = publish(cfg, version="1.0.1")
    assert result.replaced == {"vr-base": "1.0.0", "vr-scripts": "1.0.0"}
    assert listing(cfg, "stable") == {"vr-base": "1.0.1", "vr-scripts": "1.0.1"}
    assert listing(cfg, "stable-previous") == {"vr-base": "1.0.0", "vr-scripts": "1.0.0"}
    assert listing(cfg, "security") == {}
    publish(cfg, version="1.0.2", channel="security")
    assert listing(cfg, "security") == {"vr-base": "1.0.2", "vr-scripts": "1.0.2"}
    assert listing(cfg, "stable") == {"vr-base": "1.0.1", "vr-scripts": "1.0.1"}
    Reprepro(cfg.dir, cfg.dir / "work", cfg.gnupghome).check()
    assert not verify(cfg.public, cfg.keyring, cfg.codenames).problems


def test_client_reading_the_old_inrelease_still_gets_matching_indexes(cfg):
    """The swap happens between a client's InRelease and its index downloads: by-hash keeps them whole."""
    publish(cfg, version="1.0.0")
    with serving(cfg.public) as url:
        old = requests.get(url + "dists/stable/InRelease", timeout=10).text
        publish(cfg, version="1.0.1")
        assert requests.get(url + "dists/stable/InRelease", timeout=10).text != old
        release = Release(old)
        assert release["Acquire-By-Hash"] == "yes"
        for entry in release["SHA256"]:
            folder = os.path.dirname(entry["name"])
            got = requests.get(f"{url}dists/stable/{folder}/by-hash/SHA256/{entry['sha256']}", timeout=10)
            assert got.status_code == 200 and len(got.content) == int(entry["size"]), entry["name"]


def test_same_version_with_other_content_is_refused(cfg, monkeypatch):
    publish(cfg, version="1.0.0")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    with pytest.raises(VrpipeError, match="already in stable with different content"):
        publish(cfg, version="1.0.0")


def test_older_version_is_refused(cfg):
    publish(cfg, version="1.0.1")
    with pytest.raises(VrpipeError, match="1.0.0 is older than 1.0.1 in stable"):
        publish(cfg, version="1.0.0")
    assert listing(cfg, "stable-previous") == {}


def test_production_key_from_file_and_by_fingerprint(cfg, tmp_path):
    fingerprint, key_file = offline_key_file(tmp_path)
    publish(replace(cfg, key_file=key_file), version="1.0.0")
    assert not verify(cfg.public, cfg.keyring, cfg.codenames).problems
    listed = subprocess.run(["gpg", "--show-keys", "--with-colons", cfg.keyring], capture_output=True, text=True)
    assert f"fpr:::::::::{fingerprint}:" in listed.stdout
    assert publish(replace(cfg, key=fingerprint), version="1.0.0").tree is None
    assert signing.dev_key(cfg.gnupghome) != fingerprint  # a development key of its own, beside it
    with pytest.raises(VrpipeError, match="no secret key ABAB"):
        publish(replace(cfg, key="AB" * 20))


def test_verify_names_what_is_wrong(cfg, tmp_path):
    publish(cfg, version="1.0.0")
    fingerprint = signing.dev_key(cfg.gnupghome)
    other_home = tmp_path / "other"
    broken = {
        "tampered": (lambda t: tamper_packages(t, "stable"), "dists/stable/main/binary-amd64/Packages: size or SHA256"),
        "unsigned": (lambda t: unsign(t, "stable"), "dists/stable: InRelease, Release.gpg missing"),
        "other-key": (
            lambda t: resign(t, "stable", other_home, signing.dev_key(other_home)),
            "dists/stable: bad signature",
        ),
        "expired": (lambda t: expire(t, "stable", cfg.gnupghome, fingerprint), "dists/stable: Release expired on"),
        "deb": (lambda t: _corrupt_a_deb(t), "vr-scripts_1.0.0_all.deb: size or SHA256 differs"),
    }
    assert not verify(cfg.public, cfg.keyring, cfg.codenames).problems
    for name, (breaks, problem) in broken.items():
        tree = copy_tree(cfg.public, tmp_path / name)
        breaks(tree)
        problems = verify(tree, cfg.keyring, cfg.codenames).problems
        assert any(problem in p for p in problems), (name, problems)
    signing.stop_agent(other_home)


def _corrupt_a_deb(tree):
    deb = next(tree.glob("pool/main/v/vr-scripts/*.deb"))
    deb.write_bytes(deb.read_bytes() + b"x")


def test_invoke_tasks_publish_and_verify_over_http(tmp_path):
    """The tasks as an operator runs them, configured through invoke's environment overrides."""
    env = {**os.environ, "INVOKE_REPO_DIR": str(tmp_path / "repo"), "INVOKE_REPO_GNUPGHOME": str(tmp_path / "gnupg")}
    invoke = [sys.executable, "-m", "invoke"]
    try:
        published = subprocess.run(
            [*invoke, "publish-repo", "--version", "2.0.0"], cwd=PROJECT, env=env, capture_output=True, text=True
        )
        assert published.returncode == 0, published.stderr
        assert "stable: published vr-base 2.0.0, vr-scripts 2.0.0" in published.stdout
        with serving(tmp_path / "repo" / "public") as url:
            verified = subprocess.run(
                [*invoke, "verify-repo", "--url", url], cwd=PROJECT, env=env, capture_output=True, text=True
            )
        assert verified.returncode == 0, verified.stderr
        assert "signed, consistent and valid" in verified.stdout
        shutil.rmtree(tmp_path / "repo" / "public" / "dists" / "stable" / "main")
        failed = subprocess.run([*invoke, "verify-repo"], cwd=PROJECT, env=env, capture_output=True, text=True)
        assert failed.returncode != 0 and "dists/stable/main/binary-amd64/Packages: missing" in failed.stderr
    finally:
        signing.stop_agent(tmp_path / "gnupg")


def test_reprepro_wrapper_remove_and_clear_errors(cfg, tmp_path):
    publish(cfg, version="1.0.0")
    reprepro = Reprepro(cfg.dir, cfg.dir / "work", cfg.gnupghome)
    reprepro.remove("stable", "vr-base")
    assert listing(cfg, "stable") == {"vr-scripts": "1.0.0"}
    with pytest.raises(VrpipeError, match="reprepro .* includedeb testing .* exited with"):
        reprepro.includedeb("testing", tmp_path / "missing.deb")
    with pytest.raises(VrpipeError, match="has no conf/distributions: publish once first"):
        Reprepro(tmp_path / "nothing", tmp_path / "nothing" / "work", cfg.gnupghome).list("stable")


def test_serve_names_a_missing_tree_and_a_busy_port(cfg):
    with pytest.raises(VrpipeError, match="publish the repository first"):
        make_server(cfg.public, "127.0.0.1:0")
    publish(cfg, version="1.0.0")
    with serving(cfg.public) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        assert requests.get(url + "vr-archive-keyring.gpg", timeout=10).content == cfg.keyring.read_bytes()
        with pytest.raises(VrpipeError, match=f"cannot listen on 127.0.0.1:{port}"):
            make_server(cfg.public, f"127.0.0.1:{port}")


def test_keep_shifts_versions_back_and_a_lowered_keep_drops_the_oldest(cfg):
    cfg = replace(cfg, keep=4)
    for version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"):
        result = publish(cfg, version=version)
    assert result.replaced == {"vr-base": "1.0.3", "vr-scripts": "1.0.3"}
    history = {codename: listing(cfg, codename).get("vr-scripts") for codename in ["stable", *cfg.history("stable")]}
    assert history == {
        "stable": "1.0.4",
        "stable-previous": "1.0.3",
        "stable-previous-2": "1.0.2",
        "stable-previous-3": "1.0.1",
    }
    smaller = replace(cfg, keep=2)
    publish(smaller, version="1.0.5")
    assert listing(smaller, "stable-previous") == {"vr-base": "1.0.4", "vr-scripts": "1.0.4"}
    assert sorted(d.name for d in (cfg.public / "dists").iterdir()) == sorted(smaller.codenames)
    Reprepro(cfg.dir, cfg.dir / "work", cfg.gnupghome).check()
    assert not verify(cfg.public, cfg.keyring, smaller.codenames).problems
    pool = sorted(p.name for p in (cfg.dir / "work" / "pool").rglob("vr-scripts_*"))
    assert pool == ["vr-scripts_1.0.4_all.deb", "vr-scripts_1.0.5_all.deb"]


def test_a_channel_dropped_from_the_settings_is_refused(cfg):
    publish(cfg, version="1.0.0")
    conf = (cfg.dir / "conf" / "distributions").read_text()
    with pytest.raises(VrpipeError, match="publishes security, security-previous, security-previous-2, which repo"):
        publish(replace(cfg, channels=("stable",)), version="1.0.1")
    assert (cfg.dir / "conf" / "distributions").read_text() == conf
    assert listing(cfg, "stable") == {"vr-base": "1.0.0", "vr-scripts": "1.0.0"}
