"""vrpipe's tasks: build, publish, test and benchmark the virtual router.

Each task is thin: it parses its options and calls one function of a part (image/, repo/, vr_scripts/,
orchestration/). `invoke --list` shows them all; `invoke --help TASK` shows a task's options.
"""

import os
import sys
from collections.abc import Callable
from typing import Any

from invoke import Exit, task

PYTEST = [sys.executable, "-m", "pytest"]


def _call(name: str, job: Callable[..., Any], *args: Any, root: bool = False, **kwargs: Any) -> None:
    """The tasks' one error handler: run one function of a part with logging set up once; print the
    summary it returns, or its VrpipeError as one line and a hint, and exit 1 (a traceback only with
    VRPIPE_DEBUG=1). A job that returns False failed after saying why. root: the job makes namespaces,
    mounts or daemons, so it refuses to start without root (and leaves nothing behind)."""
    from vrpipe import log
    from vrpipe.errors import VrpipeError

    if root and os.geteuid() != 0:
        raise Exit(f"{name}: needs root (network namespaces, mounts, daemons): run it as root", code=1)
    log.setup(verbose=bool(os.environ.get("VRPIPE_DEBUG")))
    try:
        result = job(*args, **kwargs)
    except VrpipeError as e:
        if os.environ.get("VRPIPE_DEBUG"):
            raise
        print(f"{name}: failed: {e}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        raise Exit(code=1) from None
    except KeyboardInterrupt:
        raise Exit(f"{name}: interrupted", code=130) from None
    if result is False:
        raise Exit(code=1)
    if isinstance(result, str):
        print(result)


def _run(c, argv):
    """Run an argv list through invoke, echoing it; invoke takes a string, so quote each word."""
    import shlex

    c.run(shlex.join(argv), echo=True, pty=False)


@task(help={"keep": "leave the demo router namespace running (remove it with `invoke demo-down`)"})
def demo(c, keep=False):
    """Bring up a router namespace on this machine, apply a sample state and show what it programmed."""
    from orchestration.lab.demo import run_demo

    _call("demo", run_demo, keep=keep, root=True)


@task
def demo_down(c):
    """Remove what `invoke demo --keep` left running."""
    from orchestration.lab.demo import teardown_demo

    _call("demo-down", teardown_demo, root=True)


@task
def config(c):
    """Show every setting of the repository and the template: its value and where it came from."""
    from image.config import resolve as template_settings
    from repo.config import resolve as repo_settings

    def show() -> str:
        for part, resolved in (("repo", repo_settings(c.config.get("repo"))),
                               ("template", template_settings(c.config.get("template")))):
            print(f"[{part}]", *resolved.lines(), sep="\n")
        return "config: the manager's settings: vrpipe config"

    _call("config", show)


@task(help={"k": "only tests matching this pytest -k expression", "unit": "unit tests only"})
def test(c, k="", unit=False):
    """Run the whole test suite (unit and end-to-end; end-to-end needs root)."""
    argv = [*PYTEST, "tests/unit"] if unit else [*PYTEST]
    if k:
        argv += ["-k", k]
    _run(c, argv)


@task
def lint(c):
    """Check the code: ruff (style, imports, bugs), then mypy (types; its settings are in pyproject.toml)."""
    _run(c, [sys.executable, "-m", "ruff", "check", "."])
    _run(c, [sys.executable, "-m", "mypy"])


@task(
    help={
        "vms": "number of VMs in the benchmark state (default 1000)",
        "scale": "run 100, 1,000 and 10,000 VMs in one go, with the engine's peak RSS",
        "in-process": "no resident engine: every command applies in its own process",
        "vpc": "a VPC router instead: 20 tiers x 100 ACL rules x 10 CIDRs applied, connections/s at 10 and 2,000 rules",
    }
)
def bench_engine(c, vms=1000, scale=False, in_process=False, vpc=False):
    """Apply a state of N VMs to a router namespace, then one change; print each phase's time."""
    if vpc:
        from orchestration.lab.bench_vpc import bench_vpc

        _call("bench-engine", bench_vpc, root=True)
        return
    from orchestration.lab.bench_engine import bench_engine as main

    _call("bench-engine", main, vms=vms, scale=scale, in_process=in_process, root=True)


@task(
    help={
        "version": "package version to build (default: __version__ in vr_scripts/vr/__init__.py)",
        "channel": "channel to publish to (default: the first of repo.channels)",
        "refresh": "re-sign every distribution with a new Valid-Until (builds nothing unless --version is given)",
    }
)
def publish_repo(c, version=None, channel=None, refresh=False):
    """Build vr-scripts and vr-base and publish them (and vr-archive-keyring) to the signed apt repository."""
    from repo.commands import publish_repo as main

    _call("publish-repo", main, c.config.get("repo"), version, channel, refresh)


@task(
    help={
        "manifest": "the template's manifest.json (default: template.output_dir's)",
        "upstream": "Debian's security archive (default: the manifest's security_mirror)",
        "keyring": "the keyring Debian's Release must be signed by (default: debian-archive-keyring's)",
    }
)
def mirror_security(c, manifest=None, upstream=None, keyring=None):
    """Mirror Debian's <suite>-security for the template's packages into the repository, checked and re-signed."""
    from pathlib import Path

    from image.config import load_config
    from repo.commands import mirror_security as main
    from repo.mirror import DEBIAN_KEYRING

    where = Path(manifest) if manifest else load_config(c.config.get("template")).output_dir / "manifest.json"
    _call("mirror-security", main, c.config.get("repo"), where, upstream, Path(keyring) if keyring else DEBIAN_KEYRING)


@task(
    help={
        "key": "fingerprint of the new key (its secret key in repo.gnupghome); default: a new development key",
        "retire": "end the rotation: only the newest key signs, the keyring package holds only it",
    }
)
def rotate_key(c, key=None, retire=False):
    """Rotate the archive key: a new key signs beside the old one until --retire (see README, Keys)."""
    from repo.commands import rotate_key as main

    _call("rotate-key", main, c.config.get("repo"), key, retire)


@task(
    help={
        "url": "verify what is served at this URL (`-`: repo.url) instead of the local directory",
        "keyring": "public keyring to trust (default: the repository's own export)",
    }
)
def verify_repo(c, url=None, keyring=None):
    """Check signatures, index hashes, .deb hashes and Valid-Until of the published repository."""
    from repo.commands import verify_repo as main

    _call("verify-repo", main, c.config.get("repo"), url, keyring)


@task(help={"listen": "HOST:PORT to listen on (default: repo.listen, loopback)"})
def serve_repo(c, listen=None):
    """Serve the published repository over HTTP until interrupted."""
    from repo.commands import serve_repo as main

    _call("serve-repo", main, c.config.get("repo"), listen)


@task(
    help={
        "suite": "Debian suite of the router (default: template.suite in invoke.yaml, trixie)",
        "output": "folder for the outputs (default: template.output_dir, build/template)",
        "from-manifest": "rebuild exactly the template this manifest.json lists, offline, from the package cache",
    }
)
def build_template(c, suite=None, output=None, from_manifest=None):
    """Build the router template: rootfs from our signed repo, raw/qcow2/vhd/vmdk/ova, manifest, SHA256SUMS."""
    from image.build import build_command

    settings = c.config.get("template"), c.config.get("repo")
    _call("build-template", build_command, *settings, from_manifest=from_manifest, suite=suite, output_dir=output,
          root=True)


@task
def test_image(c):
    """Build the template (if its inputs changed) and boot every image format in qemu (slow: ~15 min)."""
    from pathlib import Path

    _run(c, [*PYTEST, *sorted(str(p) for p in Path("tests/e2e").glob("test_image_*.py"))])


@task
def bench_boot(c):
    """Boot the template's qcow2 and raw images one at a time: boot_ready_s, slowest units, console failures."""
    from image.boot_bench import bench_boot as main

    _call("bench-boot", main, c.config.get("template"), c.config.get("repo"), root=True)


@task
def bench_build(c):
    """A cold build (no base layer kept), a warm one (layer kept), then boot the warm one's qcow2 and raw."""
    from image.build_bench import bench_build as main

    _call("bench-build", main, c.config.get("template"), c.config.get("repo"), root=True)


@task(
    help={
        "names": "comma-separated routers (default: all)",
        "dry_run": "only report what would change",
        "canary": "the router upgraded first, alone",
        "batch": "routers per batch after the canary: N or N%",
        "failure_budget": "failed routers tolerated before the rollout stops",
        "repo_url": "our repository as routers reach it",
        "to": "install this version of our packages (also an older one) instead of the newest",
        "no_security": "leave Debian's security suite out",
        "state_dir": "the manager's state directory (default: vrpipe's)",
    }
)
def upgrade(
    c, names="", dry_run=False, canary=None, batch="1", failure_budget=0, repo_url=None, to=None, no_security=False,
    state_dir=None,
):
    """Upgrade live routers in place through apt (`vrpipe upgrade`): canary, batches, rollback on failure."""
    from orchestration.cli import main

    argv = [*(["--state-dir", state_dir] if state_dir else []), "upgrade", *filter(None, names.split(","))]
    argv += ["--batch", batch, "--failure-budget", str(failure_budget)]
    argv += [*(["--dry-run"] if dry_run else []), *(["--canary", canary] if canary else [])]
    argv += [*(["--repo-url", repo_url] if repo_url else []), *(["--to", to] if to else [])]
    argv += ["--no-security"] if no_security else []
    if main(argv) != 0:
        raise Exit(code=1)


@task(help={"routers": "routers in the fleet upgrade (default 20)", "batch": "batch size: N or N% (default 25%)"})
def bench_upgrade(c, routers=20, batch="25%"):
    """One router upgraded in place vs recreated from the template with a full replay; then a fleet upgrade."""
    from orchestration.lab.bench_upgrade import bench_upgrade as main

    _call("bench-upgrade", main, routers=routers, batch=batch, root=True)


@task(help={"rootfs": "router rootfs (default: the built template's, build/template/rootfs)"})
def bench_failover(c, rootfs=None):
    """A redundant pair under traffic: the MASTER stopped outright, its keepalived killed, a rolling reboot."""
    from orchestration.lab.bench_failover import bench_failover as main

    _call("bench-failover", main, rootfs=rootfs, root=True)


@task(
    help={
        "routers": "routers watched (default 20; the issue's fleet figure is 200)",
        "seconds": "how long to measure the watch's CPU (default 60: 6 rounds at the 10 s interval)",
        "rootfs": "router rootfs (default: the built template's, build/template/rootfs)",
    }
)
def bench_watch(c, routers=20, seconds=60, rootfs=None):
    """N routers watched at the 10 s interval by one manager: its CPU, one round's time, how soon a failure is seen."""
    from orchestration.lab.bench_watch import bench_watch as main

    _call("bench-watch", main, routers=int(routers), seconds=float(seconds), rootfs=rootfs, root=True)


@task(
    help={
        "seconds": "how long the throughput run sends (default 5)",
        "rootfs": "router rootfs (default: the built template's, build/template/rootfs)",
    }
)
def bench_vpn(c, seconds=5, rootfs=None):
    """Two lab routers as IPsec sites: time to a working tunnel, TCP throughput, traffic lost in an upgrade."""
    from orchestration.lab.bench_vpn import bench_vpn as main

    _call("bench-vpn", main, rootfs=rootfs, seconds=float(seconds), root=True)


@task(
    help={
        "routers": "routers in the lab (default 2)",
        "vms": "guest VMs per router (default 2)",
        "rootfs": "router rootfs (default: the built template's, build/template/rootfs)",
    }
)
def lab(c, routers=2, vms=2, rootfs=None):
    """Start a lab: routers as system containers, guest VMs with real DHCP clients, a public namespace."""
    from orchestration.lab.lab import lab_up
    from repo.config import load

    _call("lab", lambda: lab_up(routers, vms, rootfs, load(c.config.get("repo")).public), root=True)


@task
def lab_down(c):
    """Remove the lab `invoke lab` started: routers, VMs, namespaces."""
    from orchestration.lab.lab import lab_down as main

    _call("lab-down", main, root=True)


@task(
    help={
        "vms": "VMs in the replayed state (default 1000)",
        "sample": "per-command sample size (default 400)",
        "routers": "routers replayed in parallel (default 20)",
        "rootfs": "router rootfs (default: the built template's, build/template/rootfs)",
        "deployer": "container (default), or libvirt: one libvirt router beside one container router",
        "image": "the template qcow2 a libvirt router boots (default: build/template/vr-router.qcow2)",
    }
)
def bench_apply(c, vms=1000, sample=400, routers=20, rootfs=None, deployer="container", image=None):
    """Full replay of N VMs aggregated vs per command, end to end from the manager; then N routers in parallel.
    With --deployer libvirt: create-to-ready and replay time of a libvirt router beside a container router."""
    from orchestration.lab.bench_apply import bench_apply as main

    _call("bench-apply", main, vms=vms, sample=sample, routers=routers, rootfs=rootfs, deployer=deployer,
          image=image, root=True)
