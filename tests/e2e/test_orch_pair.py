"""A redundant pair made and run through the `vrpipe` command, on container routers from the template: one
`create --redundant` gives two members and their sync link; a VM's DHCP entry and a port forward applied to
the pair reach both members (one apply each) and are recorded once; exactly one member is MASTER and serves;
the MASTER stopped, the other takes over (`vrpipe health`) and serves; the stopped member recreated from the
store rejoins as BACKUP with the whole state (an entry added while it was down too); `vrpipe watch` finds
both healthy; `vrpipe reboot` of the pair goes BACKUP first, hands over, then the old MASTER; `destroy`
removes both. One pair is shared by the tests of this file, in order.
"""

import json
import sys
import time

import pytest
from vr import contract

from orchestration.lab.lab import Lab, public_ip
from orchestration.manager import Manager

from .engine_fixtures import connect, serve
from .orch_fixtures import manager_config
from .test_orch_cli import vrpipe, write_commands

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(sys.platform != "linux", reason="needs Linux namespaces")]
PAIR = "p1"
MEMBERS = ("p1-a", "p1-b")
FORWARD = 2200  # lab.vm_commands: public_ip(0):2200 -> the VM's port 7000
LATER = {"mac": "02:00:00:00:00:0b", "ip": "10.1.1.11", "hostname": "vm1"}  # added while a member is down


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("pair")
    config = manager_config(state_dir, tag="p")
    config.save()
    manager = Manager(config)
    lab = Lab(manager, config.netns_prefix)
    try:
        lab.up_public()
        vrpipe(state_dir, "create", PAIR, "--redundant", "--network", f"eth1=g-{PAIR}", "--network", "eth2=pub",
               "--start")
        vm = lab.add_vm(PAIR, 0, 0)
        serve(vm.ns, 7000, "vm0")
        yield state_dir, manager, lab, vm
    finally:
        lab.down()
        manager.close()


def roles(state_dir):
    listing = json.loads(vrpipe(state_dir, "--json", "list").stdout)
    return {r["name"]: r["vrrp"] for r in listing if r["pair"] == PAIR}


def health(state_dir):
    proc = vrpipe(state_dir, "--json", "health", PAIR, check=False)
    return proc.returncode, json.loads(proc.stdout), proc.stderr.splitlines()[-1]


def router_state(manager, member):
    status, out = manager.transport(member).execute([contract.command("vr-state")])
    assert status == 0, out
    return json.loads(out)["state"]


def forwarded(lab, attempts=5):
    """A new connection from the outside through the port forward reaches the VM (within `attempts` tries of
    3 s: seen once, the first try right after a takeover got no answer, the next one did)."""
    for attempt in range(attempts):
        if connect(lab.public, public_ip(0), FORWARD).startswith("vm0"):
            print(f"port forward answered at try {attempt + 1}")
            return True
    return False


def master_of(state_dir, other_than=None, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        now = roles(state_dir)
        masters = [m for m, r in now.items() if r == "MASTER"]
        if len(masters) == 1 and masters[0] != other_than:
            return masters[0]
        assert time.monotonic() < deadline, now
        time.sleep(0.5)


def test_one_create_makes_two_members_on_a_sync_link_of_their_own(lab):
    state_dir, manager, _, _ = lab
    pair = manager.store.pair(PAIR)
    assert pair is not None and pair.members == MEMBERS
    redundancy = manager.store.state(PAIR)["redundancy"]
    assert [m["name"] for m in redundancy["members"]] == list(MEMBERS)
    for member in MEMBERS:
        router = manager.store.router(member)
        assert router.status == "running" and router.pair == PAIR
        assert [n.bridge for n in router.networks] == [f"g-{PAIR}", "pub", pair.sync_bridge]


def test_an_apply_reaches_both_members_and_one_master_serves(lab, tmp_path):
    state_dir, manager, lab_, vm = lab
    commands = [c.to_json() for c in (*lab_.network_commands(0), *lab_.vm_commands(vm, 0, 0))]
    proc = vrpipe(state_dir, "apply", PAIR, str(write_commands(tmp_path / "vm.json", commands)))
    assert f"applied to {PAIR}" in proc.stderr
    states = [router_state(manager, m) for m in MEMBERS]
    for state in states:
        assert [d["mac"] for d in state["dhcp"]] == [vm.mac]
        assert [f["public_ports"] for f in state["port_forwarding"]] == [str(FORWARD)]
    assert states[0]["interfaces"]["control"] != states[1]["interfaces"]["control"]  # each its own
    assert {**states[0], "interfaces": None} == {**states[1], "interfaces": None}
    assert len(manager.store.state(PAIR)["dhcp"]) == 1
    master = master_of(state_dir)
    assert sorted(roles(state_dir).values()) == ["BACKUP", "MASTER"]
    status, reports, summary = health(state_dir)
    assert status == 0 and {m: r["vrrp"] for m, r in reports.items()} == roles(state_dir), summary
    assert f"{master} healthy (VRRP MASTER)" in summary
    assert lab_.dhcp(vm), "no lease from the pair"
    assert forwarded(lab_), "the port forward does not answer"


def test_the_other_member_takes_over_when_the_master_stops(lab):
    state_dir, _, lab_, vm = lab
    master = master_of(state_dir)
    vrpipe(state_dir, "stop", master)
    backup = master_of(state_dir, other_than=master)
    status, reports, summary = health(state_dir)
    assert status == 1 and reports[backup]["ok"] and reports[backup]["vrrp"] == "MASTER", summary
    assert f"{master} not answering" in summary and f"{backup} healthy (VRRP MASTER)" in summary
    assert lab_.dhcp(vm), "no DHCP renewal from the new MASTER"
    assert forwarded(lab_), "the port forward died with the MASTER"
    vrpipe(state_dir, "add", PAIR, "dhcp", json.dumps(LATER))  # to the member that serves


def test_the_failed_member_recreated_from_the_store_rejoins_as_backup(lab):
    state_dir, manager, _, vm = lab
    down = next(m for m, r in roles(state_dir).items() if r is None)  # stopped: no role
    serving = next(m for m in MEMBERS if m != down)
    vrpipe(state_dir, "recreate", down)
    assert roles(state_dir) == {serving: "MASTER", down: "BACKUP"}  # no preemption
    assert [d["mac"] for d in router_state(manager, down)["dhcp"]] == [vm.mac, LATER["mac"]]
    status, _, summary = health(state_dir)
    assert status == 0, summary


def test_watch_finds_both_members_healthy_the_backup_too(lab):
    state_dir, _, _, _ = lab
    proc = vrpipe(state_dir, "--json", "watch", "--rounds", "2", "--interval", "1", "--unhealthy-after", "1")
    watched = json.loads(proc.stdout)
    assert {m: watched[m]["health"] for m in MEMBERS} == {m: "healthy" for m in MEMBERS}, watched
    assert "2/2 routers healthy" in proc.stderr


def test_a_reboot_of_the_pair_is_rolling_backup_first(lab):
    state_dir, _, _, _ = lab
    master = master_of(state_dir)
    backup = next(m for m in MEMBERS if m != master)
    proc = vrpipe(state_dir, "reboot", PAIR)
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == [backup, master], proc.stdout
    assert f"{master}: handing over to {backup}" in proc.stderr
    assert master_of(state_dir) == backup and "2 of 2 rebooted" in proc.stderr


def test_destroy_removes_both_members(lab):
    state_dir, manager, _, _ = lab
    vrpipe(state_dir, "destroy", PAIR)
    assert json.loads(vrpipe(state_dir, "--json", "list").stdout) == []
    assert manager.store.pair(PAIR) is None
