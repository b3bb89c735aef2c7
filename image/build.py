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

from . import base, debs, disk, formats, manifest, rootfs, router, vmdk
from .config import PROJECT, TemplateConfig, load_config
from .digests import Digests
from .paths import make_dirs, write_file

log = logging.getLogger("image")
NAME = "vr-router"
INPUTS = ("image", "repo", "vr_scripts")  # what a template is made from, besides its configuration
STAMP = ".inputs"  # written last: the digest of the inputs of the finished build in the folder
VMDK_GRAINS = "vmdk-grains"  # in the package cache: the last build's compressed VMDK grains


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

    def base_entries(self) -> dict[str, tuple[str, str]]:
        """{name: (version, archive priority)} of the base layer's packages."""
        return {p["name"]: (p["version"], p.get("priority", "")) for p in self.packages(ours=False)}


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
        if rebuild:  # before anything in output_dir is removed
            _check_cached(rebuild, config.cache_dir / config.suite)
        if republish:
            shutil.rmtree(repo_config.dir, ignore_errors=True)
        steps = Steps("build-template", total=11)
        _clear(template.folder)
        work = template.folder / ".work"
        work.mkdir(parents=True)
        _build(Job(config, repo_config, template, work, steps), rebuild)
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
                          hint="this checkout's image/ code or archive key differ from the build's (README)")
    log.info("build-template: the rebuild gives the manifest's bytes (%d outputs and manifest.json)", len(wanted))


