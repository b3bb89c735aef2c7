"""A VPC router as a system container driven through the store: tiers, network ACL lists, a private gateway
and a static route sent aggregated, changed per command, a bad command refused before it is sent, and a
stop and start giving a full replay of every section (the same ruleset and routes, the same traffic).
Tests run in file order on one router.
"""

import json
from pathlib import Path

import pytest

from orchestration.commands import BadCommand, Command
from orchestration.lab.lab import PUBLIC_DEVICE, PUBLIC_GATEWAY
from orchestration.lab.vpclab import CUSTOMER_HOST, CUSTOMER_LAN, PRIVATE_ADDRESS, rule, tier
from orchestration.store import Network
from vrpipe.run import run

from .engine_fixtures import connect, serve, wait_for
from .orch_fixtures import orch_lab  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e
ROUTER, WEB, APP = "vpc", "10.1.1.5", "10.1.2.5"
NETWORKS = {"eth1": "g-vpc-web", "eth3": "g-vpc-app", "eth4": "g-vpc-cust"}


@pytest.fixture(scope="module")
def lab(orch_lab):  # noqa: F811
    manager, lab = orch_lab
    networks = [Network(device, bridge) for device, bridge in NETWORKS.items()]
    manager.create(ROUTER, [*networks, Network(PUBLIC_DEVICE, "pub")])
    manager.start(ROUTER)
    lab.web = lab.add_host("web1", NETWORKS["eth1"], "02:00:0a:01:01:05", f"{WEB}/24", "10.1.1.1")
    lab.app = lab.add_host("app1", NETWORKS["eth3"], "02:00:0a:01:02:05", f"{APP}/24", "10.1.2.1")
    lab.customer = lab.add_host("cust", NETWORKS["eth4"], "02:00:ac:10:00:02", "172.16.0.2/24", "172.16.0.1")
    run(["ip", "address", "add", f"{CUSTOMER_HOST}/32", "dev", "lo"], ns=lab.customer.ns)
    for host in (lab.web, lab.app, lab.customer):
        serve(host.ns, 7000, host.name)
        serve(host.ns, 7001, host.name)
    return manager, lab


def vpc_commands():
    interfaces = {
        "guests": [tier("eth1", "10.1.1.1/24", "web"), tier("eth3", "10.1.2.1/24", "app")],
        "public": [{"device": PUBLIC_DEVICE, "addresses": ["203.0.113.60/24"], "gateway": PUBLIC_GATEWAY}],
    }
    lists = [
        {"name": "web", "rules": [rule(10, "allow", "all", "egress", ["0.0.0.0/0"])]},
        {"name": "app", "rules": [
            rule(10, "deny", "tcp", "ingress", ["10.1.1.0/24"], 7001),
            rule(20, "allow", "tcp", "ingress", ["10.1.1.0/24"], "7000-7001"),
        ]},
        {"name": "private", "rules": [rule(10, "allow", "tcp", "ingress", ["10.1.0.0/16"], 7000)]},
    ]
    return [
        *(Command("add", "network_acls", acl) for acl in lists),
        Command("add", "interfaces", interfaces),
        Command("add", "private_gateways", {"device": "eth4", "address": PRIVATE_ADDRESS, "acl": "private",
                                            "source_nat": True}),
        Command("add", "static_routes", {"cidr": CUSTOMER_LAN, "next_hop": "172.16.0.2"}),
    ]


def router_exec(manager, argv):
    router = manager.store.router(ROUTER)
    status, out = manager.deployer(router).execute(router, argv)
    assert status == 0, out
    return out


