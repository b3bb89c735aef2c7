"""vrpipe's tasks: build, publish, test and benchmark the virtual router.

Each task is thin: it parses its options and calls one function of a part (image/, repo/, vr_scripts/,
orchestration/). `invoke --list` shows them all; `invoke --help TASK` shows a task's options.
"""

import sys

from invoke import Exit, task

PYTEST = [sys.executable, "-m", "pytest"]


def _run(c, argv):
    """Run an argv list through invoke, echoing it; invoke takes a string, so quote each word."""
    import shlex

    c.run(shlex.join(argv), echo=True, pty=False)


@task(help={"keep": "leave the demo router namespace running (remove it with `invoke demo-down`)"})
def demo(c, keep=False):
    """Bring up a router namespace on this machine, apply a sample state and show what it programmed."""
    from orchestration.demo import run_demo

    if not run_demo(keep=keep):
        raise Exit(code=1)


@task
def demo_down(c):
    """Remove what `invoke demo --keep` left running."""
    from orchestration.demo import teardown_demo

    teardown_demo()


@task(help={"k": "only tests matching this pytest -k expression", "unit": "unit tests only"})
def test(c, k="", unit=False):
    """Run the whole test suite (unit and end-to-end; end-to-end needs root)."""
    argv = [*PYTEST, "tests/unit"] if unit else [*PYTEST]
    if k:
        argv += ["-k", k]
    _run(c, argv)


@task
def lint(c):
    """Check the code with ruff."""
    _run(c, [sys.executable, "-m", "ruff", "check", "."])


@task(help={"vms": "number of VMs in the benchmark state (default 1000)"})
def bench_engine(c, vms=1000):
    """Apply a state of N VMs to a router namespace, then one change; print each phase's time."""
    from orchestration.bench import bench_engine as main

    if not main(vms=vms):
        raise Exit(code=1)


@task(
    help={
        "version": "package version to build (default: __version__ in vr_scripts/vr/__init__.py)",
        "channel": "channel to publish to (default: the first of repo.channels)",
        "refresh": "re-sign every distribution with a new Valid-Until even if nothing changed",
    }
)
def publish_repo(c, version=None, channel=None, refresh=False):
    """Build vr-scripts and vr-base and publish them to the signed apt repository (prints the time)."""
    from repo.commands import publish_repo as main

    if not main(c.config.get("repo"), version, channel, refresh):
        raise Exit(code=1)


@task(
    help={
        "url": "verify what is served at this URL (`-`: repo.url) instead of the local directory",
        "keyring": "public keyring to trust (default: the repository's own export)",
    }
)
def verify_repo(c, url=None, keyring=None):
    """Check signatures, index hashes, .deb hashes and Valid-Until of the published repository."""
    from repo.commands import verify_repo as main

    if not main(c.config.get("repo"), url, keyring):
        raise Exit(code=1)


@task(help={"listen": "HOST:PORT to listen on (default: repo.listen, loopback)"})
def serve_repo(c, listen=None):
    """Serve the published repository over HTTP until interrupted."""
    from repo.commands import serve_repo as main

    if not main(c.config.get("repo"), listen):
        raise Exit(code=1)


@task(
    help={
        "suite": "Debian suite of the router (default: template.suite in invoke.yaml, trixie)",
        "output": "folder for the outputs (default: template.output_dir, build/template)",
    }
)
def build_template(c, suite=None, output=None):
    """Build the router template: rootfs from our signed repo, raw/qcow2/vhd/vmdk/ova, manifest, SHA256SUMS."""
    from image.build import build_command

    if not build_command(c.config.get("template"), c.config.get("repo"), suite=suite, output_dir=output):
        raise Exit(code=1)


@task
def test_image(c):
    """Build the template (if its inputs changed) and boot every image format in qemu (slow: ~15 min)."""
    from pathlib import Path

    _run(c, [*PYTEST, *sorted(str(p) for p in Path("tests/e2e").glob("test_image_*.py"))])


@task
def bench_boot(c):
    """Boot the template's qcow2 and raw images one at a time: boot_ready_s, slowest units, console failures."""
    from image.boot_bench import bench_boot as main

    if not main(c.config.get("template"), c.config.get("repo")):
        raise Exit(code=1)


@task(
    help={
        "names": "comma-separated routers (default: all)",
        "dry_run": "only report what would change",
        "canary": "the router upgraded first, alone",
        "batch": "routers per batch after the canary: N or N%",
        "failure_budget": "failed routers tolerated before the rollout stops",
        "repo_url": "our repository as routers reach it",
        "state_dir": "the manager's state directory (default: vrpipe's)",
    }
)
def upgrade(c, names="", dry_run=False, canary=None, batch="1", failure_budget=0, repo_url=None, state_dir=None):
    """Upgrade live routers in place through apt (`vrpipe upgrade`): canary, batches, rollback on failure."""
    from orchestration.cli import main

    argv = [*(["--state-dir", state_dir] if state_dir else []), "upgrade", *filter(None, names.split(","))]
    argv += ["--batch", batch, "--failure-budget", str(failure_budget)]
    argv += [*(["--dry-run"] if dry_run else []), *(["--canary", canary] if canary else [])]
    argv += ["--repo-url", repo_url] if repo_url else []
    if main(argv) != 0:
        raise Exit(code=1)


@task(help={"routers": "routers in the fleet upgrade (default 20)", "batch": "batch size: N or N% (default 25%)"})
def bench_upgrade(c, routers=20, batch="25%"):
    """One router upgraded in place vs recreated from the template with a full replay; then a fleet upgrade."""
    from orchestration.upgrade_bench import bench_upgrade as main

    if not main(routers=routers, batch=batch):
        raise Exit(code=1)


@task(
    help={
        "routers": "routers in the lab (default 2)",
        "vms": "guest VMs per router (default 2)",
        "rootfs": "router rootfs (default: the built template's, build/template/rootfs)",
    }
)
def lab(c, routers=2, vms=2, rootfs=None):
    """Start a lab: routers as system containers, guest VMs with real DHCP clients, a public namespace."""
    from orchestration.lab import lab_up

    if not lab_up(routers, vms, rootfs):
        raise Exit(code=1)


@task
def lab_down(c):
    """Remove the lab `invoke lab` started: routers, VMs, namespaces."""
    from orchestration.lab import lab_down as main

    if not main():
        raise Exit(code=1)


@task(
    help={
        "vms": "VMs in the replayed state (default 1000)",
        "sample": "per-command sample size (default 400)",
        "routers": "routers replayed in parallel (default 20)",
        "rootfs": "router rootfs (default: the built template's, build/template/rootfs)",
    }
)
def bench_apply(c, vms=1000, sample=400, routers=20, rootfs=None):
    """Full replay of N VMs aggregated vs per command, end to end from the manager; then N routers in parallel."""
    from orchestration.bench_apply import bench_apply as main

    if not main(vms=vms, sample=sample, routers=routers, rootfs=rootfs):
        raise Exit(code=1)
