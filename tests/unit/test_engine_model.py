"""Validation of the config document: every kind of bad input is refused with a problem that names the
command or entry and the field, and hostile strings never reach a rendered config file."""

import base64
import copy
import ipaddress
import json
from pathlib import Path

import pytest
from vr import dnsmasq, haproxy, metadata, nftables
from vr.document import Invalid, load_state, parse_document, state_document
from vr.layout import Layout
from vr.model import RouterState

INTERFACES = {
    "control": {"device": "eth0", "address": "169.254.1.2/16"},
    "guests": [{"device": "eth1", "gateway": "10.1.1.1/24", "dns": ["192.0.2.53"], "domain": "cloud.internal"}],
    "public": [{"device": "eth2", "addresses": ["203.0.113.10/24", "203.0.113.11/24"], "gateway": "203.0.113.1"}],
}


def valid_state():
    return {
        "interfaces": copy.deepcopy(INTERFACES),
        "egress_policy": {"default": "allow"},
        "source_nat": [{"guest_cidr": "10.1.1.0/24", "public_ip": "203.0.113.10"}],
        "firewall": [
            {
                "direction": "ingress",
                "public_ip": "203.0.113.10",
                "protocol": "tcp",
                "ports": "22",
                "cidrs": ["0.0.0.0/0"],
            },
            {"direction": "egress", "protocol": "udp", "ports": "53", "cidrs": ["192.0.2.0/24"]},
        ],
        "port_forwarding": [
            {
                "public_ip": "203.0.113.10",
                "protocol": "tcp",
                "public_ports": "8000-8009",
                "vm_ip": "10.1.1.5",
                "vm_ports": "9000-9009",
            }
        ],
        "static_nat": [{"public_ip": "203.0.113.11", "vm_ip": "10.1.1.6"}],
        "dhcp": [{"mac": "02:00:0a:01:01:05", "ip": "10.1.1.5", "hostname": "vm1", "options": {"mtu": 1400}}],
        "vm_data": [
            {
                "vm_ip": "10.1.1.5",
                "metadata": {"instance-id": "i-1"},
                "password": "pw",
                "user_data": base64.b64encode(b"#!/bin/sh\n").decode(),
                "public_keys": ["ssh-ed25519 AAAA k"],
            }
        ],
        "load_balancer": [
            {
                "name": "web",
                "public_ip": "203.0.113.10",
                "port": 80,
                "mode": "http",
                "sticky": True,
                "backends": [{"ip": "10.1.1.5", "port": 8080}],
                "health_check": {"http_path": "/health"},
            }
        ],
    }


def doc(state):
    return {"schema": 1, "kind": "state", "state": state}


def problems(document, current=None):
    with pytest.raises(Invalid) as caught:
        parse_document(document, current or RouterState())
    return {p.where: p.error for p in caught.value.problems}


def test_valid_state_parses_and_round_trips():
    parsed = parse_document(doc(valid_state()), RouterState())
    assert load_state(json.loads(json.dumps(state_document(parsed.state)))) == parsed.state


BAD_FIELDS = [
    ("interfaces.guests[0].gateway", "10.1.1.300/24", "not an IPv4 address/prefix"),
    ("interfaces.guests[0].gateway", "10.1.1.1", "needs a prefix length"),
    ("interfaces.control.device", "eth0; reboot", "not a valid device name"),
    ("source_nat[0].guest_cidr", "10.1.1.1/24", "zero host bits"),
    ("firewall[0].ports", "70000", "ports 1-65535"),
    ("firewall[0].ports", "30-20", "first <= last"),
    ("firewall[0].protocol", "gre", "not one of"),
    ("firewall[0].cidrs", "0.0.0.0/0", "must be a list"),
    ("port_forwarding[0].vm_ports", "9000-9001", "not as long as"),
    ("dhcp[0].mac", "02:00:0a:01:01", "not a MAC address"),
    ("dhcp[0].hostname", "-vm", "not a valid hostname"),
    ("dhcp[0].hostname", "a" * 64, "not a valid hostname"),
    ("dhcp[0].options", {"tftp-server": "1.2.3.4"}, "not a supported option"),
    ("vm_data[0].user_data", base64.b64encode(b"x" * (32 * 1024 + 1)).decode(), "at most 32768"),
    ("vm_data[0].user_data", "not base64!", "not valid base64"),
    ("load_balancer[0].algorithm", "random", "not one of"),
    ("load_balancer[0].port", 0, "out of range"),
    ("load_balancer[0].port", "80", "whole number"),
    ("load_balancer[0].health_check.http_path", "/a b", "must start with /"),
    ("egress_policy.default", "maybe", "not one of"),
]


