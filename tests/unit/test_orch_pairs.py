"""Redundant pairs in the store and the manager, without routers: the sync link and `redundancy` section the
manager chooses (checked by the engine's own validation), one desired state read and recorded through the
pair's or either member's name, the same commands sent to each running member with its own control address
and recorded once, and `vrpipe upgrade`/`reboot` taking a pair through its rolling operation after the
single routers' rollout. (The routing resource and the rollouts are stand-ins that record what they got.)"""

import argparse

import pytest

from orchestration import pairing
from orchestration.cli import Output, _parser
from orchestration.commands import Command, validate
from orchestration.manager import Manager
from orchestration.resource import Answer, ApplyOutcome
from orchestration.settings import ManagerConfig
from orchestration.store import Network, NotFound, Store
from orchestration.transports import TransportError
from orchestration.upgrade import cli as upgrade_cli
from orchestration.upgrade import pairs
from orchestration.upgrade.inplace import UpgradeOutcome, UpgradeReport
from orchestration.upgrade.reboot import RebootOutcome
from vrpipe.errors import SettingsError, VrpipeError

DHCP = Command("add", "dhcp", {"mac": "02:00:00:00:00:05", "ip": "10.1.1.5", "hostname": "vm5"})
GUESTS = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]})


class Members:
    """Stands in for the routing resource: what each member was sent, and which members refuse."""

    def __init__(self) -> None:
        self.sent: dict[str, list[list[Command]]] = {}
        self.queue: dict[str, list[Command]] = {}
        self.refusing: set[str] = set()

    def start(self, router: str) -> None:
        self.queue[router] = []

    def execute(self, router: str, command: Command) -> Answer:
        if router in self.queue:
            self.queue[router].append(command)
            return Answer(command, ok=True, accepted=True)
        self.sent.setdefault(router, []).append([command])
        return Answer(command, router not in self.refusing, "refused" if router in self.refusing else None)

    def finish(self, router: str) -> ApplyOutcome:
        commands = self.queue.pop(router)
        self.sent.setdefault(router, []).append(commands)
        ok = router not in self.refusing
        return ApplyOutcome(ok, tuple(Answer(c, ok, None if ok else "refused") for c in commands), {})

    def is_open(self, router: str) -> bool:
        return router in self.queue

    def cleanup(self, router: str) -> None:
        self.queue.pop(router, None)


def make_pair(store: Store, name: str = "r1") -> None:
    """A pair in the store as Manager.create_pair leaves it (without its routers)."""
    pair = store.add_pair(name, pairing.member_names(name), pairing.sync_link)
    for member, letter, address in zip(pair.members, "ab", ("169.254.1.2", "169.254.1.3"), strict=True):
        store.add_router(member, "container", address, [Network("eth1", "g"), Network("eth2", pair.sync_bridge)],
                         member_of=(pair.id, letter))
        store.set_status(member, "running")
    control = {"device": "eth0", "address": "169.254.1.2/16"}
    interfaces = Command("add", "interfaces", {**GUESTS.data, "control": control})
    redundancy = pairing.redundancy(pair.id, pair.members, "eth2", pair.sync_network)
    store.record(name, validate([interfaces, redundancy], {}))


def hosts(state):
    return [entry["hostname"] for entry in state["dhcp"]]


@pytest.fixture
def manager(tmp_path):
    manager = Manager(ManagerConfig(tmp_path, database=f"sqlite:///{tmp_path / 'vrpipe.db'}"))
    make_pair(manager.store)
    manager.resource = Members()  # type: ignore[assignment]
    yield manager
    manager.close()


def test_the_manager_chooses_a_sync_link_of_its_own_per_pair():
    assert pairing.sync_link(1) == ("vrsync1", "172.30.0.8/29")
    assert pairing.sync_link(2) == ("vrsync2", "172.30.0.16/29")
    with pytest.raises(SettingsError, match="no sync network left"):
        pairing.sync_link(8192)
    assert pairing.sync_device([Network("eth1", "g"), Network("eth4", "p")]) == "eth5"
    assert pairing.sync_device([]) == "eth1"


