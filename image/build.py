"""`invoke build-template`: serve our signed repository on loopback (publishing it first on a fresh
checkout), install the rootfs from it, set the router up, and make every output (rootfs tarball, raw,
qcow2, vhd, vmdk, ova, kernel, initrd) with manifest.json, SHA256SUMS and its signature; numbered steps,
one summary line.
"""

import fcntl
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from repo import publish, serve
from repo.config import RepoConfig
from repo.config import load as load_repo_config
from vrpipe.errors import VrpipeError
from vrpipe.log import Steps
from vrpipe.run import run

from . import base, debs, disk, formats, manifest, rootfs, router
from .config import PROJECT, TemplateConfig, load_config
from .digests import Digests
from .paths import make_dirs

log = logging.getLogger("image")
NAME = "vr-router"
INPUTS = ("image", "repo", "vr_scripts")  # what a template is made from, besides its configuration
STAMP = ".inputs"  # written last: the digest of the inputs of the finished build in the folder


@dataclass(frozen=True)
class Template:
    """Where a built template's outputs are."""

    folder: Path

    def output(self, suffix: str) -> Path:
        return self.folder / f"{NAME}.{suffix}"

    @property
    def rootfs_dir(self) -> Path:
        """The unpacked root filesystem, for router containers (overlayfs over it)."""
        return self.folder / "rootfs"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"


@dataclass(frozen=True)
class Rebuild:
    """A build of exactly what a manifest.json lists, offline, from the package cache."""

    manifest: dict
    text: str  # the manifest's bytes: a faithful rebuild writes them again

    @classmethod
    def read(cls, path: Path) -> "Rebuild":
        try:
            text = path.read_text()
            data = json.loads(text)
        except (OSError, ValueError) as e:
            raise VrpipeError(f"cannot read the manifest {path}: {e}") from e
        for field in ("suite", "mirror", "security_mirror", "source_date_epoch", "repository", "packages", "outputs"):
            if field not in data:
                raise VrpipeError(f"{path}: no '{field}' in it: not a template manifest")
        if any("sha256" not in p for p in data["packages"]):
            raise VrpipeError(f"{path}: its packages carry no .deb sha256 (a manifest made before rebuilds were "
                              "possible): it cannot be rebuilt")
        return cls(data, text)

    @property
    def settings(self) -> dict:
        keys = ("suite", "mirror", "security_mirror", "source_date_epoch")
        return {key: self.manifest[key] for key in keys}

    def packages(self, ours: bool) -> tuple[dict, ...]:
        return tuple(p for p in self.manifest["packages"] if (p["name"] in base.OURS) == ours)


def build_template(
    config: TemplateConfig, repo_config: RepoConfig, reuse: bool = False, republish: bool = False,
    rebuild: Rebuild | None = None,
) -> Template:
    """Build everything into config.output_dir; with reuse, keep a finished build of the same inputs;
    with republish, first publish this checkout's packages into a fresh repository (tests do); with
    rebuild, exactly what its manifest lists, offline, checked against its outputs' sha256. Builds into
    one folder take turns, so a second one waiting for the first finds its result."""
    template = Template(config.output_dir)
    # one build at a time per output folder, and per package cache
    with _locked(_lock_file(config.output_dir)), _locked(_lock_file(config.cache_dir)):
        inputs = "from-manifest\n" if rebuild else inputs_digest(config, repo_config)
        if reuse and is_built(config, repo_config):
            log.info("build-template: reusing %s (same inputs %s)", template.folder, inputs[:12])
            return template
        if republish:
            shutil.rmtree(repo_config.dir, ignore_errors=True)
        steps = Steps("build-template", total=11)
        _clear(template.folder)
        work = template.folder / ".work"
        work.mkdir(parents=True)
        _build(config, repo_config, template, work, steps, rebuild)
        shutil.rmtree(work)
        (template.folder / STAMP).write_text(inputs)
    if rebuild:
        _compare(template, rebuild)
    log.info(steps.summary(f"{NAME} {config.suite} built into {template.folder}"))
    return template


def _compare(template: Template, rebuild: Rebuild) -> None:
    """A rebuild must give the manifest's bytes: every output's sha256 and the manifest itself."""
    wanted = {o["file"]: o["sha256"] for o in rebuild.manifest["outputs"]}
    got = {o["file"]: o["sha256"] for o in json.loads((template.folder / "manifest.json").read_text())["outputs"]}
    differing = sorted(name for name in wanted if got.get(name) != wanted[name])
    if (template.folder / "manifest.json").read_text() != rebuild.text:
        differing.append("manifest.json")
    if differing:
        raise VrpipeError(f"the rebuild differs from the manifest in: {', '.join(differing)}",
                          hint="this checkout's image/ code or archive key differ from the build's (README: reproducibility)")
    log.info("build-template: the rebuild gives the manifest's bytes (%d outputs and manifest.json)", len(wanted))


