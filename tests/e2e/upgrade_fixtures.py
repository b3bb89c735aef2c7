"""Fixtures for the upgrade tests: a lab (orchestration/upgrade_lab.py) of routers booted from the template
the tests share, a test repository signed by the key that template trusts and served to the routers on the
control network, and versions published to it, optionally with a postinst made to fail or to take its time
(a test-only build of vr-scripts; vr_scripts/ is not touched).
"""

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import repo.publish
from orchestration.lab.lab import Lab, public_ip
from orchestration.lab.security_fix import installed_version
from orchestration.lab.upgrade_lab import BALANCED_PORT, FORWARDED_PORT, bring_up, repo_served
from orchestration.manager import Manager
from orchestration.settings import ManagerConfig
from orchestration.upgrade.apt import SecuritySource, parse_release
from orchestration.upgrade.inplace import ROUTER_KEYRING, UpgradeConfig
from repo import signing
from vrpipe.run import run

from .image_fixtures import repo_config as template_repo_config
from .orch_fixtures import close_lab
from .orch_rootfs import router_rootfs
from .repo_fixtures import RFC2822, copy_tree, resign, throwaway_config

PROJECT = Path(__file__).resolve().parents[2]

POSTINST_FAILS = "echo 'vr-scripts test build: this postinst fails on purpose' >&2\nexit 1\n"
POSTINST_STARTED = "var/tmp/vr-test-postinst-started"
POSTINST_SLOW = f"touch /{POSTINST_STARTED}\nsleep 5\n"
SECURITY_SUITES = ("trixie-security", "bookworm-security")


@functools.cache
def base_version():
    """The vr-scripts version the routers start with: the shared template's (built now if needed)."""
    return installed_version(router_rootfs(), "vr-scripts")


def signed_repo_config(where, plays_debian=True):
    """A throw-away repository under `where`, signed by a private copy of the key the template trusts;
    besides our channels, it plays Debian's security suites of two releases (SECURITY_SUITES), unless
    it mirrors the real one (plays_debian False)."""
    channels = ("stable", "security", *(SECURITY_SUITES if plays_debian else ()))
    config = dataclasses.replace(throwaway_config(where), channels=channels)
    shutil.copytree(template_repo_config().gnupghome, config.gnupghome, ignore=shutil.ignore_patterns("S.*"))
    return config


def version(n):
    """The n-th test version after the one the rootfs has (Debian orders 1.0.0 < 1.0.0+up1 < 1.0.0+up2)."""
    return f"{base_version()}+up{n}"


def publish_version(config, version, postinst_prefix=""):
    """Publish our packages at `version` to the stable channel; postinst_prefix: shell lines run first
    in this build's vr-scripts postinst (a test-only variant; vr_scripts/ is not touched)."""
    if not postinst_prefix:
        return repo.publish.publish(config, version=version)
    real_build = repo.publish.build_packages

    def build(out_dir, version=None):
        debs = real_build(out_dir, version)
        for deb in debs:
            if deb.name.startswith("vr-scripts_"):
                _prefix_postinst(deb, postinst_prefix)
        return debs

    with mock.patch.object(repo.publish, "build_packages", build):
        return repo.publish.publish(config, version=version)


def _prefix_postinst(deb, lines):
    unpacked = deb.with_suffix(".unpacked")
    run(["dpkg-deb", "-R", str(deb), str(unpacked)])
    postinst = unpacked / "DEBIAN/postinst"
    postinst.write_text(postinst.read_text().replace("set -e\n", f"set -e\n{lines}", 1))
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(unpacked), str(deb)])
    shutil.rmtree(unpacked)


