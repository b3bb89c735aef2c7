"""VPC sections of the engine: network ACL lists, tiers naming them, static routes and a private gateway.
Each bad input is refused naming its field; the rendered table keeps per-packet cost to a few lookups."""

import copy
from pathlib import Path

import pytest
from vr import acls, nftables
from vr.document import Invalid, parse_document
from vr.layout import Layout
from vr.model import RouterState

from orchestration.lab.vpclab import bench_acls, rule

LAYOUT = Layout(Path("/r"))
INTERFACES = {
    "control": {"device": "eth0", "address": "169.254.1.2/16"},
    "guests": [
        {"device": "eth1", "gateway": "10.1.1.1/24", "acl": "web"},
        {"device": "eth3", "gateway": "10.1.2.1/24", "acl": "app"},
        {"device": "eth5", "gateway": "10.1.9.1/24"},  # a guest network without a list: no VPC tier
    ],
    "public": [{"device": "eth2", "addresses": ["203.0.113.10/24"], "gateway": "203.0.113.1"}],
}


def vpc_state():
    return {
        "interfaces": copy.deepcopy(INTERFACES),
        "network_acls": [
            {
                "name": "web",
                "rules": [
                    rule(20, "allow", "tcp", "ingress", ["0.0.0.0/0"], "80"),
                    rule(10, "deny", "tcp", "ingress", ["192.0.2.0/24"], "80"),
                    rule(30, "allow", "icmp", "ingress", ["10.0.0.0/8"]) | {"icmp_type": 8},
                    rule(100, "allow", "all", "egress", ["0.0.0.0/0"]),
                ],
            },
            {"name": "app", "rules": [rule(10, "allow", "tcp", "ingress", ["10.1.1.0/24"], "8000-8010")]},
            {"name": "private", "rules": [rule(5, "allow", "all", "ingress", ["10.1.0.0/16"])]},
        ],
        "private_gateways": [{"device": "eth4", "address": "172.16.0.1/24", "acl": "private", "source_nat": True}],
        "static_routes": [{"cidr": "192.168.50.0/24", "next_hop": "172.16.0.2"}],
    }


def doc(state):
    return {"schema": 1, "kind": "state", "state": state}


def batch(*commands):
    return {"schema": 1, "kind": "batch", "commands": list(commands)}


def parsed(state):
    return parse_document(doc(state), RouterState()).state


def problems(document, current=None):
    with pytest.raises(Invalid) as caught:
        parse_document(document, current or RouterState())
    return {p.where: p.error for p in caught.value.problems}


def table(state):
    return nftables.render(state, LAYOUT)[LAYOUT.nftables]


def test_a_vpc_state_parses_with_rules_in_number_order():
    state = parsed(vpc_state())
    web = state.network_acls[0]
    assert [(r.number, r.action) for r in web.rules] == [(10, "deny"), (20, "allow"), (30, "allow"), (100, "allow")]
    assert [g.acl for g in state.interfaces.guests] == ["web", "app", None]
    assert state.private_gateways[0].source_nat and str(state.static_routes[0].next_hop) == "172.16.0.2"


def test_rule_order_decides_a_deny_at_10_is_looked_up_before_the_allow_at_20():
    text = table(parsed(vpc_state()))
    chain = text[text.index("chain acl/web/ingress {") :].split("}")[0].split("\n")[1:-1]
    assert [line.split()[-1] for line in chain] == ["drop", "return", "return", "drop"]
    assert "tcp . 80 . 192.0.2.0/24" in text
    assert "8 . 0-255 . 10.0.0.0/8" in text
    assert '"eth1" : jump acl/web/ingress' in text and '"eth3" : jump acl/app/egress' in text
    assert '"eth5"' not in text.split("set acl_devices")[1].split("}")[0]  # the non-VPC guest has no list
    assert '"eth4" : 172.16.0.1' in text  # the private gateway's source NAT


def test_lookups_grow_with_allow_deny_alternations_not_with_rules_or_cidrs():
    for rules in (10, 100):
        state = parsed({"interfaces": INTERFACES, "network_acls": bench_acls(20, rules, 10)} | _tiers_named(20))
        lines = [chain.lines for chain in acls.chains(state.network_acls)]
        assert max(len(chain) for chain in lines) == 2, rules  # a deny run and an allow run per traffic type


def _tiers_named(count):
    guests = [{"device": f"t{i}", "gateway": f"10.{i}.0.1/24", "acl": f"tier{i}"} for i in range(count)]
    return {"interfaces": {**INTERFACES, "guests": guests}}


def test_moving_a_tier_to_another_list_is_an_element_update():
    state = vpc_state()
    before = table(parsed(state))
    state["interfaces"]["guests"][0]["acl"] = "app"
    update = nftables.element_update(before, table(parsed(state)))
    assert update is not None
    assert 'add element inet vr acl_to { "eth1" : jump acl/app/ingress }' in update


def test_replacing_a_lists_rules_of_the_same_shape_is_an_element_update():
    state = vpc_state()
    before = table(parsed(state))
    state["network_acls"][1]["rules"][0]["cidrs"] = ["10.1.1.0/25"]
    update = nftables.element_update(before, table(parsed(state)))
    assert update == (
        "delete element inet vr acl/app/ingress/0/ports_0_0 { tcp . 8000-8010 . 10.1.1.0/24 }\n"
        "add element inet vr acl/app/ingress/0/ports_0_0 { tcp . 8000-8010 . 10.1.1.0/25 }\n"
    )


