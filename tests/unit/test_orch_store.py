"""The desired state store on an SQLite file: migrations, routers, rules in order, pinned keys, the lock."""

import json
from pathlib import Path

import pytest
from vr.document import load_state

from orchestration.commands import BadCommand, Command, state_document, validate
from orchestration.deployers.hostnet import control_address
from orchestration.store import LockTimeout, Network, NotFound, Store, StoreError
from vrpipe.errors import VrpipeError

GUESTS = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]})


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    store.add_router("r1", "container", control_address, [Network("eth1", "g-r1")])
    yield store
    store.close()


def dhcp(i, hostname=None):
    data = {"mac": f"02:00:00:00:00:{i:02x}", "ip": f"10.1.1.{i}", "hostname": hostname or f"vm{i}"}
    return Command("add", "dhcp", data)


def record(store, commands):
    store.record("r1", validate(commands, store.state("r1")))


def test_routers_are_kept_with_their_networks(store):
    router = store.router("r1")
    assert (router.control_address, router.networks) == ("169.254.1.2", (Network("eth1", "g-r1"),))
    with pytest.raises(VrpipeError, match="already exists"):
        store.add_router("r1", "container", control_address)
    with pytest.raises(NotFound):
        store.router("r9")


def test_rules_keep_their_order_and_are_updated_and_removed_by_key(store):
    record(store, [GUESTS, dhcp(5), dhcp(6), dhcp(7)])
    record(store, [dhcp(6, "renamed"), Command("remove", "dhcp", {"mac": "02:00:00:00:00:05"})])
    assert [e["hostname"] for e in store.state("r1")["dhcp"]] == ["renamed", "vm7"]
    assert store.state("r1")["interfaces"]["guests"][0]["gateway"] == "10.1.1.1/24"


def test_reopening_the_database_keeps_everything(store, tmp_path):
    record(store, [GUESTS, dhcp(5)])
    store.pin_host_key("r1", "ssh-ed25519 AAAA")
    again = Store(store.url)
    assert again.state("r1") == store.state("r1")
    assert again.router("r1").host_key == "ssh-ed25519 AAAA"
    again.close()


def test_removing_a_router_removes_its_rules(store):
    record(store, [GUESTS, dhcp(5)])
    store.remove_router("r1")
    store.add_router("r1", "container", control_address)
    assert store.state("r1")["dhcp"] == []


def test_a_held_router_lock_times_out_and_others_are_free(store):
    with store.lock("r1"):
        with pytest.raises(LockTimeout, match="r1"), store.lock("r1", timeout=0.2):
            pass
        with store.lock("r2", timeout=0.2):
            pass


@pytest.mark.parametrize(
    ("make_url", "complaint"),
    [
        (lambda tmp: f"sqlite:///{tmp}/missing-folder/vrpipe.db", "unable to open database file"),
        (lambda tmp: f"sqlite:///{_not_a_database(tmp)}", "file is not a database"),
        (lambda tmp: "postgresql+psycopg://vrpipe:secret@127.0.0.1:1/vrpipe", "127.0.0.1"),
        (lambda tmp: "sqlite+nosuchdriver:///x.db", "cannot use the store"),
    ],
)
def test_a_bad_database_is_one_clear_error(tmp_path, make_url, complaint):
    with pytest.raises(StoreError, match=complaint) as error:
        Store(make_url(tmp_path))
    assert "secret" not in str(error.value) and error.value.hint


def _not_a_database(folder):
    path = folder / "notes.txt"
    path.write_text("this is not a database\n" * 100)
    return path


def test_a_vpc_is_recorded_section_by_section_and_replays_as_one_state(store):
    """The example VPC (three tiers, four lists, a private gateway, a static route): each of its sections is
    kept by key, a list replaced whole by name, a route removed by its CIDR, and the stored state is a state
    document the engine takes as it is (what a full replay sends)."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "vpc-3-tier.json"
    commands = [Command.from_json(c) for c in json.loads(examples.read_text())]
    record(store, commands)
    state = store.state("r1")
    assert [a["name"] for a in state["network_acls"]] == ["web", "app", "db", "customer"]
    assert [g["acl"] for g in state["interfaces"]["guests"]] == ["web", "app", "db"]
    db = {"name": "db", "rules": [{"number": 5, "action": "deny", "protocol": "all", "traffic_type": "ingress",
                                   "cidrs": ["0.0.0.0/0"]}]}
    record(store, [Command("add", "network_acls", db), Command("remove", "static_routes", {"cidr": "192.168.50.0/24"})])
    state = store.state("r1")
    assert state["network_acls"][2]["rules"] == [{**db["rules"][0], "number": 5}] and state["static_routes"] == []
    assert load_state(state_document(state)).private_gateways[0].source_nat
    with pytest.raises(BadCommand, match=r"command 0 \(network_acls remove \(name=app\)\): commands\[0\].data.name: "
                                         r"network ACL list app is still used by tier eth3"):
        validate([Command("remove", "network_acls", {"name": "app"})], state)