def _lock_file(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.with_name(folder.name + ".lock")


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(config: TemplateConfig, repo_config: RepoConfig, template: Template, work: Path, steps: Steps,
           rebuild: Rebuild | None):
    epoch, root = config.source_date_epoch, template.rootfs_dir
    deb_cache = config.cache_dir / config.suite  # per suite: a bookworm build keeps trixie's .debs
    if rebuild:
        with steps.step("the manifest's .debs in the package cache (offline)"):
            ours: rootfs.BuildRepo | rootfs.CachedDebs = rootfs.CachedDebs(rebuild.packages(ours=True), deb_cache)
            _check_cached(rebuild, deb_cache)
            wanted = {p["name"]: p["version"] for p in rebuild.packages(ours=False)}
            packages = base.package_set(_control_stanzas(rebuild.packages(ours=True), deb_cache))
            layer = base.find_exact(config, packages, wanted)
        repository = rebuild.manifest["repository"]
        lasting = router.OurRepository(repository["url"], tuple(repository["suites"]), repo_config.keyring)
    else:
        with steps.step("our signed repository (published now if it has never been)"):
            if not repo_config.public.exists():
                log.info("%s is not published yet: publishing this checkout's packages", repo_config.dir)
                publish.publish(repo_config)
            channel = repo_config.channel(None)
            index = repo_config.public / "dists" / channel / "main" / "binary-amd64" / "Packages"
            packages = base.package_set(index.read_text())
            layer = base.find_current(config, packages)
        lasting = router.OurRepository(repo_config.url, repo_config.channels, repo_config.keyring)
    hit = f"cache hit {layer.key}" if layer else "cache miss: mmdebstrap"
    with steps.step(f"Debian base layer ({config.suite}, {len(packages)} packages asked): {hit}"):
        if layer is None:
            if rebuild:
                debs.local_repository(list(rebuild.packages(ours=False)), deb_cache, work / "local")
                sources = work / "local.list"
                sources.write_text(debs.local_sources((work / "local").resolve()))
            else:
                sources = base.debian_sources(config, work)
            layer = base.make(config, packages, sources, deb_cache)
            log.info("base layer %s stored (%d packages)", layer.key, len(layer.versions))
        make_dirs(root)
        base.restore(config, layer, root)
    with steps.step("our packages on top (apt in the rootfs)"), _served(repo_config, rebuild is None) as url:
        if not rebuild:
            ours = rootfs.BuildRepo(url, channel, repo_config.keyring)
        rootfs.install_ours(root, ours, deb_cache, epoch)
    with steps.step("router set-up"):
        router.configure(root, config, lasting)
        router.forget_build(root)
        shutil.copyfile(root / "vmlinuz", template.kernel)
        shutil.copyfile(root / "initrd.img", template.initrd)
        rootfs.clamp_times(root, epoch)
    digests = Digests()
    try:
        _images(config, lasting, repo_config, template, work, steps, digests, deb_cache)
    finally:
        digests.close()


def _images(config, lasting, repo_config, template, work, steps, digests, deb_cache):
    epoch, root = config.source_date_epoch, template.rootfs_dir
    digests.add(template.kernel)
    digests.add(template.initrd)
    with steps.step("rootfs tarball"):
        rootfs.pack(root, template.output("tar"), epoch)
        digests.add(template.output("tar"))
    layout = disk.plan(config)
    with steps.step("boot partition (syslinux, GRUB EFI)"):
        disk.make_esp(layout, template.kernel, template.initrd, work / "esp.img", work, epoch)
    with steps.step("root filesystem (ext4)"):
        disk.make_root_fs(layout, root, work / "root.img", epoch)
    raw = template.output("raw")
    with steps.step("raw disk image (GPT)"):
        disk.assemble(layout, work / "esp.img", work / "root.img", raw)
        digests.add(raw)
    with steps.step("qcow2, vhd (fixed) and vmdk (streamOptimized), hashed as they come"):
        _convert(raw, template, epoch, digests)
    vmdk = template.output("vmdk")
    with steps.step("ova"):
        formats.ova(vmdk, template.output("ova"), epoch, raw.stat().st_size, NAME, digests[vmdk])
        digests.add(template.output("ova"))
    with steps.step("manifest, SHA256SUMS and signature"):
        _describe(config, lasting, repo_config, template, layout, root, deb_cache, digests)


def _convert(raw: Path, template: Template, epoch: int, digests: Digests) -> None:
    """The vmdk (compressed: the slow one) on a thread of its own while qcow2 and vhd are made."""
    vmdk, qcow2, vhd = (template.output(suffix) for suffix in ("vmdk", "qcow2", "vhd"))
    with ThreadPoolExecutor(max_workers=1) as side:
        compressing = side.submit(formats.vmdk, raw, vmdk, epoch)
        formats.qcow2(raw, qcow2)
        digests.add(qcow2)
        formats.vhd(raw, vhd, epoch)
        digests.add_extension(vhd, raw)  # a fixed VHD: the raw disk, then its footer
        compressing.result()
    digests.add(vmdk)


def _check_cached(rebuild: Rebuild, deb_cache: Path) -> None:
    missing = debs.missing(list(rebuild.packages(ours=False) + rebuild.packages(ours=True)), deb_cache)
    if missing:
        raise VrpipeError(f"cannot rebuild offline: {len(missing)} .deb(s) of the manifest missing:\n  "
                          + "\n  ".join(missing),
                          hint="put those .debs into the package cache (a build online with these versions keeps them)")


def _control_stanzas(packages: tuple[dict, ...], deb_cache: Path) -> str:
    """The control stanzas of these cached .debs, as a Packages index would list them."""
    return "\n".join(run(["dpkg-deb", "--field", deb_cache / debs.file_name(p)]).stdout for p in packages)


def _describe(config, lasting, repo_config, template, layout, root, deb_cache, digests):
    kinds = {"tar": "rootfs-tar", "raw": "raw", "qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk", "ova": "ova"}
    outputs = [manifest.Output(template.output(suffix), kind) for suffix, kind in kinds.items()]
    outputs += [manifest.Output(template.kernel, "kernel"), manifest.Output(template.initrd, "initrd")]
    extra = {
        "repository": {"url": lasting.url, "suites": list(lasting.suites)},
        "kernel_cmdline": layout.kernel_cmdline,
    }
    packages = debs.with_digests(manifest.installed_packages(root), deb_cache)
    written = manifest.write_manifest(template.folder / "manifest.json", config, packages, outputs, extra,
                                      digests.__getitem__)
    sums = template.folder / "SHA256SUMS"
    manifest.write_checksums(sums, [o.path for o in outputs] + [template.folder / "manifest.json"], written)
    manifest.sign(sums, repo_config.gnupghome, publish.archive_key(repo_config))


def is_built(config: TemplateConfig, repo_config: RepoConfig) -> bool:
    """Whether output_dir holds a finished build of the current sources and configuration."""
    stamp = config.output_dir / STAMP
    return stamp.exists() and stamp.read_text() == inputs_digest(config, repo_config)


def inputs_digest(config: TemplateConfig, repo_config: RepoConfig) -> str:
    """A digest of the sources and configuration a template is built from."""
    digest = hashlib.sha256(repr((config, repo_config)).encode())
    for part in INPUTS:
        for path in sorted((PROJECT / part).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@contextmanager
def _served(repo_config: RepoConfig, serve_it: bool = True) -> Iterator[str]:
    """Our repository on a free loopback port for the duration of the install (nothing when not serve_it)."""
    if not serve_it:
        yield ""
        return
    server = serve.make_server(repo_config.public, "127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _clear(folder: Path) -> None:
    """Empty the output folder; refuse if anything is still mounted below it (a crashed build or a
    running router container), since deleting would reach into the mounted filesystems."""
    resolved = str(folder.resolve())
    with open("/proc/self/mountinfo") as mounts:
        busy = [line.split()[4] for line in mounts if (line.split()[4] + "/").startswith(resolved + "/")]
    if busy:
        raise VrpipeError(f"cannot rebuild {folder}: still mounted below it: {', '.join(busy)}",
                          hint="stop the router containers that use it (vrpipe stop, invoke lab-down)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def build_command(template_settings: dict | None, repo_settings: dict | None, from_manifest: str | None = None,
                  **overrides) -> str:
    """What `invoke build-template` runs: progress on the log; returns the one-line summary."""
    rebuild = Rebuild.read(Path(from_manifest)) if from_manifest else None
    given = {name: value for name, value in overrides.items() if value is not None}
    settings = {**given, **(rebuild.settings if rebuild else {})}  # a manifest's suite and date are the build's
    config = load_config(template_settings, **settings)
    template = build_template(config, load_repo_config(repo_settings), rebuild=rebuild)
    return f"build-template: outputs in {template.folder}: " + ", ".join(sorted(
        p.name for p in template.folder.iterdir() if p.is_file() and not p.name.startswith(".")))