def test_the_redundancy_section_passes_the_engines_checks():
    command = pairing.redundancy(1, ("r1-a", "r1-b"), "eth3", "172.30.0.8/29")
    (checked,) = validate([command], {})
    members = command.data["members"]
    assert [(m["name"], m["sync_address"], m["priority"]) for m in members] == [
        ("r1-a", "172.30.0.9/29", 200), ("r1-b", "172.30.0.10/29", 100)]
    assert checked.item.router_id == 1 and pairing.redundancy(256, ("x-a", "x-b"), "eth3", "172.30.8.0/29").data[
        "router_id"] == 1


def test_a_pair_is_one_desired_state_under_three_names(manager):
    store = manager.store
    assert manager.members("r1") == ("r1-a", "r1-b") and manager.members("r1-a") == ("r1-a",)
    assert store.state("r1") == store.state("r1-a") == store.state("r1-b")
    store.record("r1-b", validate([DHCP], store.state("r1")))
    assert hosts(store.state("r1")) == ["vm5"] == hosts(store.state("r1-a"))
    assert store.router("r1-b").pair == "r1" and store.router("r1-a").pair == "r1"
    store.check_known(["r1", "r1-b"])
    with pytest.raises(VrpipeError, match="already exists"):
        store.add_router("r1", "container", "169.254.1.9")
    with pytest.raises(VrpipeError, match="already exists"):
        store.add_pair("r1-a", ("r1-a-a", "r1-a-b"), pairing.sync_link)
    store.remove_pair("r1")
    assert store.routers() == [] and store.pairs() == []
    with pytest.raises(NotFound):
        store.state("r1")


def test_each_member_runs_the_pairs_state_with_its_own_control_address(manager):
    a, b = (manager.member_state(m) for m in ("r1-a", "r1-b"))
    assert a["interfaces"]["control"]["address"] == "169.254.1.2/16"
    assert b["interfaces"]["control"]["address"] == "169.254.1.3/16"
    assert {**a, "interfaces": None} == {**b, "interfaces": None}


def test_an_apply_goes_to_both_members_alike_and_is_recorded_once(manager):
    sent = manager.resource.sent
    assert manager.apply("r1", [GUESTS, DHCP]).ok
    (to_a,), (to_b,) = sent["r1-a"], sent["r1-b"]
    assert [c.type for c in to_a] == [c.type for c in to_b] == ["interfaces", "dhcp"]
    assert to_a[0].data["control"]["address"] == "169.254.1.2/16"
    assert to_b[0].data["control"]["address"] == "169.254.1.3/16"
    assert to_a[0].data["guests"] == to_b[0].data["guests"] and to_a[1] == to_b[1]
    state = manager.store.state("r1")
    assert hosts(state) == ["vm5"] and state["interfaces"]["control"]["address"] == "169.254.1.2/16"
    assert manager.store.state("r1-b") == state  # one copy, kept with member a
    # a member's name means its pair; per command: each member runs each command
    remove = Command("remove", "dhcp", {"mac": DHCP.data["mac"]})
    assert [a.ok for a in manager.apply("r1-b", [remove], aggregate=False)] == [True]
    assert sent["r1-a"][-1] == sent["r1-b"][-1] == [remove] and manager.store.state("r1")["dhcp"] == []


def test_a_refusal_by_the_first_member_records_nothing_and_spares_the_other(manager):
    manager.resource.refusing.add("r1-a")
    assert not manager.apply("r1", [DHCP]).ok
    assert "r1-b" not in manager.resource.sent and manager.store.state("r1")["dhcp"] == []


def test_a_stopped_member_is_skipped_and_a_failing_second_one_is_named(manager):
    manager.store.set_status("r1-a", "stopped")
    assert manager.apply("r1", [GUESTS]).ok
    assert "r1-a" not in manager.resource.sent  # its start replays the whole state
    (to_b,) = manager.resource.sent["r1-b"]
    assert to_b[0].data["control"]["address"] == "169.254.1.3/16"  # its own, though a's is what is kept
    manager.store.set_status("r1-a", "running")
    manager.resource.refusing.add("r1-b")
    with pytest.raises(VrpipeError, match="pair r1: recorded, but not taken by r1-b") as raised:
        manager.apply("r1", [DHCP])
    assert "vrpipe replay" in raised.value.hint
    assert hosts(manager.store.state("r1")) == ["vm5"]  # recorded: member a holds it


