"""The Debian security mirror (invoke mirror-security) with the real reprepro and gpg: against a fake
"Debian" archive the test builds and signs with a key of its own (what is mirrored, a second run, a
tampered index, a tampered package, the wrong key), and against Debian's real security archive.
"""

import json
import re
from pathlib import Path

import pytest
import requests

from repo import signing
from repo.mirror import DEBIAN_KEYRING, mirror_security, template_mirror
from repo.publish import publish
from repo.reprepro import Reprepro
from repo.serve import serving
from repo.verify import verify
from vrpipe.errors import VrpipeError
from vrpipe.run import run

from .repo_fixtures import tamper_packages, throwaway_config

pytestmark = pytest.mark.e2e
SUITE = "trixie-security"


class FakeDebian:
    """A reprepro archive playing Debian's trixie-security, signed by a test key."""

    def __init__(self, where: Path):
        self.dir, self.gnupghome = where / "archive", where / "debian-gnupg"
        self.fingerprint = signing.new_dev_key(self.gnupghome)
        self.keyring = where / "debian-test-keyring.gpg"
        self.keyring.write_bytes(signing.public_key(self.gnupghome, [self.fingerprint]))
        (self.dir / "conf").mkdir(parents=True)
        (self.dir / "conf" / "distributions").write_text(
            f"Origin: Debian\nCodename: {SUITE}\nArchitectures: amd64\nComponents: main\nSignWith: {self.fingerprint}\n"
        )
        self.debs = where / "debs"

    def add(self, package: str, version: str, depends: str = "") -> None:
        root = self.debs / f"{package}_{version}"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "usr/share/doc" / package).mkdir(parents=True)
        (root / "usr/share/doc" / package / "version").write_text(version + "\n")
        control = f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nSection: libs\nPriority: optional\n"
        control += "Maintainer: t <t@example.org>\n"
        control += f"Depends: {depends}\n" if depends else ""
        (root / "DEBIAN" / "control").write_text(control + f"Description: test package {package}\n")
        deb = root.parent / f"{root.name}.deb"
        run(["dpkg-deb", "--root-owner-group", "-b", root, deb])
        Reprepro(self.dir, self.dir, self.gnupghome).includedeb(SUITE, deb)

    def export(self) -> None:
        Reprepro(self.dir, self.dir, self.gnupghome).export(SUITE)

    def pool_file(self, package: str) -> Path:
        (found,) = (self.dir / "pool").rglob(f"{package}_*.deb")
        return found


@pytest.fixture
def debian(tmp_path):
    fake = FakeDebian(tmp_path)
    fake.add("hse-lib", "1.0-1")
    fake.add("hse-tool", "1.0-1")  # not in the template: never mirrored
    fake.export()
    with serving(fake.dir) as url:
        fake.url = url
        yield fake
    signing.stop_agent(fake.gnupghome)


@pytest.fixture
def cfg(tmp_path):
    config = throwaway_config(tmp_path)
    publish(config, version="1.0.0")
    yield config
    signing.stop_agent(config.gnupghome)


def manifest(tmp_path, url, packages=("hse-lib", "libc6")):
    path = tmp_path / "manifest.json"
    entries = [{"name": name, "version": "1", "architecture": "amd64"} for name in packages]
    path.write_text(json.dumps({"suite": "trixie", "security_mirror": url, "packages": entries}))
    return path


def mirrored(cfg):
    """What the served tree's trixie-security lists: package -> version (our keyring package left out)."""
    packages = (cfg.public / "dists" / SUITE / "main/binary-amd64/Packages").read_text()
    entries = [dict(line.split(": ", 1) for line in p.splitlines() if ": " in line) for p in packages.split("\n\n")]
    return {e["Package"]: e["Version"] for e in entries if e}


