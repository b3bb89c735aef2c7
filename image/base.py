"""The Debian base layer of the rootfs: minbase, the boot packages and the Debian packages ours depend on,
installed by mmdebstrap and kept as a tarball in the cache (build/cache/debs/layers), keyed by suite,
package set, the initramfs settings and the version and archive priority of every package in it
(mmdebstrap picks minbase's packages by the archive's priorities, which may differ from the .debs').
A build whose Debian packages are unchanged restores it in seconds and installs only our packages on top
(rootfs.install_ours).
"""

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Packages, PkgRelation
from vr import contract

from vrpipe.run import run

from . import debs
from .config import TemplateConfig
from .manifest import installed_packages
from .paths import make_dirs, write_file
from .render import render
from .rootfs import BOOT_PACKAGES, DPKG_FILTERS, clamp_times, initramfs_files, initramfs_settings, pack

OURS = (*contract.PACKAGES, contract.KEYRING_PACKAGE)
KEEP = 3  # layers kept per suite: the newest ones
# The layer's own date, the same whatever commit builds it, so that a layer made for one commit serves the
# next with the same bytes: the suite's release day. Its maintainer scripts see it as SOURCE_DATE_EPOCH
# (the initrd, /etc/shadow's dates) and its files are clamped to it.
RELEASED = {"bookworm": 1686355200, "trixie": 1754697600}


@dataclass(frozen=True)
class Layer:
    suite: str
    packages: tuple[str, ...]  # what it was asked to hold
    versions: tuple[tuple[str, str, str], ...]  # every package installed in it: (name, version, priority), sorted

    @property
    def key(self) -> str:
        """The packages' versions and the initramfs settings: the layer's initrd is made from both."""
        made_from = [self.suite, self.packages, self.versions, sorted(initramfs_files().items())]
        return hashlib.sha256(json.dumps(made_from).encode()).hexdigest()[:16]


def package_set(our_index: str) -> tuple[str, ...]:
    """The boot packages and the Debian packages that our packages depend on, from our repository's
    Packages index (the first of alternatives, as apt would choose)."""
    wanted = set(BOOT_PACKAGES)
    for stanza in Packages.iter_paragraphs(our_index, use_apt_pkg=False):
        if stanza["Package"] in OURS and stanza.get("Depends"):
            for alternatives in PkgRelation.parse_relations(stanza.get("Depends", "")):
                wanted.add(alternatives[0]["name"])
    return tuple(sorted(wanted - set(OURS)))


def find_current(config: TemplateConfig, packages: tuple[str, ...]) -> Layer | None:
    """The newest kept layer of this suite and package set whose every package is at the version Debian's
    archive has now; None if there is none."""
    layers = _kept(config, packages)
    now = archive_versions(config, sorted({name for layer in layers for name, _, _ in layer.versions}))
    return next((layer for layer in layers if all(now.get(n) == (v, p) for n, v, p in layer.versions)), None)


def find_exact(config: TemplateConfig, packages: tuple[str, ...], wanted: dict[str, tuple[str, str]]) -> Layer | None:
    """The kept layer of this suite and package set holding exactly these packages: {name: (version, priority)}."""
    return next((layer for layer in _kept(config, packages) if _entries(layer) == wanted), None)


def priorities(layer: Layer) -> dict[str, str]:
    """The archive's priority of each package of the layer."""
    return {name: priority for name, _, priority in layer.versions}


def _entries(layer: Layer) -> dict[str, tuple[str, str]]:
    return {name: (version, priority) for name, version, priority in layer.versions}


def make(config: TemplateConfig, packages: tuple[str, ...], sources: Path, deb_cache: Path,
         recorded: dict[str, tuple[str, str]] | None = None) -> Layer:
    """mmdebstrap the layer from sources (Debian's archive, or a local repository of a manifest's .debs
    whose versions and priorities are recorded), keep its .debs in deb_cache, and store it; the staging
    folder is removed."""
    epoch = RELEASED[config.suite]
    staging = _folder(config) / f".{config.suite}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    make_dirs(staging)  # the rootfs's own / : its mode goes into the tarball
    debs.prime(deb_cache, staging)
    before_kernel = initramfs_settings(staging.with_name(staging.name + "-settings"))
    run(
        [
            "mmdebstrap", "--mode=root", "--format=directory", "--variant=minbase",
            f"--include={','.join(packages)}",
            # the primed cache makes the target non-empty; keep the .debs until they are saved, and the
            # index until the priorities are read from it
            "--skip=check/empty,essential/unlink,cleanup/apt/cache,cleanup/apt/lists",
            # after the essential packages, before the kernel (whose installation makes the initrd)
            f"--essential-hook=sync-in {before_kernel} /",
            *(f"--dpkgopt={f}" for f in DPKG_FILTERS),
            config.suite, staging, sources,
        ],
        env={"SOURCE_DATE_EPOCH": str(epoch)},
        stream=True,
        timeout=1800,
    )
    debs.keep(staging, deb_cache)
    clamp_times(staging, epoch)
    names = [p["name"] for p in installed_packages(staging)]
    shown = recorded or _index_entries(staging, names)
    _forget_index(staging)
    versions = tuple((name, *shown[name]) for name in names)
    layer = Layer(config.suite, packages, versions)
    tarball = _tarball(config, layer)
    pack(staging, tarball.with_suffix(".new"), epoch)
    tarball.with_suffix(".new").rename(tarball)
    write_file(tarball.with_suffix(".json"), json.dumps({"suite": layer.suite, "packages": layer.packages,
                                                         "versions": layer.versions}, indent=1) + "\n")
    shutil.rmtree(staging)
    shutil.rmtree(before_kernel)
    _prune(config, packages)
    return layer


