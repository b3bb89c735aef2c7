"""`invoke build-template`: serve our signed repository on loopback (publishing it first on a fresh
checkout), install the rootfs from it, set the router up, and make every output (rootfs tarball, raw,
qcow2, vhd, vmdk, ova, kernel, initrd) with manifest.json, SHA256SUMS and its signature; numbered steps,
one summary line.
"""

import fcntl
import hashlib
import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from repo import publish, serve
from repo.config import RepoConfig
from repo.config import load as load_repo_config
from vrpipe.errors import VrpipeError
from vrpipe.log import Steps

from . import disk, formats, manifest, rootfs, router
from .config import PROJECT, TemplateConfig, load_config
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


def build_template(
    config: TemplateConfig, repo_config: RepoConfig, reuse: bool = False, republish: bool = False
) -> Template:
    """Build everything into config.output_dir; with reuse, keep a finished build of the same inputs;
    with republish, first publish this checkout's packages into a fresh repository (tests do). Builds
    into one folder take turns, so a second one waiting for the first finds its result."""
    template = Template(config.output_dir)
    # one build at a time per output folder, and per .deb cache (each build replaces the cache)
    with _locked(_lock_file(config.output_dir)), _locked(_lock_file(config.cache_dir)):
        inputs = inputs_digest(config, repo_config)
        if reuse and is_built(config, repo_config):
            log.info("build-template: reusing %s (same inputs %s)", template.folder, inputs[:12])
            return template
        if republish:
            shutil.rmtree(repo_config.dir, ignore_errors=True)
        steps = Steps("build-template", total=12)
        _clear(template.folder)
        work = template.folder / ".work"
        work.mkdir(parents=True)
        _build(config, repo_config, template, work, steps)
        shutil.rmtree(work)
        (template.folder / STAMP).write_text(inputs)
    log.info(steps.summary(f"{NAME} {config.suite} built into {template.folder}"))
    return template


def _lock_file(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.with_name(folder.name + ".lock")


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(config: TemplateConfig, repo_config: RepoConfig, template: Template, work: Path, steps: Steps):
    epoch, root = config.source_date_epoch, template.rootfs_dir
    with steps.step("our signed repository (published now if it has never been)"):
        if not repo_config.public.exists():
            log.info("%s is not published yet: publishing this checkout's packages", repo_config.dir)
            publish.publish(repo_config)
        channel = repo_config.channel(None)
    with steps.step(f"install the rootfs ({config.suite}, mmdebstrap)"), _served(repo_config) as url:
        make_dirs(root)  # the rootfs's own / : its mode goes into the tarball and the ext4 root
        rootfs.install(config, rootfs.BuildRepo(url, channel, repo_config.keyring), root, work)
    with steps.step("router set-up"):
        source = router.OurRepository(repo_config.url, repo_config.channels, repo_config.keyring)
        router.configure(root, config, source)
        router.forget_build(root)
        shutil.copyfile(root / "vmlinuz", template.kernel)
        shutil.copyfile(root / "initrd.img", template.initrd)
        rootfs.clamp_times(root, epoch)
    with steps.step("rootfs tarball"):
        rootfs.pack(root, template.output("tar"), epoch)
    layout = disk.plan(config)
    with steps.step("boot partition (syslinux, GRUB EFI)"):
        disk.make_esp(layout, template.kernel, template.initrd, work / "esp.img", work, epoch)
    with steps.step("root filesystem (ext4)"):
        disk.make_root_fs(layout, root, work / "root.img", epoch)
    raw = template.output("raw")
    with steps.step("raw disk image (GPT)"):
        disk.assemble(layout, work / "esp.img", work / "root.img", raw)
    with steps.step("qcow2"):
        formats.qcow2(raw, template.output("qcow2"))
    with steps.step("vhd (fixed)"):
        formats.vhd(raw, template.output("vhd"), epoch)
    with steps.step("vmdk (streamOptimized)"):
        formats.vmdk(raw, template.output("vmdk"), epoch)
    with steps.step("ova"):
        formats.ova(template.output("vmdk"), template.output("ova"), epoch, raw.stat().st_size, NAME)
    with steps.step("manifest, SHA256SUMS and signature"):
        _describe(config, repo_config, template, layout, root)


def _describe(config, repo_config, template, layout, root):
    kinds = {"tar": "rootfs-tar", "raw": "raw", "qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk", "ova": "ova"}
    outputs = [manifest.Output(template.output(suffix), kind) for suffix, kind in kinds.items()]
    outputs += [manifest.Output(template.kernel, "kernel"), manifest.Output(template.initrd, "initrd")]
    extra = {
        "repository": {"url": repo_config.url, "suites": list(repo_config.channels)},
        "kernel_cmdline": layout.kernel_cmdline,
    }
    written = manifest.write_manifest(
        template.folder / "manifest.json", config, manifest.installed_packages(root), outputs, extra
    )
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
def _served(repo_config: RepoConfig) -> Iterator[str]:
    """Our repository on a free loopback port for the duration of the install."""
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


def build_command(template_settings: dict | None, repo_settings: dict | None, **overrides) -> str:
    """What `invoke build-template` runs: progress on the log; returns the one-line summary."""
    template = build_template(load_config(template_settings, **overrides), load_repo_config(repo_settings))
    return f"build-template: outputs in {template.folder}: " + ", ".join(sorted(
        p.name for p in template.folder.iterdir() if p.is_file() and not p.name.startswith(".")))