def test_mirrors_the_template_packages_and_their_new_dependencies(tmp_path, debian, cfg):
    mirror = template_mirror(manifest(tmp_path, debian.url), None, debian.keyring)
    first = mirror_security(cfg, mirror)
    print("\n" + first.summary())
    assert first.tree is not None and first.indexes == 2 and first.fetched_bytes > 0
    assert mirrored(cfg) == {"hse-lib": "1.0-1"}
    # signed with our key, beside our channels, and a publish of our packages keeps it served
    assert not verify(cfg.public, cfg.keyring, [SUITE, "stable"]).problems
    served = cfg.public.resolve()

    again = mirror_security(cfg, mirror)
    print(again.summary())
    assert again.tree is None and again.new == {} and again.indexes == 1  # InRelease only
    assert cfg.public.resolve() == served

    debian.add("hse-lib-common", "2.0-1")
    debian.add("hse-lib", "2.0-1", depends="hse-lib-common (= 2.0-1), libc6")
    debian.export()
    update = mirror_security(cfg, mirror)
    print(update.summary())
    assert update.new == {"hse-lib": "2.0-1", "hse-lib-common": "2.0-1"}
    assert mirrored(cfg) == {"hse-lib": "2.0-1", "hse-lib-common": "2.0-1"}
    publish(cfg, version="1.0.1")
    assert mirrored(cfg) == {"hse-lib": "2.0-1", "hse-lib-common": "2.0-1"}
    assert not verify(cfg.public, cfg.keyring, [SUITE, "stable"]).problems


@pytest.mark.parametrize("damage", ["index", "package", "key"])
def test_a_bad_archive_publishes_nothing(tmp_path, debian, cfg, damage):
    keyring = debian.keyring
    mirror = template_mirror(manifest(tmp_path, debian.url), None, keyring)
    mirror_security(cfg, mirror)
    served = cfg.public.resolve()
    debian.add("hse-lib", "2.0-1")
    debian.export()
    if damage == "index":
        tamper_packages(debian.dir, SUITE)
    elif damage == "package":
        deb = debian.pool_file("hse-lib")
        data = bytearray(deb.read_bytes())
        data[-1] ^= 0xFF  # same size, different bytes
        deb.write_bytes(bytes(data))
    else:
        other = tmp_path / "other-gnupg"
        keyring = tmp_path / "other-keyring.gpg"
        keyring.write_bytes(signing.public_key(other, [signing.new_dev_key(other)]))
        signing.stop_agent(other)
    with pytest.raises(VrpipeError, match="nothing was published") as failed:
        mirror_security(cfg, template_mirror(manifest(tmp_path, debian.url), None, keyring))
    print(f"\n{damage}: {failed.value}")
    assert cfg.public.resolve() == served
    assert mirrored(cfg) == {"hse-lib": "1.0-1"}
    publish(cfg, version="1.0.1")  # the refused packages do not slip in with the next publish either
    assert mirrored(cfg) == {"hse-lib": "1.0-1"}


def test_without_a_manifest_it_says_so(tmp_path):
    with pytest.raises(VrpipeError, match="no template manifest at .*build the template|no template manifest"):
        template_mirror(tmp_path / "missing.json", None, DEBIAN_KEYRING)


def debian_reachable(url):
    try:
        return requests.head(f"{url}/dists/{SUITE}/InRelease", timeout=15).status_code == 200
    except requests.RequestException:
        return False


def test_the_real_debian_security_archive(tmp_path, cfg):
    from .image_fixtures import shared_template

    manifest_file = shared_template().folder / "manifest.json"
    upstream = json.loads(manifest_file.read_text())["security_mirror"]
    if not debian_reachable(upstream):
        pytest.skip(f"Debian's security archive {upstream} cannot be reached from this machine")
    mirror = template_mirror(manifest_file, None, DEBIAN_KEYRING)
    result = mirror_security(cfg, mirror)
    print("\n" + result.summary())
    assert result.tree is not None and not verify(cfg.public, cfg.keyring, [SUITE]).problems
    packages = (cfg.public / "dists" / SUITE / "main/binary-amd64/Packages").read_text()
    depended_on = set(re.findall(r"(?:^Depends: |^Pre-Depends: |, | \| )([a-z0-9][a-z0-9.+-]+)", packages, re.M))
    served = mirrored(cfg)
    assert set(mirror.packages) & set(served), "none of the template's packages has a fix in the security suite?"
    assert not set(served) - set(mirror.packages) - depended_on, "mirrored what the template neither ships nor needs"
    again = mirror_security(cfg, mirror)
    print(again.summary())
    assert again.tree is None and again.new == {} and again.indexes == 1