def test_the_vpc_is_applied_aggregated_and_its_lists_decide(lab):
    manager, lab_ = lab
    outcome = manager.apply(ROUTER, vpc_commands())
    assert outcome.ok, outcome.error
    assert [a.ok for a in outcome.answers] == [True] * 6
    assert connect(lab_.web.ns, APP, 7000) == f"app1 from {WEB}"
    assert connect(lab_.web.ns, APP, 7001, timeout=1) == ""  # the deny at 10 beats the allow at 20
    assert connect(lab_.web.ns, CUSTOMER_HOST, 7000) == "cust from 172.16.0.1"  # static route, source NAT
    assert connect(lab_.web.ns, CUSTOMER_HOST, 7001, timeout=1) == ""  # the private gateway's list


def test_a_list_replaced_per_command_changes_traffic_at_once(lab):
    manager, lab_ = lab
    app = {"name": "app", "rules": [rule(20, "allow", "tcp", "ingress", ["10.1.1.0/24"], "7000-7001"),
                                    rule(30, "deny", "tcp", "ingress", ["10.1.1.0/24"], 7001)]}
    answer = manager.apply(ROUTER, [Command("add", "network_acls", app)], aggregate=False)[0]
    assert answer.ok, answer.error
    assert connect(lab_.web.ns, APP, 7001) == f"app1 from {WEB}"
    stored = manager.store.state(ROUTER)["network_acls"][1]  # the engine's normal form: ports as text
    summary = [(r["number"], r["action"], r["ports"]) for r in stored["rules"]]
    assert summary == [(20, "allow", "7000-7001"), (30, "deny", "7001")]


def test_removing_a_list_a_tier_uses_is_refused_before_anything_is_sent(lab):
    manager, _ = lab
    before = manager.store.state(ROUTER)
    with pytest.raises(BadCommand, match=r"commands\[0\].data.name: network ACL list app is still used by tier eth3"):
        manager.apply(ROUTER, [Command("remove", "network_acls", {"name": "app"})])
    assert manager.store.state(ROUTER) == before


def test_stop_and_start_replays_every_section(lab):
    manager, lab_ = lab
    ruleset = ["nft", "-s", "list", "table", "inet", "vr"]
    before, routes = router_exec(manager, ruleset), router_exec(manager, ["ip", "-4", "route"])
    manager.stop(ROUTER)
    assert manager.start(ROUTER).ok
    assert router_exec(manager, ruleset) == before
    assert router_exec(manager, ["ip", "-4", "route"]) == routes
    answered = wait_for(lambda: connect(lab_.web.ns, CUSTOMER_HOST, 7000, timeout=1), "the customer after replay")
    assert answered == "cust from 172.16.0.1"
    assert connect(lab_.web.ns, APP, 7001) == f"app1 from {WEB}"


def test_the_readme_vpc_example_applies_replays_and_is_destroyed(lab):
    """The README's walk-through of examples/vpc-3-tier.json, through the manager: a router with the NICs it
    names, the example aggregated, db's list replaced per command, a replay, the router destroyed."""
    manager, _ = lab
    nics = {"eth1": "g-web", "eth2": "pub", "eth3": "g-app", "eth4": "g-db", "eth5": "g-cust"}
    manager.create("vpc1", [Network(device, bridge) for device, bridge in nics.items()])
    manager.start("vpc1")
    example = Path(__file__).resolve().parents[2] / "examples" / "vpc-3-tier.json"
    outcome = manager.apply("vpc1", [Command.from_json(c) for c in json.loads(example.read_text())])
    assert outcome.ok and all(a.ok for a in outcome.answers), outcome.error
    db = {"name": "db", "rules": [rule(10, "allow", "tcp", "ingress", ["10.1.2.0/25"], 5432)]}
    answer = manager.apply("vpc1", [Command("add", "network_acls", db)], aggregate=False)[0]
    assert answer.ok, answer.error
    assert manager.replay("vpc1").ok
    router = manager.store.router("vpc1")
    status, table = manager.deployer(router).execute(router, ["nft", "list", "chain", "inet", "vr", "acl/db/ingress"])
    assert status == 0 and "acl/db/ingress/0/ports_0_0 return" in table, table
    manager.destroy("vpc1")
    assert "vpc1" not in [r.name for r in manager.store.routers()]
