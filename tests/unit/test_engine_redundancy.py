"""The redundancy section: validation naming the field, the keepalived and conntrackd files rendered for
this member, which addresses a MASTER and a BACKUP hold, and the gratuitous ARP frame."""

import copy
import ipaddress

import pytest
from vr import interfaces, nftables, redundancy, vrrp
from vr.document import Invalid, parse_document, state_document
from vr.layout import Layout
from vr.model import RouterState

from tests.unit.test_engine_model import valid_state

PAIR = {
    "router_id": 51,
    "sync_device": "eth3",
    "advert_ms": 300,
    "members": [
        {"name": "r1-a", "sync_address": "172.31.255.1/29", "priority": 200},
        {"name": "r1-b", "sync_address": "172.31.255.2/29", "priority": 100},
    ],
}


def pair_state(**changes):
    state = valid_state()
    state["redundancy"] = {**copy.deepcopy(PAIR), **changes}
    return state


def parsed(state):
    return parse_document({"schema": 1, "kind": "state", "state": state}, RouterState()).state


def problems(state):
    with pytest.raises(Invalid) as raised:
        parsed(state)
    return {p.where: p.error for p in raised.value.problems}


def member_root(tmp_path, name):
    layout = Layout(tmp_path / name)
    layout.hostname.parent.mkdir(parents=True)
    layout.hostname.write_text(f"{name}\n")
    return layout


def test_a_pair_parses_and_round_trips():
    state = parsed(pair_state())
    assert state.redundancy.members[1].sync_address == ipaddress.IPv4Interface("172.31.255.2/29")
    assert state.redundancy.advert_ms == 300
    assert parsed(state_document(state)["state"]) == state


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"router_id": 0}, "state.redundancy.router_id", "out of range 1-255"),
        ({"advert_ms": 50}, "state.redundancy.advert_ms", "out of range 100-10000"),
        ({"advert_ms": 305}, "state.redundancy.advert_ms", "not a multiple of 10"),
        ({"sync_device": "eth 3"}, "state.redundancy.sync_device", "not a valid device name"),
        ({"sync_device": "eth1"}, "state.redundancy.sync_device", "already one of the router's interfaces"),
        ({"members": PAIR["members"][:1]}, "state.redundancy.members", "two members, got 1"),
        ({"members": [PAIR["members"][0]] * 2}, "state.redundancy.members[1].name", "name of both members"),
        ({"peer": "172.31.255.2"}, "state.redundancy.peer", "not a known field"),
    ],
)
def test_bad_pair_field_is_named(change, where, message):
    found = problems(pair_state(**change))
    assert message in found.get(where, ""), found


@pytest.mark.parametrize(
    ("member", "where", "message"),
    [
        ({"priority": 200}, "state.redundancy.members[1].priority", "priority of both members"),
        ({"priority": 255}, "state.redundancy.members[1].priority", "out of range 1-254"),
        ({"sync_address": "172.31.255.1/29"}, "state.redundancy.members[1].sync_address", "sync address of both"),
        ({"sync_address": "172.31.254.2/29"}, "state.redundancy.members[1].sync_address", "is not in 172.31.255.0/29"),
        ({"sync_address": "10.1.1.9/24"}, "state.redundancy.members[1].sync_address", "is not in"),
        ({"name": "r1_b"}, "state.redundancy.members[1].name", "not a valid host name"),
        ({"sync_address": "172.31.255.6/29"}, "state.redundancy.members[1].sync_address", "is the MASTER's"),
    ],
)
def test_bad_member_field_is_named(member, where, message):
    members = copy.deepcopy(PAIR["members"])
    members[1].update(member)
    found = problems(pair_state(members=members))
    assert message in found.get(where, ""), found


def test_a_sync_network_inside_a_guest_network_is_refused():
    members = copy.deepcopy(PAIR["members"])
    members[0]["sync_address"], members[1]["sync_address"] = "10.1.1.241/29", "10.1.1.242/29"
    assert "overlaps 10.1.1.0/24" in problems(pair_state(members=members))["state.redundancy.members"]


def test_each_member_renders_itself_and_its_peer(tmp_path):
    state = parsed(pair_state())
    files = {name: redundancy.render(state, member_root(tmp_path, name)) for name in ("r1-a", "r1-b")}
    keepalived_b = files["r1-b"][Layout(tmp_path / "r1-b").keepalived_conf]
    assert "priority 100" in keepalived_b and "unicast_src_ip 172.31.255.2" in keepalived_b
    assert "        172.31.255.1\n" in keepalived_b  # the peer
    assert "advert_int 0.30" in keepalived_b and "virtual_router_id 51" in keepalived_b
    assert "nopreempt" in keepalived_b
    # keepalived holds only the MASTER's sync address; vr-vrrp moves the ones that carry traffic
    assert "virtual_ipaddress {\n        172.31.255.6/29 dev eth3\n    }" in keepalived_b
    assert "10.1.1.1" not in keepalived_b
    conntrackd_a = files["r1-a"][Layout(tmp_path / "r1-a").conntrackd_conf]
    assert "IPv4_address 172.31.255.1\n" in conntrackd_a and "IPv4_Destination_Address 172.31.255.2" in conntrackd_a
    assert "IPv4_address 169.254.1.2" in conntrackd_a  # the manager's SSH is never synced
    moving = files["r1-a"][Layout(tmp_path / "r1-a").vrrp_addresses]
    assert '"eth1",\n   "10.1.1.1/24"' in moving and "203.0.113.11/24" in moving and "169.254" not in moving


def test_a_single_router_renders_nothing_of_a_pair(tmp_path):
    assert redundancy.render(parsed(valid_state()), Layout(tmp_path)) == {}
    assert "vrrp" not in nftables.render(parsed(valid_state()), Layout(tmp_path))[Layout(tmp_path).nftables]