def _index_entries(staging: Path, names: list[str]) -> dict[str, tuple[str, str]]:
    """Version and priority of each package in the index mmdebstrap's apt read, not in the installed .debs
    (whose priority may differ): no status file, no cache files written."""
    index_only = ["-oDir::State::status=/dev/null", "-oDir::Cache::pkgcache=", "-oDir::Cache::srcpkgcache="]
    return _shown(run(["chroot", staging, "apt-cache", *index_only, "show", "--no-all-versions", *names]).stdout)


def _forget_index(staging: Path) -> None:
    """Debian's index stays out of the layer (what mmdebstrap's own clean-up would have done)."""
    lists = staging / "var/lib/apt/lists"
    for path in sorted(lists.iterdir()):
        if path.is_file() and path.name != "lock":
            path.unlink()
    for binary in (staging / "var/cache/apt").glob("*.bin"):
        binary.unlink()


def restore(config: TemplateConfig, layer: Layer, root: Path) -> None:
    """Unpack the stored layer into the empty folder root: modes, owners, times and xattrs as stored."""
    run(["tar", "--extract", "--file", _tarball(config, layer), "--directory", root, "--numeric-owner",
         "--same-permissions", "--same-owner", "--xattrs", "--xattrs-include=*"], timeout=600)


def debian_sources(config: TemplateConfig, work: Path) -> Path:
    """Debian's archive (suite, -updates, -security) as a sources file for mmdebstrap."""
    sources = work / "debian.sources"
    write_file(sources, render("debian.sources.j2", config=config))
    return sources


def archive_versions(config: TemplateConfig, names: list[str]) -> dict[str, tuple[str, str]]:
    """The version apt would install now of each package, and its priority, from Debian's archive (index
    kept in the cache: an unchanged archive costs one request per suite)."""
    if not names:
        return {}
    options = _host_apt(config)
    run(["apt-get", *options, "update"], timeout=600)
    shown = run(["apt-cache", *options, "show", "--no-all-versions", *names], check=False, timeout=120).stdout
    return _shown(shown)


def _shown(text: str) -> dict[str, tuple[str, str]]:
    """{name: (version, priority)} from `apt-cache show` (a stanza without Priority is optional)."""
    stanzas = Packages.iter_paragraphs(text, use_apt_pkg=False)
    return {s["Package"]: (s["Version"], s.get("Priority", "optional")) for s in stanzas}


def _host_apt(config: TemplateConfig) -> list[str]:
    """apt options for the build machine's apt to read the router suite's index alone: its own state,
    cache, sources, no installed packages and no pins of the build machine."""
    state = config.cache_dir / "apt" / config.suite
    for folder in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
        make_dirs(state / folder)
    write_file(state / "sources.list.d/debian.sources", render("debian.sources.j2", config=config))
    write_file(state / "status", "")
    settings = {
        "Dir::State": state, "Dir::State::Lists": state / "lists", "Dir::State::status": state / "status",
        "Dir::Cache": state, "Dir::Cache::archives": state / "archives",
        "Dir::Etc::SourceList": "/dev/null", "Dir::Etc::SourceParts": state / "sources.list.d",
        "Dir::Etc::Preferences": "/dev/null", "Dir::Etc::PreferencesParts": state / "preferences.d",
        "APT::Architecture": "amd64", "APT::Architectures": "amd64", "Acquire::Languages": "none",
        "quiet": "1",
    }
    return [f"-o{name}={value}" for name, value in settings.items()]


def _folder(config: TemplateConfig) -> Path:
    return config.cache_dir / "layers"


def _tarball(config: TemplateConfig, layer: Layer) -> Path:
    return _folder(config) / f"{layer.suite}-{layer.key}.tar"


def _kept(config: TemplateConfig, packages: tuple[str, ...]) -> list[Layer]:
    """The stored layers of this suite and package set, newest first."""
    described = sorted(_folder(config).glob(f"{config.suite}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    layers = []
    for path in described:
        data = json.loads(path.read_text())
        layer = Layer(data["suite"], tuple(data["packages"]), tuple((n, v, p) for n, v, p in data["versions"]))
        if layer.packages == packages and _tarball(config, layer).exists():
            layers.append(layer)
    return layers


def _prune(config: TemplateConfig, packages: tuple[str, ...]) -> None:
    for layer in _kept(config, packages)[KEEP:]:
        _tarball(config, layer).unlink()
        _tarball(config, layer).with_suffix(".json").unlink()