@dataclass
class UpgradeLab:
    manager: Manager
    lab: Lab
    repo: object  # RepoConfig of the test repository
    url: str
    first_tree: Path  # a copy of the tree served when the lab came up: older than every Release since
    vms: dict = field(default_factory=dict)  # router name -> its VM

    def config(self, **changes):
        """Our stable channel, and 'Debian security' pointed at our own security channel (no routers
        in tests reach Debian's mirrors)."""
        security = SecuritySource(self.url, "security", ROUTER_KEYRING)
        return UpgradeConfig(**{"repo_url": self.url, "security": security, **changes})

    @contextlib.contextmanager
    def serving(self, tree):
        """Serve `tree` at the repository's URL instead of the published one while the block runs."""
        public = self.repo.public
        published = public.readlink()
        _point(public, tree)
        try:
            yield
        finally:
            _point(public, published)

    @contextlib.contextmanager
    def ssh_cut(self):
        """Yields cut(address): from then on the hypervisor host drops what it sends to that address (the
        manager's SSH to a router, as a network failure would); the cut goes when the block ends."""
        host = self.lab.host

        def cut(address):
            run(["nft", "add", "table", "inet", "vrtestcut"], ns=host)
            run(["nft", "add", "chain", "inet", "vrtestcut", "out", "{ type filter hook output priority 0; }"], ns=host)
            run(["nft", "add", "rule", "inet", "vrtestcut", "out", "ip", "daddr", address, "drop"], ns=host)

        try:
            yield cut
        finally:
            run(["nft", "delete", "table", "inet", "vrtestcut"], ns=host, check=False)

    def execute(self, name, argv):
        status, out = self.manager.transport(name).execute(argv)
        assert status == 0, f"{name}: {argv} exited with {status}: {out}"
        return out

    def versions(self, name):
        out = self.execute(name, ["dpkg-query", "-W", "-f=${Package} ${Version}\n", "vr-base", "vr-scripts"])
        return dict(line.split() for line in out.splitlines())

    def ruleset(self, name):
        return self.execute(name, ["nft", "-s", "list", "table", "inet", "vr"])

    def health(self, name):
        return json.loads(self.execute(name, ["/opt/vr/bin/vr-health"]))

    def forwards(self, index):
        """What the router at `index` answers through its port forward and its load balancer."""
        answers = []
        for port in (FORWARDED_PORT, BALANCED_PORT):
            argv = [sys.executable, str(PROJECT / "tests/e2e/tcp_answer.py"), "--connect", public_ip(index)]
            answers.append(run([*argv, str(port), "3"], ns=self.lab.public, check=False, timeout=15).stdout.strip())
        return answers


def _point(link, target):
    """Point the served symlink at target in one rename, as a publish does."""
    new = link.with_name(link.name + ".test")
    new.unlink(missing_ok=True)
    new.symlink_to(target)
    os.replace(new, link)


def release_date(tree, codename="stable"):
    return parse_release((tree / "dists" / codename / "InRelease").read_text()).date


def expiring(tree, gnupghome, hours, codename="stable"):
    """Move the Valid-Until of codename's Release to `hours` from now, keep its Date, and sign it again."""
    release = tree / "dists" / codename / "Release"
    until = (datetime.now(UTC) + timedelta(hours=hours)).strftime(RFC2822)
    release.write_text(re.sub(r"^Valid-Until: .*$", f"Valid-Until: {until}", release.read_text(), flags=re.M))
    resign(tree, codename, gnupghome, signing.dev_key(gnupghome))


@contextlib.contextmanager
def upgrade_lab(tmp, names, tag="u", deployer="container", image=None, plays_debian=True):
    """Routers `names` (each with a VM that got its lease), the test repository at base_version() served to
    them; everything removed afterwards."""
    rootfs = router_rootfs()
    repo_config = signed_repo_config(tmp / "repo", plays_debian)
    publish_version(repo_config, base_version())
    first_tree = copy_tree(repo_config.public.resolve(), tmp / "first-tree")
    prefix = f"vu{os.getpid() % 100000}{tag}"
    config = ManagerConfig(
        tmp / "manager",
        rootfs=rootfs,
        image=image,
        host_netns=f"{prefix}hv",
        ssh_netns=f"{prefix}hv",
        netns_prefix=f"{prefix}-",
    )
    config.state_dir.mkdir(parents=True, exist_ok=True)  # the lab records its namespaces there at once
    manager = Manager(config)
    lab = Lab(manager, prefix)
    try:
        lab.up_public()
        with repo_served(lab.host, repo_config.public) as url:
            vms = bring_up(manager, lab, names, deployer=deployer)
            yield UpgradeLab(manager, lab, repo_config, url, first_tree, vms)
    finally:
        close_lab(manager, lab)
        signing.stop_agent(repo_config.gnupghome)