def _lock_file(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.with_name(folder.name + ".lock")


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Job:
    """One build under way: what it is made from and where it writes."""

    config: TemplateConfig
    repo_config: RepoConfig
    template: Template
    work: Path
    steps: Steps

    @property
    def deb_cache(self) -> Path:
        return self.config.cache_dir / self.config.suite  # per suite: a bookworm build keeps trixie's .debs


@dataclass(frozen=True)
class Plan:
    """What goes into the rootfs: the base layer's package set and its kept layer (None: to be made), where
    our packages come from, and the repository routers use later."""

    packages: tuple[str, ...]
    layer: base.Layer | None
    ours: rootfs.BuildRepo | rootfs.CachedDebs | None  # None: our repository, served once the layer is in
    lasting: router.OurRepository


def _build(job: Job, rebuild: Rebuild | None) -> None:
    plan = _plan_rebuild(job, rebuild) if rebuild else _plan(job)
    layer = _rootfs(job, plan, rebuild)
    digests = Digests()
    try:
        _images(job, plan.lasting, layer, digests)
    finally:
        digests.close()


def _plan(job: Job) -> Plan:
    repo_config = job.repo_config
    with job.steps.step("our signed repository (published now if it has never been), Debian's versions now"):
        if not repo_config.public.exists():
            log.info("%s is not published yet: publishing this checkout's packages", repo_config.dir)
            publish.publish(repo_config)
        index = repo_config.public / "dists" / repo_config.channel(None) / "main" / "binary-amd64" / "Packages"
        packages = base.package_set(index.read_text())
        layer = base.find_current(job.config, packages)
    lasting = router.OurRepository(repo_config.url, repo_config.channels, repo_config.keyring)
    return Plan(packages, layer, None, lasting)


def _plan_rebuild(job: Job, rebuild: Rebuild) -> Plan:
    with job.steps.step("the manifest's packages, from the package cache (offline)"):
        ours = rootfs.CachedDebs(rebuild.packages(ours=True), job.deb_cache, job.config.suite)
        packages = base.package_set(_control_stanzas(ours.packages, job.deb_cache))
        layer = base.find_exact(job.config, packages, rebuild.base_entries())
    repository = rebuild.manifest["repository"]
    lasting = router.OurRepository(repository["url"], tuple(repository["suites"]), job.repo_config.keyring)
    return Plan(packages, layer, ours, lasting)


def _rootfs(job: Job, plan: Plan, rebuild: Rebuild | None) -> base.Layer:
    """The base layer (kept or made), our packages on top, the router set-up; returns the layer."""
    config, root, layer = job.config, job.template.rootfs_dir, plan.layer
    hit = f"cache hit {layer.key}" if layer else "cache miss: mmdebstrap"
    with job.steps.step(f"Debian base layer ({config.suite}, {len(plan.packages)} packages asked): {hit}"):
        if layer is None:
            recorded = rebuild.base_entries() if rebuild else None
            layer = base.make(config, plan.packages, _debian_sources(job, rebuild), job.deb_cache, recorded)
            log.info("base layer %s stored (%d packages)", layer.key, len(layer.versions))
        make_dirs(root)
        base.restore(config, layer, root)
    with job.steps.step("our packages on top (apt in the rootfs)"), _served(job.repo_config, plan.ours) as url:
        ours = plan.ours or rootfs.BuildRepo(url, job.repo_config.channel(None), job.repo_config.keyring)
        rootfs.install_ours(root, ours, job.deb_cache, config.source_date_epoch)
    with job.steps.step("router set-up"):
        router.configure(root, config, plan.lasting)
        router.forget_build(root)
        shutil.copyfile(root / "vmlinuz", job.template.kernel)
        shutil.copyfile(root / "initrd.img", job.template.initrd)
        router.mark_updated(root)  # before the clamp: it changes the mtime of /etc and /var
        rootfs.clamp_times(root, config.source_date_epoch)
    return layer


def _debian_sources(job: Job, rebuild: Rebuild | None) -> Path:
    """Debian's archive, or offline a local repository of exactly the manifest's Debian packages."""
    if not rebuild:
        return base.debian_sources(job.config, job.work)
    local = (job.work / "local").resolve()
    debs.local_repository(list(rebuild.packages(ours=False)), job.deb_cache, local, job.config.suite)
    write_file(job.work / "local.list", debs.local_sources(local))
    return job.work / "local.list"


def _images(job: Job, lasting: router.OurRepository, layer: base.Layer, digests: Digests) -> None:
    template, work, steps, epoch = job.template, job.work, job.steps, job.config.source_date_epoch
    digests.add(template.kernel)
    digests.add(template.initrd)
    with steps.step("rootfs tarball"):
        rootfs.pack(template.rootfs_dir, template.output("tar"), epoch)
        digests.add(template.output("tar"))
    layout = disk.plan(job.config)
    with steps.step("boot partition (syslinux, GRUB EFI)"):
        disk.make_esp(layout, template.kernel, template.initrd, work / "esp.img", work, epoch)
    with steps.step("root filesystem (ext4)"):
        disk.make_root_fs(layout, template.rootfs_dir, work / "root.img", epoch)
    raw = template.output("raw")
    with steps.step("raw disk image (GPT)"):
        disk.assemble(layout, work / "esp.img", work / "root.img", raw)
        digests.add(raw)
    with steps.step("qcow2, vhd (fixed) and vmdk (streamOptimized), hashed as they come"):
        _convert(raw, template, epoch, digests, job.config.cache_dir / VMDK_GRAINS)
    vmdk_file = template.output("vmdk")
    with steps.step("ova"):
        formats.ova(vmdk_file, template.output("ova"), epoch, raw.stat().st_size, NAME, digests[vmdk_file])
        digests.add(template.output("ova"))
    with steps.step("manifest, SHA256SUMS and signature"):
        _describe(job, lasting, layer, layout, digests)


def _convert(raw: Path, template: Template, epoch: int, digests: Digests, grains: Path) -> None:
    """The vmdk (compressed: the slow one) on a thread of its own while qcow2 and vhd are made."""
    vmdk_file, qcow2, vhd = (template.output(suffix) for suffix in ("vmdk", "qcow2", "vhd"))
    with ThreadPoolExecutor(max_workers=1) as side:
        compressing = side.submit(vmdk.write, raw, vmdk_file, epoch, grains)
        formats.qcow2(raw, qcow2)
        digests.add(qcow2)
        formats.vhd(raw, vhd, epoch)
        digests.add_extension(vhd, raw)  # a fixed VHD: the raw disk, then its footer
        compressing.result()
    digests.add(vmdk_file)


def _check_cached(rebuild: Rebuild, deb_cache: Path) -> None:
    missing = debs.missing(list(rebuild.packages(ours=False) + rebuild.packages(ours=True)), deb_cache)
    if missing:
        raise VrpipeError(f"cannot rebuild offline: {len(missing)} .deb(s) of the manifest missing:\n  "
                          + "\n  ".join(missing),
                          hint="put those .debs into the package cache (a build online with these versions keeps them)")


def _control_stanzas(packages: tuple[dict, ...], deb_cache: Path) -> str:
    """The control stanzas of these cached .debs, as a Packages index would list them."""
    return "\n".join(run(["dpkg-deb", "--field", deb_cache / debs.file_name(p)]).stdout for p in packages)


def _describe(job: Job, lasting: router.OurRepository, layer: base.Layer, layout: disk.DiskLayout,
              digests: Digests) -> None:
    template = job.template
    kinds = {"tar": "rootfs-tar", "raw": "raw", "qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk", "ova": "ova"}
    outputs = [manifest.Output(template.output(suffix), kind) for suffix, kind in kinds.items()]
    outputs += [manifest.Output(template.kernel, "kernel"), manifest.Output(template.initrd, "initrd")]
    extra = {
        "repository": {"url": lasting.url, "suites": list(lasting.suites)},
        "kernel_cmdline": layout.kernel_cmdline,
    }
    # each package with its .deb's sha256, and the base layer's with the archive's priority: a rebuild needs both
    archive = base.priorities(layer)
    packages = [{**p, **({"priority": archive[p["name"]]} if p["name"] in archive else {})}
                for p in debs.with_digests(manifest.installed_packages(template.rootfs_dir), job.deb_cache)]
    written = manifest.write_manifest(template.folder / "manifest.json", job.config, packages, outputs, extra,
                                      digests.__getitem__)
    sums = template.folder / "SHA256SUMS"
    manifest.write_checksums(sums, [o.path for o in outputs] + [template.folder / "manifest.json"], written)
    manifest.sign(sums, job.repo_config.gnupghome, publish.archive_key(job.repo_config))


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
def _served(repo_config: RepoConfig, instead: object = None) -> Iterator[str]:
    """Our repository on a free loopback port for the duration of the install (not when another source
    is given instead)."""
    if instead is not None:
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


def config_for(template_settings: dict | None, rebuild: Rebuild | None, **overrides) -> TemplateConfig:
    """The build's configuration: a manifest's suite, mirrors and date win over settings and options."""
    given = {name: value for name, value in overrides.items() if value is not None}
    return load_config(template_settings, **given, **(rebuild.settings if rebuild else {}))


def build_command(template_settings: dict | None, repo_settings: dict | None, from_manifest: str | None = None,
                  **overrides) -> str:
    """What `invoke build-template` runs: progress on the log; returns the one-line summary."""
    rebuild = Rebuild.read(Path(from_manifest)) if from_manifest else None
    config = config_for(template_settings, rebuild, **overrides)
    template = build_template(config, load_repo_config(repo_settings), rebuild=rebuild)
    return f"build-template: outputs in {template.folder}: " + ", ".join(sorted(
        p.name for p in template.folder.iterdir() if p.is_file() and not p.name.startswith(".")))
