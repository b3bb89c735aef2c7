"""The routing resource's bookkeeping, against a fake transport that answers as the engine does:
per-command runs, the aggregation queue (accept, refuse, finish once, cleanup) and per-command answers."""

import json

import pytest

from orchestration.commands import Command, Query
from orchestration.resource import BATCH_FILE, NoQueue, QueueOpen, RoutingResource
from orchestration.transports import Reply, TransportError


class FakeRouter:
    """Records what it was asked; answers vr-apply / vr-cmd with a canned engine result."""

    def __init__(self, result=None, fail=False):
        self.calls, self.copies, self.fail = [], [], fail
        self.result = result or {"ok": True}

    def run(self, argv, input=None, timeout=None):
        if self.fail:
            raise TransportError("connection reset")
        self.calls.append(argv)
        return Reply(0 if self.result.get("ok") else 1, json.dumps(self.result), "")

    def copy(self, text, path):
        if self.fail:
            raise TransportError("connection reset")
        self.copies.append((path, json.loads(text)))


def dhcp(i):
    return Command("add", "dhcp", {"mac": f"02:00:00:00:00:{i:02x}", "ip": f"10.1.1.{i}", "hostname": f"vm{i}"})


def resource_for(router):
    return RoutingResource(lambda name: router)


def test_per_command_mode_runs_vr_cmd_once_per_command():
    router = FakeRouter({"ok": True, "results": [{"index": 0, "ok": True}]})
    answer = resource_for(router).execute("r1", dhcp(5))
    assert answer.ok and not answer.accepted
    assert router.calls == [["/opt/vr/bin/vr-cmd", "dhcp", "add", json.dumps(dhcp(5).data, separators=(",", ":"))]]


def test_queued_commands_are_accepted_and_finish_sends_one_batch_once():
    router = FakeRouter({"ok": True, "results": [{"index": i, "ok": True} for i in range(3)]})
    resource = resource_for(router)
    resource.start("r1")
    assert all(resource.execute("r1", dhcp(i)).accepted for i in range(3))
    assert router.calls == []
    outcome = resource.finish("r1")
    assert outcome.ok and [a.ok for a in outcome.answers] == [True] * 3
    assert len(router.copies) == 1 and router.copies[0][0] == BATCH_FILE
    assert [c["data"]["hostname"] for c in router.copies[0][1]["commands"]] == ["vm0", "vm1", "vm2"]
    assert router.calls == [["/opt/vr/bin/vr-apply", BATCH_FILE]]
    assert not resource.is_open("r1")


def test_queries_and_second_starts_are_refused_while_the_queue_is_open():
    resource = resource_for(FakeRouter())
    resource.start("r1")
    with pytest.raises(QueueOpen):
        resource.query("r1", Query.HEALTH)
    with pytest.raises(QueueOpen):
        resource.start("r1")
    resource.query("r2", Query.HEALTH)  # other routers are not affected


def test_cleanup_drops_the_queue_and_finish_needs_a_start():
    resource = resource_for(FakeRouter())
    resource.start("r1")
    resource.execute("r1", dhcp(1))
    resource.cleanup("r1")
    assert resource.queued("r1") == []
    with pytest.raises(NoQueue):
        resource.finish("r1")
    with pytest.raises(NoQueue):
        resource.cleanup("r1")


def test_an_invalid_command_is_named_in_the_outcome():
    problems = [{"where": "commands[1].data.mac", "error": "is not a MAC address"}]
    result = {
        "ok": False,
        "error": "invalid document",
        "problems": problems,
        "results": [{"index": 0, "ok": False, "error": "not applied"}, {"index": 1, "ok": False, "problems": problems}],
    }
    resource = resource_for(FakeRouter(result))
    resource.start("r1")
    resource.execute("r1", dhcp(1))
    resource.execute("r1", dhcp(2))
    outcome = resource.finish("r1")
    assert not outcome.ok
    assert outcome.error == "command 1 (dhcp add (mac=02:00:00:00:00:02)): commands[1].data.mac: is not a MAC address"


def test_a_broken_connection_keeps_the_queue_for_a_retry():
    router = FakeRouter(fail=True)
    resource = resource_for(router)
    resource.start("r1")
    resource.execute("r1", dhcp(1))
    with pytest.raises(TransportError):
        resource.finish("r1")
    assert len(resource.queued("r1")) == 1
