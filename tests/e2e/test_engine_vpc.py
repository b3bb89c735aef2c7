"""A VPC router end to end in network namespaces: two tiers (web on eth1, app on eth3) with their own network
ACL lists, a VM in each, a private gateway (eth4) to a customer namespace reached by a static route, and
the public namespace. Tests run in file order on one router, each building on the state before it.
"""

import copy
import json

import pytest

from orchestration.lab.netns import Namespaces
from orchestration.lab.vpclab import (
    CUSTOMER_HOST,
    CUSTOMER_LAN,
    PRIVATE_ADDRESS,
    PRIVATE_DEVICE,
    SECOND_TIER_DEVICE,
    add_customer,
    add_tier,
    add_vm_on,
    rule,
    tier,
    vpc_interfaces,
)
from vrpipe.run import run

from .engine_fixtures import connect, make_router_net, ruleset, serve, state_document, wait_for

pytestmark = pytest.mark.e2e
WEB_IP, APP_IP = "10.1.1.5", "10.1.2.5"
ANY = "0.0.0.0/0"
DROPPED = 1  # seconds a connection that is dropped is given


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Namespaces() as namespaces:
        root = tmp_path_factory.mktemp("vpc-router")
        net = make_router_net(namespaces, root)
        add_tier(net, SECOND_TIER_DEVICE)
        net.web = add_vm_on(net, "eth1", "web1", "02:00:0a:01:01:05", WEB_IP, "10.1.1.1/24")
        net.app = add_vm_on(net, SECOND_TIER_DEVICE, "app1", "02:00:0a:01:02:05", APP_IP, "10.1.2.1/24")
        net.customer = add_customer(net)
        for vm in (net.web, net.app):
            serve(vm.ns, 7000, vm.name)
            serve(vm.ns, 7001, vm.name)
        serve(net.customer.ns, 7000, "customer")
        serve(net.customer.ns, 7001, "customer")
        serve(net.public, 9000, "outside")
        net.state = vpc_state(net)
        yield net


def vpc_state(net):
    public = "203.0.113.0/24"
    return {
        "interfaces": vpc_interfaces(
            net, [tier("eth1", "10.1.1.1/24", "web"), tier(SECOND_TIER_DEVICE, "10.1.2.1/24", "app")]
        ),
        "network_acls": [
            {
                "name": "web",
                "rules": [
                    rule(10, "allow", "tcp", "ingress", ["10.1.2.0/24"], "7000"),
                    rule(20, "allow", "all", "egress", [ANY]),
                ],
            },
            {
                "name": "app",
                "rules": [
                    rule(10, "deny", "tcp", "ingress", ["10.1.1.0/24"], "7001"),
                    rule(20, "allow", "tcp", "ingress", ["10.1.1.0/24"], "7000-7001"),
                    rule(30, "allow", "tcp", "ingress", [public], "7000"),
                ],
            },
            {"name": "private", "rules": [rule(10, "allow", "tcp", "ingress", ["10.1.0.0/16"], "7000")]},
        ],
        "private_gateways": [{"device": PRIVATE_DEVICE, "address": PRIVATE_ADDRESS, "acl": "private"}],
        "static_routes": [{"cidr": CUSTOMER_LAN, "next_hop": "172.16.0.2"}],
        "source_nat": [{"guest_cidr": "10.1.1.0/24", "public_ip": "203.0.113.10"}],
        "firewall": [
            {"direction": "ingress", "public_ip": "203.0.113.10", "protocol": "tcp", "ports": ports, "cidrs": [ANY]}
            for ports in ("2201-2202", 80)
        ],
        "port_forwarding": [
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2201", "vm_ip": APP_IP, "vm_ports": 7000},
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2202", "vm_ip": APP_IP, "vm_ports": 7001},
        ],
        "load_balancer": [
            {"name": "app", "public_ip": "203.0.113.10", "port": 80, "backends": [{"ip": APP_IP, "port": 7000}]}
        ],
    }


