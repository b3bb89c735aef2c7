"""Aggregation against a live router: queued commands are accepted at once and answered one by one after
finish; a query or a second start during an open queue is refused; cleanup empties the queue; one bad
command among 500 refuses the whole finish, naming it, with the router's rules and files as they were;
an SSH connection cut in the middle of a finish leaves the old or the new state and a retry converges;
a router whose host key changed is refused.
"""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestration.commands import Command, Query
from orchestration.lab import workload
from orchestration.resource import NoQueue, QueueOpen
from orchestration.transports import HostKeyChanged, SshOptions, TransportError
from vrpipe.run import run

from .engine_fixtures import wait_for
from .orch_fixtures import assert_healthy, close_lab, open_lab

pytestmark = pytest.mark.e2e
ROUTER = "agg"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # one try per call: these tests want to see a broken connection, not have it retried away
    manager, lab = open_lab(tmp_path_factory.mktemp("agg"), tag="g", ssh=SshOptions(attempts=1))
    try:
        lab.create_router(ROUTER)
        manager.start(ROUTER)
        router = manager.store.router(ROUTER)
        interfaces = workload.interfaces(control_ip=router.control_address)
        outcome = manager.apply(ROUTER, [Command("add", "interfaces", interfaces)])
        assert outcome.ok, outcome.error
        yield manager
    finally:
        close_lab(manager, lab)


def vm_commands(indices):
    return [Command(**c) for c in workload.vm_commands(indices)]


def router_files(manager):
    """What the engine programmed: the nftables ruleset (stateless: no counters) and dnsmasq's files."""
    argv = ["sh", "-c", "nft -s list ruleset; cat /etc/vr/dhcp-hosts /etc/vr/dhcp-options /etc/vr/hosts"]
    status, out = manager.transport(ROUTER).execute(argv)
    assert status == 0, out
    return out


def persisted_dhcp(manager):
    status, out = manager.transport(ROUTER).execute(["/opt/vr/bin/vr-state"])
    assert status == 0
    return {entry["mac"] for entry in json.loads(out)["state"]["dhcp"]}


def test_queued_commands_are_accepted_then_answered_per_command(lab):
    resource = lab.resource
    resource.start(ROUTER)
    answers = [resource.execute(ROUTER, c) for c in vm_commands(range(3))]
    assert all(a.accepted and a.ok for a in answers)
    outcome = resource.finish(ROUTER)
    assert outcome.ok, outcome.error
    assert [(a.command.type, a.ok) for a in outcome.answers] == [(c.type, True) for c in vm_commands(range(3))]
    assert not resource.is_open(ROUTER)
    assert persisted_dhcp(lab) == {workload.vm_mac(i) for i in range(3)}


def test_queries_and_a_second_start_are_refused_while_a_queue_is_open_and_cleanup_empties_it(lab):
    resource = lab.resource
    resource.start(ROUTER)
    try:
        resource.execute(ROUTER, vm_commands([10])[0])
        with pytest.raises(QueueOpen, match="health refused"):
            resource.query(ROUTER, Query.HEALTH)
        with pytest.raises(QueueOpen, match="already open"):
            resource.start(ROUTER)
        assert len(resource.queued(ROUTER)) == 1
    finally:
        resource.cleanup(ROUTER)
    assert resource.queued(ROUTER) == []
    with pytest.raises(NoQueue):
        resource.finish(ROUTER)
    assert_healthy(resource, ROUTER)
    assert workload.vm_mac(10) not in persisted_dhcp(lab)


def test_one_bad_command_among_500_refuses_the_finish_and_names_it(lab):
    before = router_files(lab)
    commands = vm_commands(range(100, 225))
    bad = 318
    assert commands[bad].type == "port_forwarding"
    commands[bad] = replace(commands[bad], data={**commands[bad].data, "vm_ports": "22-23"})
    assert len(commands) == 500
    resource = lab.resource
    resource.start(ROUTER)
    for command in commands:
        resource.execute(ROUTER, command)
    outcome = resource.finish(ROUTER)
    assert not outcome.ok
    assert f"command {bad} (port_forwarding add" in outcome.error
    assert f"commands[{bad}].data.vm_ports" in outcome.error
    assert [i for i, a in enumerate(outcome.answers) if a.error and "not applied" not in a.error] == [bad]
    assert router_files(lab) == before
    assert workload.vm_mac(100) not in persisted_dhcp(lab)


def vr_apply_running(manager):
    netns = manager.deployer(manager.store.router(ROUTER)).netns(manager.store.router(ROUTER))
    for pid in run(["ip", "netns", "pids", netns]).stdout.split():
        try:
            if b"vr-apply" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except FileNotFoundError:
            continue
    return None


def test_a_connection_cut_mid_finish_leaves_old_or_new_state_and_a_retry_converges(lab):
    old = persisted_dhcp(lab)
    commands = vm_commands(range(1000, 2000))
    new = old | {workload.vm_mac(i) for i in range(1000, 2000)}
    resource, transport = lab.resource, lab.transport(ROUTER)
    resource.start(ROUTER)
    for command in commands:
        resource.execute(ROUTER, command)
    failure = []
    finishing = threading.Thread(target=lambda: failure.append(_finish_error(resource)))
    finishing.start()
    apply_pid = wait_for(lambda: vr_apply_running(lab), "vr-apply to run on the router", timeout=60)
    run(["kill", "-KILL", str(transport.master_pid())])
    finishing.join(60)
    assert isinstance(failure[0], TransportError), failure
    assert resource.is_open(ROUTER), "the queue is kept for a retry after a broken connection"
    wait_for(lambda: not _alive(apply_pid), "the interrupted vr-apply to end", timeout=120)
    assert persisted_dhcp(lab) in (old, new)
    outcome = resource.finish(ROUTER)
    assert outcome.ok, outcome.error
    assert persisted_dhcp(lab) == new
    assert_healthy(lab, ROUTER)


def _finish_error(resource):
    try:
        resource.finish(ROUTER)
    except Exception as err:  # noqa: BLE001 - the test inspects it
        return err
    return None


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_changed_host_key_is_refused(lab):
    pinned = lab.store.router(ROUTER).host_key
    argv = ["sh", "-c", "rm /etc/ssh/ssh_host_*; ssh-keygen -q -A && systemctl restart ssh"]
    status, out = lab.transport(ROUTER).execute(argv)
    assert status == 0, out
    lab.connections.forget(ROUTER)  # the next call opens a new connection and meets the new key
    time.sleep(0.5)
    with pytest.raises(HostKeyChanged, match="refused"):
        lab.query(ROUTER, Query.HEALTH)
    assert lab.store.router(ROUTER).host_key == pinned