def _set(state, path, value):
    parts = path.replace("]", "").replace("[", ".").split(".")
    target = state
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    target[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(("path", "value", "message"), BAD_FIELDS)
def test_bad_field_is_named(path, value, message):
    state = valid_state()
    _set(state, path, value)
    found = problems(doc(state))
    where = f"state.{path}"
    assert any(w.startswith(where) for w in found), found
    assert message in " ".join(found.values())


CONFLICTS = [
    ("duplicate dhcp", lambda s: s["dhcp"].append(dict(s["dhcp"][0])), "state.dhcp[1]", "duplicate dhcp"),
    (
        "same dhcp ip",
        lambda s: s["dhcp"].append({**s["dhcp"][0], "mac": "02:00:00:00:00:09", "hostname": "b"}),
        "state.dhcp[1].ip",
        "already used",
    ),
    ("vm outside guests", lambda s: s["dhcp"][0].update(ip="10.2.0.5"), "state.dhcp[0].ip", "not in any guest network"),
    ("vm is the gateway", lambda s: s["dhcp"][0].update(ip="10.1.1.1"), "state.dhcp[0].ip", "router's own gateway"),
    (
        "unknown public ip",
        lambda s: s["port_forwarding"][0].update(public_ip="198.51.100.1"),
        "state.port_forwarding[0].public_ip",
        "not one of the router's public addresses",
    ),
    (
        "overlapping forwards",
        lambda s: s["port_forwarding"].append(
            {**s["port_forwarding"][0], "public_ports": "8005-8020", "vm_ports": "8005-8020"}
        ),
        "state.port_forwarding[1].public_ports",
        "overlaps",
    ),
    (
        "static nat address reused",
        lambda s: s["static_nat"][0].update(public_ip="203.0.113.10"),
        "state.source_nat[0].public_ip",
        "taken by static NAT",
    ),
    (
        "lb on a forwarded port",
        lambda s: s["load_balancer"][0].update(port=8001),
        "state.load_balancer[0].port",
        "already port-forwarded",
    ),
    (
        "overlapping guests",
        lambda s: s["interfaces"]["guests"].append({"device": "eth3", "gateway": "10.1.1.129/25"}),
        "state.interfaces.guests",
        "overlap",
    ),
    (
        "ingress without address",
        lambda s: s["firewall"][0].pop("public_ip"),
        "state.firewall[0].public_ip",
        "required for an ingress rule",
    ),
    (
        "icmp with ports",
        lambda s: s["firewall"][0].update(protocol="icmp"),
        "state.firewall[0].ports",
        "does not apply",
    ),
    ("unknown field", lambda s: s["dhcp"][0].update(colour="red"), "state.dhcp[0].colour", "not a known field"),
]


@pytest.mark.parametrize(("name", "change", "where", "message"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_conflict_is_named(name, change, where, message):
    state = valid_state()
    change(state)
    found = problems(doc(state))
    assert where in found, found
    assert message in found[where]


def test_every_bad_item_is_reported_not_just_the_first():
    state = valid_state()
    state["dhcp"][0]["mac"] = "nope"
    state["load_balancer"][0]["port"] = -1
    state["static_nat"][0]["vm_ip"] = "10.1.1.999"
    assert len(problems(doc(state))) == 3


def test_batch_problem_names_the_command():
    current = parse_document(doc(valid_state()), RouterState()).state
    commands = [
        {"op": "add", "type": "dhcp", "data": {"mac": "02:00:00:00:00:07", "ip": "10.1.1.7", "hostname": "vm7"}},
        {"op": "add", "type": "dhcp", "data": {"mac": "02:00:00:00:00:08", "ip": "10.1.1.5", "hostname": "vm8"}},
        {"op": "frobnicate", "type": "dhcp", "data": {}},
    ]
    found = problems({"schema": 1, "kind": "batch", "commands": commands}, current)
    assert set(found) == {"commands[2].op"}
    found = problems({"schema": 1, "kind": "batch", "commands": commands[:2]}, current)
    assert "commands[1].ip" in found and "persisted state.dhcp" in found["commands[1].ip"]



def test_a_batch_without_commands_is_refused_naming_the_field():
    assert problems({"schema": 1, "kind": "batch"}) == {"commands": "is required"}


def test_a_batch_checks_its_sections_against_the_others():
    """A batch checks only what involves the sections it touched, which includes conflicts with the rest."""
    current = parse_document(doc(valid_state()), RouterState()).state
    nat = {"op": "add", "type": "static_nat", "data": {"public_ip": "203.0.113.10", "vm_ip": "10.1.1.7"}}
    found = problems({"schema": 1, "kind": "batch", "commands": [nat]}, current)
    assert "taken by static NAT" in found["commands[0]"], found
    guests = copy.deepcopy(INTERFACES)
    guests["guests"][0]["gateway"] = "10.2.2.1/24"
    move = {"op": "add", "type": "interfaces", "data": guests}
    found = problems({"schema": 1, "kind": "batch", "commands": [move]}, current)
    assert "not in any guest network" in found["persisted state.dhcp.ip"], found
    bad = {"mac": "02:00:00:00:00:07", "ip": "10.9.9.7", "hostname": "vm7"}
    dhcp = [{"op": "add", "type": "dhcp", "data": bad}]
    assert (
        "not in any guest network"
        in problems({"schema": 1, "kind": "batch", "commands": dhcp}, current)["commands[0].ip"]
    )
    dhcp.append({"op": "add", "type": "dhcp", "data": {**bad, "ip": "10.1.1.7"}})  # the same entry, fixed
    assert parse_document({"schema": 1, "kind": "batch", "commands": dhcp}, current).state.dhcp[-1].hostname == "vm7"


def test_remove_needs_only_the_key():
    current = parse_document(doc(valid_state()), RouterState()).state
    remove = {"op": "remove", "type": "dhcp", "data": {"mac": "02:00:0A:01:01:05"}}
    parsed = parse_document({"schema": 1, "kind": "batch", "commands": [remove]}, current)
    assert parsed.state.dhcp == () and parsed.subsystems == {"dnsmasq"}


def test_wrong_schema_and_kind_are_refused():
    assert "schema" in problems({"schema": 2, "kind": "state", "state": {}})
    assert "kind" in problems({"schema": 1, "kind": "patch"})
    assert "document" in problems([1, 2, 3])


HOSTILE = ["$(reboot)", "`id`", "a;b", "x\ny", "x\rserver=1.2.3.4", "' OR 1=1", "%s%n", "A" * 5000, "\x00", "}{"]


def _string_paths(value, path=""):
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_paths(item, f"{path}[{i}]")


@pytest.mark.parametrize("suffix", ["\n", "\t", "\x7f", "\udcff"], ids=["newline", "tab", "del", "surrogate"])
def test_every_string_field_refuses_a_trailing_control_character(suffix):
    """A trailing newline used to pass every pattern (`$` matches before it) and split a dhcp-hosts line;
    a lone surrogate (undecodable input) broke the metadata service's reply later."""
    for path in _string_paths(valid_state()):
        state = valid_state()
        value = _get(state, path)
        _set(state, path, value + suffix)
        assert any(w.startswith(f"state.{path}") for w in problems(doc(state))), path


def _get(state, path):
    target = state
    for part in path.replace("]", "").replace("[", ".").split("."):
        target = target[int(part)] if part.isdigit() else target[part]
    return target


def test_a_key_with_a_trailing_newline_is_refused():
    state = valid_state()
    state["vm_data"][0]["metadata"]["instance-id\n"] = "i-1"
    assert any(w.startswith("state.vm_data[0].metadata") for w in problems(doc(state)))
    current = parse_document(doc(valid_state()), RouterState()).state
    remove = {"op": "remove", "type": "dhcp", "data": {"mac": "02:00:0a:01:01:05\n"}}
    assert "commands[0].data.mac" in problems({"schema": 1, "kind": "batch", "commands": [remove]}, current)


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_are_refused_or_stay_data(hostile):
    """Every string field: either refused by name, or accepted and never written into an nftables,
    dnsmasq or haproxy file (free text such as metadata lives only in the metadata JSON)."""
    layout = Layout(Path("/router"))
    for path in _string_paths(valid_state()):
        state = valid_state()
        _set(state, path, hostile)
        try:
            parsed = parse_document(doc(state), RouterState())
        except Invalid as invalid:
            assert any(p.where.startswith(f"state.{path}".split("[")[0]) for p in invalid.problems), path
            continue
        assert path.startswith("vm_data"), path
        files = {
            **nftables.render(parsed.state, layout),
            **dnsmasq.render(parsed.state, layout),
            **haproxy.render(parsed.state, layout),
        }
        assert not any(hostile in text for text in files.values()), path
        assert json.loads(metadata.render(parsed.state, layout)[layout.metadata])


def _nested_rules(depth, cidrs_per_rule):
    """Rules whose port ranges nest `depth` deep, each from its own distinct, non-adjacent /32 sources."""
    return [
        {
            "direction": "ingress",
            "public_ip": "203.0.113.10",
            "protocol": "tcp",
            "ports": f"{1000 + i}-{2000 - i}",
            "cidrs": [f"10.{j}.{i}.1/32" for j in range(cidrs_per_rule)],
        }
        for i in range(depth)
    ]


def _port_sets(text):
    """Elements of each ingress_ports_N set of a rendered table: {set name: [(first, last, cidr)]}."""
    sets, name = {}, None
    for line in text.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("set ingress_ports_"):
            name = line.split()[1]
            sets[name] = []
        elif name and line.startswith("203.0.113."):
            _, _, ports, cidr = line.split(" . ")
            first, _, last = ports.partition("-")
            sets[name].append((int(first), int(last or first), ipaddress.IPv4Network(cidr)))
        elif line == "}":
            name = None
    return sets


def test_overlapping_firewall_rules_render_linear_non_overlapping_sets():
    """20 nested port ranges x 256 distinct /32 sources used to render 102,400 disjoint elements (and
    time out in `nft -c`); now one element per rule and CIDR, in one layer per nesting level."""
    state = valid_state()
    state["firewall"] = _nested_rules(20, 256) + [
        {**_nested_rules(1, 0)[0], "ports": "1500", "cidrs": ["10.0.0.0/8"]},  # same layer as none of them
        {**_nested_rules(1, 0)[0], "ports": "1500", "cidrs": ["10.1.0.0/16"]},  # merges into the /8
    ]
    parsed = parse_document(doc(state), RouterState())
    sets = _port_sets(nftables.render(parsed.state, Layout(Path("/r")))[Path("/r/etc/vr/nftables.nft")])
    assert len(sets) == 21 and sum(map(len, sets.values())) == 20 * 256 + 1
    for elements in sets.values():
        for i, (first, last, net) in enumerate(elements):
            for other_first, other_last, other_net in elements[i + 1 :]:
                assert not (first <= other_last and other_first <= last and net.overlaps(other_net))


def test_layers_are_as_many_as_ranges_nest_deep():
    from vr.fields import PortRange
    from vr.intervals import layers

    ranges = [PortRange(20, 30), PortRange(22, 22), PortRange(24, 26), PortRange(25, 40), PortRange(31, 50)]
    layer = layers(ranges)
    assert max(layer.values()) + 1 == 3  # 20-30, 24-26 and 25-40 all hold port 25
    for a in ranges:
        for b in ranges:
            assert a == b or layer[a] != layer[b] or not a.overlaps(b)


def test_the_firewall_size_is_bounded_with_a_clear_error():
    from vr.intervals import MAX_CIDRS, MAX_LAYERS

    state = valid_state()
    state["firewall"] = _nested_rules(MAX_LAYERS + 1, 1)
    found = problems(doc(state))
    assert f"state.firewall[{MAX_LAYERS}].ports" in found, found
    assert f"overlap more than {MAX_LAYERS} deep" in found[f"state.firewall[{MAX_LAYERS}].ports"]
    rule = {"direction": "egress", "protocol": "icmp"}
    state["firewall"] = [{**rule, "cidrs": [f"10.{i // 256}.{i % 256}.{j}/32" for j in range(256)]} for i in range(400)]
    found = problems(doc(state))
    index = MAX_CIDRS // 256
    assert f"more than {MAX_CIDRS} CIDR entries" in found[f"state.firewall[{index}].cidrs"]


def test_an_element_only_change_becomes_an_element_update():
    layout = Layout(Path("/r"))
    state = valid_state()
    before = nftables.render(parse_document(doc(state), RouterState()).state, layout)[layout.nftables]
    state["port_forwarding"][0]["vm_ip"] = "10.1.1.6"
    state["firewall"][0]["cidrs"] = ["192.0.2.0/25", "192.0.2.128/25"]
    after = nftables.render(parse_document(doc(state), RouterState()).state, layout)[layout.nftables]
    update = nftables.element_update(before, after).splitlines()
    assert update[0] == "delete element inet vr ingress_ports_0_0 { 203.0.113.10 . tcp . 22 . 0.0.0.0/0 }"
    assert update[1].startswith("delete element inet vr port_forwards { 203.0.113.10 . tcp . 8000, ")
    assert update[2] == "add element inet vr ingress_ports_0_0 { 203.0.113.10 . tcp . 22 . 192.0.2.0/24 }"
    assert update[3].startswith("add element inet vr port_forwards { 203.0.113.10 . tcp . 8000 : 10.1.1.6 . 9000, ")
    assert len(update) == 4
    state["egress_policy"]["default"] = "deny"  # a rule changes: the whole table is loaded
    changed = nftables.render(parse_document(doc(state), RouterState()).state, layout)[layout.nftables]
    assert nftables.element_update(after, changed) is None
    assert nftables.element_update(None, after) is None


def test_port_range_forward_maps_each_port():
    parsed = parse_document(doc(valid_state()), RouterState())
    text = nftables.render(parsed.state, Layout(Path("/r")))[Path("/r/etc/vr/nftables.nft")]
    assert "203.0.113.10 . tcp . 8000 : 10.1.1.5 . 9000" in text
    assert "203.0.113.10 . tcp . 8009 : 10.1.1.5 . 9009" in text
    assert text.count("flush ruleset") == 0 and "delete table inet vr" in text


def test_the_journal_replays_its_batches_on_the_snapshot_it_follows(tmp_path, monkeypatch):
    from vr import persist

    layout = Layout(tmp_path)
    layout.make_directories()
    state = parse_document(doc(valid_state()), RouterState()).state
    persist.write(layout, state, doc(valid_state()))  # a state document's snapshot is the document itself
    layout.state_cache.unlink()
    assert persist.read(layout) == state
    entry = {"mac": "02:00:0a:01:01:09", "ip": "10.1.1.9", "hostname": "vm9"}
    for op in ("add", "remove", "add"):
        batch = {"schema": 1, "kind": "batch", "commands": [{"op": op, "type": "dhcp", "data": entry}]}
        state = parse_document(batch, state).state
        persist.append(layout, state, batch["commands"])
    with open(layout.journal, "ab") as journal:
        journal.write(b'{"base": "torn by a cra')  # a crash mid-append: never acknowledged
    assert persist.read(layout) == state and not layout.state.read_text().count("vm9")
    persist.append(layout, state, [])  # the next line is whole despite the torn one before it
    assert persist.read(layout) == state
    persist.write(layout, RouterState())  # a new snapshot: the journal's lines no longer apply
    assert persist.read(layout) == RouterState() and not layout.journal.exists()
    monkeypatch.setattr(persist, "JOURNAL_LIMIT", 0)
    persist.append(layout, state, [{"op": "add", "type": "dhcp", "data": entry}])
    assert "vm9" in layout.state.read_text() and persist.read(layout) == state  # written whole instead


def test_large_firewall_sets_are_sharded_and_an_added_rule_stays_an_element_update():
    """The kernel's concatenated-interval sets cost O(n) per inserted element: 20,000 in one set took 3 s."""
    from vr.intervals import SHARD_SIZE

    layout = Layout(Path("/r"))
    state = valid_state()
    rule = {"direction": "ingress", "public_ip": "203.0.113.10", "protocol": "tcp"}
    state["firewall"] = [{**rule, "ports": 20000 + i, "cidrs": [f"10.{i % 256}.{i // 256}.0/24"]} for i in range(5000)]
    before = nftables.render(parse_document(doc(state), RouterState()).state, layout)[layout.nftables]
    sets = _port_sets(before)
    assert len(sets) == 8 and sum(map(len, sets.values())) == 5000
    assert max(map(len, sets.values())) < 2 * SHARD_SIZE
    state["firewall"].append({**rule, "ports": 30000, "cidrs": ["192.0.2.0/24"]})
    after = nftables.render(parse_document(doc(state), RouterState()).state, layout)[layout.nftables]
    update = nftables.element_update(before, after)
    assert update.count("\n") == 1 and update.startswith("add element inet vr ingress_ports_0_")


def test_lines_formats_only_items_it_has_not_seen_in_the_same_context():
    from vr.render import Lines

    formatted = []
    lines = Lines(lambda item, context: formatted.append(item) or f"{item[0]}{context}\n")
    a, b, c = ("a",), ("b",), ("c",)
    assert lines((a, b), "!") == "a!\nb!\n" and formatted == [a, b]
    assert lines((a, c), "!") == "a!\nc!\n" and formatted == [a, b, c]  # a again: not formatted again
    assert lines((a, c), "?") == "a?\nc?\n" and formatted == [a, b, c, a, c]  # another context: all again
    assert lines((tuple(["a"]),), "?") == "a?\n" and len(formatted) == 6  # equal, not the same item: formatted