def apply(net, state):
    code, result = net.apply(state_document(state))
    assert code == 0, result
    net.state = state
    return result


def changed(net, change):
    """A copy of the router's current state with `change(state)` made to it."""
    state = copy.deepcopy(net.state)
    change(state)
    return state


def acl(state, name):
    return next(a for a in state["network_acls"] if a["name"] == name)


def test_the_vpc_state_applies(net):
    result = apply(net, net.state)
    assert result["sections"]["network_acls"] == {"ok": True, "items": 3}
    assert f"{CUSTOMER_LAN} via 172.16.0.2" in run(["ip", "-4", "route"], ns=net.router).stdout
    health = json.loads(net.engine("vr-health").stdout)
    checks = {c["name"]: c for c in health["checks"]}
    assert checks["nftables"]["status"] == "ok", checks["nftables"]


def test_allowed_traffic_between_tiers_passes_and_denied_is_dropped(net):
    assert connect(net.web.ns, APP_IP, 7000) == f"app1 from {WEB_IP}"
    assert connect(net.app.ns, WEB_IP, 7001, timeout=DROPPED) == ""  # web allows 7000 only


def test_a_deny_at_10_beats_an_allow_at_20(net):
    assert connect(net.web.ns, APP_IP, 7001, timeout=DROPPED) == ""


def test_changing_the_list_changes_traffic_at_once(net):
    def deny_later(state):
        acl(state, "app")["rules"][0]["number"] = 30  # the deny now comes after the allow at 20
        acl(state, "app")["rules"][2]["number"] = 40

    apply(net, changed(net, deny_later))
    assert connect(net.web.ns, APP_IP, 7001) == f"app1 from {WEB_IP}"


def test_tier_to_tier_traffic_obeys_both_lists(net):
    # app -> web: web's ingress allows 7000 from app, but app's list has no egress rule: denied by default
    assert connect(net.app.ns, WEB_IP, 7000, timeout=DROPPED) == ""
    apply(net, changed(net, lambda s: acl(s, "app")["rules"].append(rule(50, "allow", "all", "egress", [ANY]))))
    assert connect(net.app.ns, WEB_IP, 7000) == f"web1 from {APP_IP}"

    def web_egress_denies_app(state):
        acl(state, "web")["rules"].insert(0, rule(5, "deny", "tcp", "egress", ["10.1.2.0/24"], "7000"))

    apply(net, changed(net, web_egress_denies_app))
    assert connect(net.web.ns, APP_IP, 7000, timeout=DROPPED) == ""  # app's ingress would allow it
    assert connect(net.web.ns, APP_IP, 7001) == f"app1 from {WEB_IP}"


def test_moving_a_tier_to_another_list_is_one_element_update(net):
    assert connect(net.app.ns, WEB_IP, 7000) == f"web1 from {APP_IP}"
    original = net.state

    interfaces = copy.deepcopy(original["interfaces"])
    interfaces["guests"][0]["acl"] = "app"
    code, result = net.apply(_batch({"op": "add", "type": "interfaces", "data": interfaces}))
    assert code == 0 and result["actions"]["nftables"] == "updated", result  # the verdict map's elements only
    assert connect(net.app.ns, WEB_IP, 7000, timeout=DROPPED) == ""  # app's list takes 7000 from web and outside
    apply(net, original)
    assert connect(net.app.ns, WEB_IP, 7000) == f"web1 from {APP_IP}"


def test_port_forward_and_load_balancer_into_a_tier(net):
    assert connect(net.public, "203.0.113.10", 2201) == "app1 from 203.0.113.1"
    assert connect(net.public, "203.0.113.10", 2202, timeout=DROPPED) == ""  # app's list: 7000 only from outside
    wait_for(lambda: connect(net.public, "203.0.113.10", 80).startswith("app1"), "haproxy to answer")