def test_the_sync_link_lets_in_vrrp_and_conntrackd_from_the_members_only(tmp_path):
    text = nftables.render(parsed(pair_state()), Layout(tmp_path))[Layout(tmp_path).nftables]
    assert 'iifname "eth3" ip saddr { 172.31.255.1, 172.31.255.2 } ip protocol vrrp accept' in text
    assert f"udp dport {redundancy.SYNC_PORT} accept" in text


def _lines(state, layout, role):
    if role:
        layout.vrrp_state.parent.mkdir(parents=True, exist_ok=True)
        layout.vrrp_state.write_text(f"{role}\n")
    return interfaces.commands(RouterState(), state, layout, set(), set())


def test_a_backup_holds_only_its_own_addresses_and_a_master_all(tmp_path):
    state = parsed(pair_state())
    backup = _lines(state, member_root(tmp_path, "r1-b"), None)  # before keepalived said anything
    assert "address replace 172.31.255.2/29 dev eth3" in backup
    assert "address replace 169.254.1.2/16 dev eth0" in backup
    assert not any("10.1.1.1" in line or "203.0.113" in line.split(" via ")[0] for line in backup)
    assert "link set dev eth1 up" in backup and "link set dev eth2 up" in backup
    assert "route replace default via 203.0.113.1 dev eth2 onlink" in backup
    master = _lines(state, member_root(tmp_path, "r1-a"), "MASTER")
    assert "address replace 10.1.1.1/24 dev eth1" in master and "address replace 203.0.113.11/24 dev eth2" in master


def test_a_master_that_becomes_a_single_router_keeps_its_addresses(tmp_path):
    layout = member_root(tmp_path, "r1-a")
    live = {("eth3", ipaddress.IPv4Interface("172.31.255.1/29"))}
    lines = interfaces.commands(parsed(pair_state()), parsed(valid_state()), layout, live, set())
    assert "address del 172.31.255.1/29 dev eth3" in lines
    assert "link set dev eth3 down" in lines  # the sync link is no longer used
    assert "address replace 10.1.1.1/24 dev eth1" in lines
    assert not any(line.endswith("onlink") for line in lines)


def test_a_guest_network_taken_off_takes_its_device_down_and_only_that_one(tmp_path):
    """dnsmasq loses its IPv4 listeners if a device with an address vanishes while it lists them: a
    device the state let go of holds none, its IPv6 link-local address included, before it is unplugged."""
    layout = Layout(tmp_path)
    two = valid_state()
    two["interfaces"]["guests"].append({"device": "eth3", "gateway": "10.2.2.1/24"})
    live = {("eth1", ipaddress.IPv4Interface("10.1.1.1/24")), ("eth3", ipaddress.IPv4Interface("10.2.2.1/24"))}
    lines = interfaces.commands(parsed(two), parsed(valid_state()), layout, live, set())
    assert lines.index("address del 10.2.2.1/24 dev eth3") < lines.index("link set dev eth3 down")
    assert not any(line.startswith("link set dev eth1 down") for line in lines)
    gone = {("eth1", ipaddress.IPv4Interface("10.1.1.1/24"))}  # eth3's address already gone: nothing to do on it
    lines = interfaces.commands(parsed(two), parsed(valid_state()), layout, gone, set())
    assert not any("eth3" in line for line in lines)


def test_a_router_that_is_no_member_is_refused_before_anything_changes(tmp_path):
    layout = member_root(tmp_path, "r9")
    state = parsed(pair_state())
    with pytest.raises(ValueError, match="not r1-a or r1-b"):
        redundancy.check({}, type("Change", (), {"new": state, "layout": layout})())  # type: ignore[arg-type]


def test_garp_frame_announces_the_address_from_itself():
    frame = vrrp.garp_frame(bytes.fromhex("020000000001"), ipaddress.IPv4Address("203.0.113.10"))
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"  # request
    assert frame[28:32] == frame[38:42] == bytes([203, 0, 113, 10])
    assert len(frame) == 42


def test_only_role_events_move_the_addresses(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(vrrp, "take", lambda layout: seen.append("take"))
    monkeypatch.setattr(vrrp, "release", lambda layout: seen.append("release"))
    fifo = tmp_path / "events"
    lines = ['INSTANCE "vr" BACKUP 200', 'INSTANCE "vr" MASTER 200', 'INSTANCE "vr" MASTER_RX_LOWER_PRI 200']
    fifo.write_text("\n".join([*lines, 'INSTANCE "vr" FAULT 200', "GROUP x MASTER 1"]) + "\n")
    vrrp.follow(Layout(tmp_path), str(fifo))
    assert seen == ["release", "take", "release"]


def test_a_vpc_pair_moves_its_private_gateway_and_keeps_static_routes_on_the_backup(tmp_path):
    """A BACKUP holds no private gateway address, yet its static routes must be in place (onlink) the
    moment it takes over; a MASTER holds the private gateway address like the tiers' gateways."""
    state = pair_state()
    state["network_acls"] = [{"name": "private", "rules": []}]
    state["private_gateways"] = [{"device": "eth4", "address": "172.16.0.1/24", "acl": "private"}]
    state["static_routes"] = [{"cidr": "192.168.50.0/24", "next_hop": "172.16.0.2"}]
    state = parsed(state)
    backup = _lines(state, member_root(tmp_path, "r1-b"), "BACKUP")
    assert "route replace 192.168.50.0/24 via 172.16.0.2 dev eth4 onlink" in backup
    assert "link set dev eth4 up" in backup and not any("172.16.0.1" in line for line in backup)
    master = _lines(state, member_root(tmp_path, "r1-a"), "MASTER")
    assert "address replace 172.16.0.1/24 dev eth4" in master