def test_overlapping_tier_cidrs_are_refused():
    state = vpc_state()
    state["interfaces"]["guests"][1]["gateway"] = "10.1.1.129/25"
    assert "overlap" in problems(doc(state))["state.interfaces.guests"]


def test_one_rule_number_twice_in_a_list_is_refused():
    state = vpc_state()
    state["network_acls"][1]["rules"].append(rule(10, "deny", "udp", "ingress", ["0.0.0.0/0"], 53))
    found = problems(doc(state))
    assert found == {"state.network_acls[1].rules[1].number": "10 is already the number of rules[0]"}


def test_a_tier_naming_a_list_that_does_not_exist_is_refused():
    state = vpc_state()
    state["interfaces"]["guests"][1]["acl"] = "nosuch"
    assert problems(doc(state)) == {"state.interfaces.guests[1].acl": "network ACL list nosuch does not exist"}
    state = vpc_state()
    state["private_gateways"][0]["acl"] = "nosuch"
    assert problems(doc(state)) == {"state.private_gateways[0].acl": "network ACL list nosuch does not exist"}


def test_removing_a_list_a_tier_uses_is_refused_naming_the_remove():
    current = parsed(vpc_state())
    remove = {"op": "remove", "type": "network_acls", "data": {"name": "app"}}
    found = problems(batch(remove), current)
    assert found == {"commands[0].data.name": "network ACL list app is still used by tier eth3; "
                     "move them to another list first"}
    move = {"op": "add", "type": "interfaces", "data": {**INTERFACES, "guests": INTERFACES["guests"][::2]}}
    assert parse_document(batch(move, remove), current).state.network_acls[1].name == "private"


def test_a_next_hop_outside_every_network_is_refused():
    state = vpc_state()
    state["static_routes"][0]["next_hop"] = "172.17.0.2"
    found = problems(doc(state))
    assert list(found) == ["state.static_routes[0].next_hop"]
    assert found["state.static_routes[0].next_hop"].startswith("next hop 172.17.0.2 is not in any network (")
    current = parsed(vpc_state())
    route = {"op": "add", "type": "static_routes", "data": {"cidr": "192.168.60.0/24", "next_hop": "198.51.100.1"}}
    assert list(problems(batch(route), current)) == ["commands[0].next_hop"]


def test_an_ipv6_cidr_in_an_ipv4_field_is_refused():
    state = vpc_state()
    state["network_acls"][0]["rules"][0]["cidrs"] = ["2001:db8::/32"]
    found = problems(doc(state))
    error = "'2001:db8::/32' is IPv6; this field takes an IPv4 CIDR"
    assert found == {"state.network_acls[0].rules[0].cidrs[0]": error}
    state = vpc_state()
    state["static_routes"][0]["cidr"] = "2001:db8::/64"
    assert list(problems(doc(state))) == ["state.static_routes[0].cidr"]


def test_a_private_gateway_needs_its_own_device_and_network():
    state = vpc_state()
    state["private_gateways"][0] |= {"device": "eth1", "address": "10.1.2.200/24"}
    found = problems(doc(state))
    assert found["state.private_gateways[0].device"] == "device eth1 is already an interface"
    assert found["state.private_gateways[0].address"] == "172.16.0.0/24 overlaps 10.1.2.0/24".replace(
        "172.16.0.0/24", "10.1.2.0/24", 1
    )


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("ports", 80, "does not apply to protocol icmp"),
        ("icmp_code", 3, "needs an icmp_type"),
        ("cidrs", [], "needs at least one CIDR (0.0.0.0/0 for any)"),
        ("action", "reject", "'reject' is not one of allow, deny"),
    ],
)
def test_bad_acl_rule_fields_are_named(field, value, error):
    state = vpc_state()
    state["network_acls"][2]["rules"][0] |= {"protocol": "icmp", field: value}
    assert problems(doc(state)) == {f"state.network_acls[2].rules[0].{field}": error}


def test_a_remove_names_its_item_by_key_alone():
    current = parsed(vpc_state())
    commands = [
        {"op": "remove", "type": "static_routes", "data": {"cidr": "192.168.50.0/24"}},
        {"op": "add", "type": "interfaces", "data": {**INTERFACES, "guests": INTERFACES["guests"][:2]}},
    ]
    state = parse_document(batch(*commands), current).state
    assert state.static_routes == () and len(state.private_gateways) == 1


def test_removing_the_private_gateway_a_route_needs_is_refused_naming_the_remove():
    current = parsed(vpc_state())
    remove = {"op": "remove", "type": "private_gateways", "data": {"device": "eth4"}}
    found = problems(batch(remove), current)
    assert found == {"commands[0].data.device": "static routes 192.168.50.0/24 via 172.16.0.2 would have no "
                     "network left; remove them first"}
    route = {"op": "remove", "type": "static_routes", "data": {"cidr": "192.168.50.0/24"}}
    assert parse_document(batch(route, remove), current).state.private_gateways == ()