def test_a_tier_reaches_the_outside_through_source_nat(net):
    assert connect(net.web.ns, "203.0.113.1", 9000) == "outside from 203.0.113.10"
    assert connect(net.app.ns, "203.0.113.1", 9000, timeout=DROPPED) == ""  # no source NAT for app's tier


def test_a_static_route_leads_to_the_customer_behind_the_private_gateway_under_its_list(net):
    assert connect(net.web.ns, CUSTOMER_HOST, 7000) == f"customer from {WEB_IP}"
    assert connect(net.web.ns, CUSTOMER_HOST, 7001, timeout=DROPPED) == ""  # the private gateway's list
    run(["ip", "route", "del", "10.0.0.0/8"], ns=net.customer.ns)  # the customer has no way back now
    assert connect(net.web.ns, CUSTOMER_HOST, 7000, timeout=DROPPED) == ""

    def with_source_nat(state):
        state["private_gateways"][0]["source_nat"] = True

    apply(net, changed(net, with_source_nat))
    assert connect(net.web.ns, CUSTOMER_HOST, 7000) == "customer from 172.16.0.1"


def test_a_full_replay_after_a_restart_gives_the_same_ruleset(net):
    before, routes = ruleset(net), run(["ip", "-4", "route"], ns=net.router).stdout
    run(["nft", "delete", "table", "inet", "vr"], ns=net.router)  # what a restarted router has: no rules,
    run(["ip", "address", "flush", "dev", PRIVATE_DEVICE], ns=net.router)  # no private address, no route
    code, result = net.apply(state_document(net.state))
    assert code == 0 and result["actions"]["nftables"] == "loaded", result
    assert ruleset(net) == before
    assert run(["ip", "-4", "route"], ns=net.router).stdout == routes
    assert connect(net.web.ns, CUSTOMER_HOST, 7000) == "customer from 172.16.0.1"


def _refused(net, document, where):
    before, routes = ruleset(net), run(["ip", "-4", "route"], ns=net.router).stdout
    proc = net.engine("vr-apply", "-", input=json.dumps(document))
    result = json.loads(proc.stdout)
    assert proc.returncode == 2, result
    assert where in [p["where"] for p in result["problems"]], result["problems"]
    assert ruleset(net) == before and run(["ip", "-4", "route"], ns=net.router).stdout == routes
    return result


def _batch(*commands):
    return {"schema": 1, "kind": "batch", "commands": list(commands)}


def test_bad_input_exits_2_naming_the_field_and_changes_nothing(net):
    def overlapping(state):
        state["interfaces"]["guests"][1]["gateway"] = "10.1.1.129/25"

    def number_twice(state):
        acl(state, "web")["rules"][2]["number"] = 5

    def unknown_list(state):
        state["interfaces"]["guests"][1]["acl"] = "nosuch"

    def next_hop_outside(state):
        state["static_routes"][0]["next_hop"] = "172.17.0.2"

    def ipv6(state):
        acl(state, "web")["rules"][0]["cidrs"] = ["2001:db8::/64"]

    cases = [
        (overlapping, "state.interfaces.guests"),
        (number_twice, "state.network_acls[0].rules[2].number"),
        (unknown_list, "state.interfaces.guests[1].acl"),
        (next_hop_outside, "state.static_routes[0].next_hop"),
        (ipv6, "state.network_acls[0].rules[0].cidrs[0]"),
    ]
    for change, where in cases:
        _refused(net, state_document(changed(net, change)), where)
    remove = {"op": "remove", "type": "network_acls", "data": {"name": "app"}}
    result = _refused(net, _batch(remove), "commands[0].data.name")
    assert "still used by tier eth3" in result["problems"][0]["error"]
    route = {"op": "add", "type": "static_routes", "data": {"cidr": "192.168.60.0/24", "next_hop": "198.51.100.7"}}
    _refused(net, _batch(route), "commands[0].next_hop")
    assert connect(net.web.ns, CUSTOMER_HOST, 7000) == "customer from 172.16.0.1"  # still in force