def test_a_member_that_does_not_answer_leaves_the_other_to_lead(manager):
    def unreachable(router, command):
        raise TransportError(f"{router}: connection timed out")

    manager.resource.execute = unreachable
    with pytest.raises(TransportError):  # no member answers: nothing recorded
        manager.apply("r1", [DHCP], aggregate=False)
    assert manager.store.state("r1")["dhcp"] == []
    members = Members()
    manager.resource = members

    def a_down(router, command):
        if router == "r1-a":
            raise TransportError("r1-a: connection timed out")
        return Members.execute(members, router, command)

    members.execute = a_down
    with pytest.raises(VrpipeError, match=r"not taken by r1-a \(r1-a: connection timed out\)"):
        manager.apply("r1", [DHCP], aggregate=False)
    assert members.sent["r1-b"] == [[DHCP]] and hosts(manager.store.state("r1")) == ["vm5"]


def test_members_are_destroyed_and_recreated_one_at_a_time_only(manager):
    with pytest.raises(SettingsError, match="member of the pair r1"):
        manager.destroy("r1-a")
    with pytest.raises(SettingsError, match="one member at a time") as raised:
        manager.recreate("r1")
    assert raised.value.hint == "vrpipe recreate r1-b"


def test_upgrade_and_reboot_take_pairs_through_their_rolling_operation(manager):
    manager.store.add_router("s1", "container", "169.254.1.9")
    assert pairs.split(manager, ["s1", "r1-b", "r1", "r1-a"]) == (["s1"], [("r1-a", "r1-b")])
    with pytest.raises(NotFound):
        pairs.split(manager, ["nope"])


def test_vrpipe_reboot_and_upgrade_roll_a_pair_after_the_single_routers(manager, monkeypatch, capsys):
    manager.store.add_router("s1", "container", "169.254.1.9")
    calls = []

    def fleet(manager, names, *rest):
        calls.append(("fleet", list(names)))
        return [RebootOutcome(n, "rebooted", "") for n in names], None

    def pair(manager, members, *rest):
        calls.append(("pair", members))
        return [RebootOutcome(m, "rebooted", "") for m in members], None

    monkeypatch.setattr(upgrade_cli, "reboot_fleet", fleet)
    monkeypatch.setattr(pairs, "reboot_pair", pair)
    args = argparse.Namespace(names=["r1-b", "s1"], rolling=False, batch="1", timeout=5.0)
    ok, summary = upgrade_cli.reboot(args, manager, Output(False))
    assert ok and calls == [("fleet", ["s1"]), ("pair", ("r1-a", "r1-b"))] and "3 of 3 rebooted" in summary

    calls.clear()

    def upgrade_fleet(manager, names, config, policy, dry_run, progress):
        calls.append(("fleet", list(names), dry_run))
        return UpgradeReport(tuple(UpgradeOutcome(n, "upgraded") for n in names), None, dry_run, 0.0)

    def upgrade_pair(manager, members, config, progress):
        calls.append(("pair", members))
        return [UpgradeOutcome(m, "failed", error="gate") for m in members[:1]], "r1-a failed"

    monkeypatch.setattr(upgrade_cli, "upgrade_fleet", upgrade_fleet)
    monkeypatch.setattr(pairs, "upgrade_pair", upgrade_pair)
    parsed = upgrade_cli_args(["upgrade"])
    ok, summary = upgrade_cli.run(parsed, manager, Output(False))  # every router: s1, then the pair
    assert calls == [("fleet", ["s1"], False), ("pair", ("r1-a", "r1-b"))]
    assert not ok and "stopped: r1-a failed" in summary
    calls.clear()
    ok, _ = upgrade_cli.run(upgrade_cli_args(["upgrade", "--dry-run", "r1"]), manager, Output(False))
    assert ok and calls == [("fleet", ["r1-a", "r1-b"], True)]  # a plan: each member on its own
    capsys.readouterr()


def upgrade_cli_args(argv):
    return _parser().parse_args(argv)
