"""The jump-host transport: the manager's namespace reaches no control address itself; an sshd in the
namespace that plays the hypervisor host is the jump host, and the router is reached through it on its
link-local control address (boot, full replay, health and a change, all through the jump).
"""

import subprocess
from pathlib import Path

import pytest

from orchestration.commands import Command
from orchestration.lab.netns import Link, Namespaces
from orchestration.store import Network
from orchestration.transports import ensure_key
from vrpipe.run import run

from .orch_fixtures import assert_healthy, close_lab, open_lab

pytestmark = pytest.mark.e2e
MANAGER_IP, HYPERVISOR_IP = "198.51.100.1", "198.51.100.2"
SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PidFile {dir}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
"""


@pytest.fixture(scope="module")
def jump_lab(tmp_path_factory):
    """A lab whose manager runs ssh from its own namespace, linked only to the hypervisor host's sshd."""
    state_dir = tmp_path_factory.mktemp("jump")
    with Namespaces(prefix="voj") as namespaces:
        management = namespaces.add("mgmt")
        manager, lab = open_lab(state_dir, tag="j", ssh_netns=management)
        sshd = None
        try:
            host = manager.config.host_netns
            namespaces.veth(Link(management, "mgmt0"), Link(host, "mgmt0"))
            run(["ip", "address", "add", f"{MANAGER_IP}/24", "dev", "mgmt0"], ns=management)
            run(["ip", "address", "add", f"{HYPERVISOR_IP}/24", "dev", "mgmt0"], ns=host)
            sshd = start_sshd(host, state_dir / "sshd", Path(f"{ensure_key(manager.key)}.pub"))
            yield manager, lab, management
        finally:
            if sshd is not None:
                sshd.kill()
                sshd.wait()
            close_lab(manager, lab)


def start_sshd(ns, directory, authorized_key):
    directory.mkdir()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "host_key")])
    (directory / "authorized_keys").write_text(authorized_key.read_text())
    config = directory / "sshd_config"
    config.write_text(SSHD_CONFIG.format(address=HYPERVISOR_IP, dir=directory))
    argv = ["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)]
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_router_is_reached_through_the_hypervisor_host(jump_lab):
    manager, lab, management = jump_lab
    router = manager.create("j1", [Network("eth1", "g-j1")], jump_host=f"root@{HYPERVISOR_IP}:22")
    unreachable = run(["ping", "-c", "1", "-W", "1", router.control_address], ns=management, check=False)
    assert unreachable.returncode != 0, "the manager's namespace must not reach control addresses directly"
    assert manager.start("j1").ok
    assert_healthy(manager, "j1")
    guests = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.9.0.1/24"}]})
    outcome = manager.apply("j1", [guests])
    assert outcome.ok, outcome.error
    assert manager.store.router("j1").host_key
    assert HYPERVISOR_IP in manager.connections.hypervisor_known_hosts.read_text()
