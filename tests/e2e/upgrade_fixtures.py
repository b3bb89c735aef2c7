"""Fixtures for the upgrade tests: a lab of system-container routers booted from the upgrade rootfs, each
with a VM behind a port forward, a load balancer and source NAT; a test repository served inside the
hypervisor-host namespace (where routers reach it over the control network); versions published to it,
optionally with a postinst made to fail or to take its time; and traffic that runs during an upgrade.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from unittest import mock

import repo.publish
from orchestration.commands import Command
from orchestration.fleet import for_each
from orchestration.lab import Lab, public_ip
from orchestration.manager import Manager, ManagerConfig
from orchestration.netns import run
from orchestration.upgrade import ROUTER_KEYRING, UpgradeConfig
from orchestration.upgrade_apt import AptSource
from repo import signing

from .engine_fixtures import serve, wait_for
from .orch_fixtures import close_lab
from .orch_rootfs import PROJECT
from .upgrade_rootfs import BASE_VERSION, signed_repo_config, upgrade_rootfs

REPO_ADDRESS = "169.254.0.1:8080"  # the control gateway, in the hypervisor-host namespace
VM_PORT = 7000
POSTINST_FAILS = "echo 'vr-scripts test build: this postinst fails on purpose' >&2\nexit 1\n"
POSTINST_STARTED = "var/tmp/vr-test-postinst-started"
POSTINST_SLOW = f"touch /{POSTINST_STARTED}\nsleep 5\n"


def version(n):
    """The n-th test version after the one the rootfs has (Debian orders 1.0.0 < 1.0.0+up1 < 1.0.0+up2)."""
    return f"{BASE_VERSION}+up{n}"


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


@contextlib.contextmanager
def repo_served(ns, directory, address=REPO_ADDRESS):
    """repo/serve.py serving `directory` at address inside namespace ns; yields the URL routers use."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.e2e.repo_in_netns", str(directory), address]
    proc = subprocess.Popen(argv, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{address}/"
    try:
        probe = ["curl", "-sf", "-o", "/dev/null", "-m", "2", f"{url}dists/stable/InRelease"]
        wait_for(lambda: run(probe, ns=ns, check=False).returncode == 0, f"the repository at {url}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class UpgradeLab:
    manager: Manager
    lab: Lab
    repo: object  # RepoConfig of the test repository
    url: str
    vms: dict = field(default_factory=dict)  # router name -> its VM

    def config(self, **changes):
        """Our stable channel, and 'Debian security' pointed at our own security channel (no routers
        in tests reach Debian's mirrors)."""
        security = AptSource(self.url, ("security",), ROUTER_KEYRING)
        return UpgradeConfig(**{"repo_url": self.url, "security": security, **changes})

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
        for port in (2200, 80):
            argv = [sys.executable, str(PROJECT / "tests/e2e/tcp_answer.py"), "--connect", public_ip(index)]
            answers.append(run([*argv, str(port), "3"], ns=self.lab.public, check=False, timeout=15).stdout.strip())
        return answers


def router_commands(lab, index, vm):
    ip = public_ip(index)
    commands = lab.network_commands(index) + lab.vm_commands(vm, index, 0)
    load_balancer = {"name": "web", "public_ip": ip, "port": 80, "backends": [{"ip": vm.ip, "port": VM_PORT}]}
    firewall = {"direction": "ingress", "public_ip": ip, "protocol": "tcp", "ports": "80", "cidrs": ["0.0.0.0/0"]}
    return commands + [
        Command("add", "source_nat", {"guest_cidr": "10.1.1.0/24", "public_ip": ip}),
        Command("add", "load_balancer", load_balancer),
        Command("add", "firewall", firewall),
    ]


@contextlib.contextmanager
def upgrade_lab(tmp, names, tag="u"):
    """Routers `names` (each with a VM that got its lease), the test repository at BASE_VERSION served to
    them; everything removed afterwards."""
    rootfs, key_home = upgrade_rootfs(tmp / "rootfs-work")
    repo_config = signed_repo_config(tmp / "repo", key_home)
    publish_version(repo_config, BASE_VERSION)
    prefix = f"vu{os.getpid() % 100000}{tag}"
    config = ManagerConfig(
        tmp / "manager", rootfs=rootfs, host_netns=f"{prefix}hv", ssh_netns=f"{prefix}hv", netns_prefix=f"{prefix}-"
    )
    manager = Manager(config)
    lab = Lab(manager, prefix)
    try:
        lab.up_public()
        with repo_served(lab.host, repo_config.public) as url:
            test_lab = UpgradeLab(manager, lab, repo_config, url)
            _bring_up(test_lab, names)
            yield test_lab
    finally:
        close_lab(manager, lab)
        signing.stop_agent(repo_config.gnupghome)


def _bring_up(test_lab, names):
    manager, lab = test_lab.manager, test_lab.lab
    for name in names:
        lab.create_router(name)
    started = for_each(names, manager.start, parallel=len(names))
    assert not any(started.values()), started
    for index, name in enumerate(names, 1):
        vm = lab.add_vm(name, index, 0)
        serve(vm.ns, VM_PORT, vm.name)
        outcome = manager.apply(name, router_commands(lab, index, vm))
        assert outcome.ok, outcome.error
        assert lab.dhcp(vm), f"{vm.name} got no lease"
        test_lab.vms[name] = vm


@contextlib.contextmanager
def traffic(test_lab, index, vm):
    """While the block runs: TCP connections from the public namespace through the router's port forward
    and its load balancer, and a ping from the VM through source NAT. Yields a dict that holds the
    counts once the block ends: connections, failed_connections, errors, pings, lost_pings."""
    ip = public_ip(index)
    loop = [sys.executable, str(PROJECT / "tests/e2e/traffic_loop.py"), "300", "0.05", f"{ip}:2200", f"{ip}:80"]
    ping = ["ping", "-n", "-i", "0.2", "-w", "300", "203.0.113.1"]
    procs = [
        subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, text=True)
        for ns, argv in ((test_lab.lab.public, loop), (vm.ns, ping))
    ]
    counts = {}
    try:
        yield counts
    finally:
        procs[0].send_signal(signal.SIGTERM)
        procs[1].send_signal(signal.SIGINT)
        loop_out, ping_out = (p.communicate(timeout=30)[0] for p in procs)
    result = json.loads(loop_out)
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", ping_out).groups())
    counts.update(
        connections=result["attempts"],
        failed_connections=result["failed"],
        errors=result["errors"][:5],
        pings=sent,
        lost_pings=sent - received,
    )
