"""Pure logic of the base-layer cache and the offline rebuild: the layer's package set and key, which kept
layer a manifest selects, the .deb names and checks, the archive priorities in a local index, the digests
of outputs (a VHD's continuing the raw disk's), and manifests that cannot be rebuilt."""

import hashlib
import json

import pytest

from image import base, debs
from image.build import Rebuild
from image.config import load_config
from image.digests import Digests
from vrpipe.errors import VrpipeError

OUR_INDEX = """Package: vr-base
Version: 1.0.0
Depends: dnsmasq, haproxy (>= 2.0), python3-jinja2 | python3-jinja, vr-archive-keyring

Package: vr-scripts
Version: 1.0.0
Depends: vr-base (>= 1.0.0), python3

Package: vr-archive-keyring
Version: 1
"""


def test_the_package_set_is_the_boot_packages_and_the_debian_dependencies_of_ours():
    packages = base.package_set(OUR_INDEX)
    assert {"dnsmasq", "haproxy", "python3-jinja2", "python3", "linux-image-amd64", "systemd-sysv"} <= set(packages)
    assert not {"vr-base", "vr-archive-keyring", "python3-jinja", ""} & set(packages)
    assert list(packages) == sorted(packages)


def test_the_key_follows_every_version_and_priority():
    def layer(priority, libc6):
        return base.Layer("trixie", ("dnsmasq",), (("dnsmasq", "2.91-1", priority), ("libc6", libc6, "optional")))

    keys = {layer("optional", "2.41-12").key, layer("optional", "2.41-13").key, layer("important", "2.41-12").key}
    assert len(keys) == 3
    assert layer("optional", "2.41-12").key == layer("optional", "2.41-12").key


def _store(config, layer):
    folder = config.cache_dir / "layers"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{layer.suite}-{layer.key}.tar").write_bytes(b"")
    (folder / f"{layer.suite}-{layer.key}.json").write_text(json.dumps(
        {"suite": layer.suite, "packages": layer.packages, "versions": layer.versions}))


def test_a_manifest_selects_the_layer_holding_exactly_its_packages(tmp_path):
    config = load_config({"cache_dir": str(tmp_path)}, source_date_epoch=1700000000)
    one = base.Layer("trixie", ("dnsmasq",), (("dnsmasq", "2.91-1", "optional"), ("libc6", "2.41-12", "required")))
    two = base.Layer("trixie", ("dnsmasq",), (("dnsmasq", "2.91-2", "optional"), ("libc6", "2.41-12", "required")))
    _store(config, one)
    _store(config, two)
    wanted = {"dnsmasq": ("2.91-1", "optional"), "libc6": ("2.41-12", "required")}
    assert base.find_exact(config, ("dnsmasq",), wanted) == one
    assert base.find_exact(config, ("dnsmasq", "haproxy"), wanted) is None  # another package set
    assert base.find_exact(config, ("dnsmasq",), {**wanted, "extra": ("1", "optional")}) is None
    assert base.find_exact(config, ("dnsmasq",), {**wanted, "libc6": ("2.41-12", "optional")}) is None


def test_deb_file_names_encode_the_epoch_and_missing_lists_absent_and_altered_debs(tmp_path):
    bash = {"name": "bash", "version": "5.2.37-2", "architecture": "amd64"}
    bsdutils = {"name": "bsdutils", "version": "1:2.41-5", "architecture": "amd64"}
    assert debs.file_name(bsdutils) == "bsdutils_1%3a2.41-5_amd64.deb"
    (tmp_path / debs.file_name(bash)).write_bytes(b"other bytes")
    listed = [{**bash, "sha256": hashlib.sha256(b"bash").hexdigest()}, {**bsdutils, "sha256": "0" * 64}]
    lines = debs.missing(listed, tmp_path)
    assert len(lines) == 2
    assert "bash_5.2.37-2_amd64.deb" in lines[0] and "other bytes" in lines[0]
    assert "bsdutils_1%3a2.41-5_amd64.deb: not in" in lines[1]


def test_a_local_index_carries_the_archive_priority_not_the_debs():
    stanza = next(iter(debs.Packages.iter_paragraphs("Package: sensible-utils\nPriority: required\nVersion: 1\n")))
    text = debs._archive_priority(stanza, [{"name": "sensible-utils", "priority": "important"}])
    assert "Priority: important" in text and "required" not in text


def test_the_vhd_digest_continues_the_raw_disks(tmp_path):
    raw, vhd = tmp_path / "disk.raw", tmp_path / "disk.vhd"
    raw.write_bytes(b"\1" * 5_000_000)
    vhd.write_bytes(b"\1" * 5_000_000 + b"footer" * 80)
    digests = Digests()
    digests.add(raw)
    digests.add_extension(vhd, raw)
    assert digests[vhd] == hashlib.sha256(vhd.read_bytes()).hexdigest()
    assert digests[raw] == hashlib.sha256(raw.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="not"):
        digests.add_extension(raw, vhd)
    digests.close()


@pytest.mark.parametrize(("content", "message"), [
    ("{", "cannot read the manifest"),
    ('{"suite": "trixie"}', "no 'mirror' in it"),
    (json.dumps({"suite": "trixie", "mirror": "m", "security_mirror": "s", "source_date_epoch": 1, "repository": {},
                 "outputs": [], "packages": [{"name": "bash", "version": "1", "architecture": "amd64"}]}),
     "carry no .deb sha256"),
])
def test_a_manifest_that_cannot_be_rebuilt_is_refused_naming_why(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(VrpipeError, match=message):
        Rebuild.read(tmp_path / "manifest.json")
