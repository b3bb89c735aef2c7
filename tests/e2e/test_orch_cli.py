"""The `vrpipe` command end to end, as an operator runs it, against routers booted as system containers:
create and start, list, add and remove rules, apply files, health; two vrpipe processes applying to the
same router at once are serialized by the router's lock and both land, in the store and on the router.
"""

import json
import os
import subprocess
import sys

import pytest

from orchestration.lab import workload
from orchestration.lab.lab import Lab
from orchestration.manager import Manager
from orchestration.settings import ManagerConfig

from .orch_fixtures import manager_config

pytestmark = pytest.mark.e2e
ROUTER = "c1"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cli")
    config = manager_config(state_dir, tag="c")
    config.save()
    manager = Manager(config)
    lab = Lab(manager, config.netns_prefix)
    try:
        lab.up_public()
        yield state_dir
    finally:
        lab.down()
        manager.close()


def vrpipe(state_dir, *args, check=True):
    argv = [sys.executable, "-m", "orchestration.cli", "--state-dir", str(state_dir), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def start_vrpipe(state_dir, *args):
    argv = [sys.executable, "-m", "orchestration.cli", "--state-dir", str(state_dir), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_commands(path, commands):
    path.write_text(json.dumps(commands))
    return path


def test_create_start_list_and_health(state_dir):
    proc = vrpipe(state_dir, "create", ROUTER, "--network", f"eth1=g-{ROUTER}", "--network", "eth2=pub", "--start")
    assert f"created {ROUTER}" in proc.stderr.splitlines()[-1]
    listing = json.loads(vrpipe(state_dir, "--json", "list").stdout)
    assert [(r["name"], r["status"]) for r in listing] == [(ROUTER, "running")]
    assert json.loads(vrpipe(state_dir, "--json", "health", ROUTER).stdout)["ok"]


def test_two_vrpipe_processes_applying_at_once_both_land(state_dir, tmp_path):
    interfaces = {k: v for k, v in workload.interfaces().items() if k != "control"}
    vrpipe(state_dir, "add", ROUTER, "interfaces", json.dumps(interfaces))
    first = write_commands(tmp_path / "a.json", workload.vm_commands(range(0, 50)))
    second = write_commands(tmp_path / "b.json", {"commands": workload.vm_commands(range(50, 100))})
    procs = [
        start_vrpipe(state_dir, "apply", ROUTER, str(first)),
        start_vrpipe(state_dir, "apply", ROUTER, str(second)),
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "200 commands applied to c1" in err
    desired = json.loads(vrpipe(state_dir, "--json", "state", ROUTER).stdout)
    assert len(desired["dhcp"]) == len(desired["firewall"]) == 100
    health = json.loads(vrpipe(state_dir, "--json", "health", ROUTER).stdout)
    assert health["state"]["dhcp"] == health["nftables"]["port_forwards"] == 100


def test_a_bad_rule_is_refused_naming_the_field(state_dir):
    proc = vrpipe(state_dir, "add", ROUTER, "dhcp", '{"mac": "nope", "ip": "10.128.0.5", "hostname": "x"}', check=False)
    assert proc.returncode == 1
    assert "commands[0].data.mac" in proc.stderr


def test_remove_one_rule_then_replay(state_dir):
    mac = workload.vm_mac(0)
    vrpipe(state_dir, "remove", ROUTER, "dhcp", json.dumps({"mac": mac}))
    assert mac not in vrpipe(state_dir, "state", ROUTER).stdout
    proc = vrpipe(state_dir, "replay", ROUTER)
    assert "replay: 1/1 router ok" in proc.stderr


def test_settings_given_at_create_are_kept_with_the_router(state_dir, tmp_path):
    """README "Operating routers": after `create` with --rootfs, list/stop/start/destroy need nothing more."""
    other = tmp_path / "state"
    config = manager_config(other, tag="k")
    rootfs = config.rootfs
    ManagerConfig(other, host_netns=config.host_netns, ssh_netns=config.ssh_netns,
                  netns_prefix=config.netns_prefix).save()  # no rootfs in the saved settings
    manager = Manager(ManagerConfig.load(other))
    lab = Lab(manager, config.netns_prefix)
    try:
        lab.up_public()
        vrpipe(other, "--rootfs", str(rootfs), "create", "k1", "--network", "eth1=g-k1", "--network", "eth2=pub")
        assert "k1" in vrpipe(other, "list").stdout
        vrpipe(other, "start", "k1")
        assert json.loads(vrpipe(other, "--json", "list").stdout)[0]["status"] == "running"
        vrpipe(other, "stop", "k1")
        destroyed = vrpipe(other, "destroy", "k1")
        assert "desired state" in destroyed.stderr and "deleted" in destroyed.stderr
        assert vrpipe(other, "list").stdout.strip() == ""
    finally:
        lab.down()
        manager.close()


def test_a_closed_pipe_is_no_failure(state_dir):
    """`vrpipe state c1 | head`: the reader is gone before vrpipe writes; vrpipe exits 0, says nothing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    argv = [sys.executable, "-m", "orchestration.cli", "--state-dir", str(state_dir), "--json", "state", ROUTER]
    proc = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr
