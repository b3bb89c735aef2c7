"""VPC routers in the lab: state documents for a router with tiers, network ACL lists, a private gateway
and static routes, and the namespaces behind them (a second tier's bridge, VMs on a tier, a customer
network behind the private gateway). The tests, `invoke bench-engine --vpc` and the examples use these.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.lab.netlab import RouterNet, Vm
from orchestration.lab.netns import Link
from vrpipe.run import run

SECOND_TIER_DEVICE, PRIVATE_DEVICE = "eth3", "eth4"
PRIVATE_ADDRESS, CUSTOMER_ADDRESS = "172.16.0.1/24", "172.16.0.2"
CUSTOMER_LAN, CUSTOMER_HOST = "192.168.50.0/24", "192.168.50.1"


def rule(
    number: int, action: str, protocol: str, traffic_type: str, cidrs: Sequence[str], ports: str | int | None = None
) -> dict[str, Any]:
    """One network ACL rule as the engine reads it."""
    item: dict[str, Any] = {"number": number, "action": action, "protocol": protocol, "traffic_type": traffic_type}
    item["cidrs"] = list(cidrs)
    if ports is not None:
        item["ports"] = ports
    return item


def tier(device: str, gateway: str, acl: str) -> dict[str, Any]:
    return {"device": device, "gateway": gateway, "domain": "cloud.internal", "acl": acl}


def vpc_interfaces(net: RouterNet, tiers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The lab router's interfaces with `tiers` as its guest networks."""
    return {**net.interfaces(), "guests": list(tiers)}


def bench_acls(tiers: int, rules: int, cidrs: int) -> list[dict[str, Any]]:
    """One list per tier, `rules` rules each of `cidrs` CIDRs: the first fifth deny, the rest allow (the
    usual shape: a few blocked sources, then the services), ingress and egress alternating."""
    acls = []
    for t in range(tiers):
        items = []
        for r in range(rules):
            action = "deny" if r < max(1, rules // 5) else "allow"
            sources = [f"100.{64 + t}.{r}.{c * 24}/29" for c in range(cidrs)]  # none adjacent: nothing merges
            traffic_type = ("ingress", "egress")[r % 2]
            items.append(rule(r + 1, action, "tcp", traffic_type, sources, 1000 + r))
        acls.append({"name": f"tier{t}", "rules": items})
    return acls


@dataclass(frozen=True)
class Customer:
    """The customer's network behind the private gateway: one namespace, its router address on the
    private network and a host address on its own LAN."""

    ns: str


def add_tier(net: RouterNet, device: str) -> None:
    """One more guest bridge in the router, for a second tier."""
    net.namespaces.bridge(net.router, device)


def add_vm_on(net: RouterNet, device: str, name: str, mac: str, ip: str, gateway: str) -> Vm:
    """A VM on the bridge `device` with a fixed address and its tier's gateway as default route."""
    ns = net.namespaces.add(name)
    port = f"p{len(net.vms)}{name}"[:15]
    net.namespaces.veth(Link(ns, "eth0"), Link(net.router, port), mac_a=mac)
    run(["ip", "link", "set", port, "master", device], ns=net.router)
    prefix = gateway.split("/")[1]
    run(["ip", "address", "replace", f"{ip}/{prefix}", "dev", "eth0"], ns=ns)
    run(["ip", "route", "replace", "default", "via", gateway.split("/")[0]], ns=ns)
    vm = Vm(name, ns, mac, ip)
    net.vms.append(vm)
    return vm


def add_customer(net: RouterNet) -> Customer:
    """A customer namespace on the private gateway's device: reachable only through a static route."""
    ns = net.namespaces.add("cust")
    net.namespaces.veth(Link(net.router, PRIVATE_DEVICE), Link(ns, "eth0"))
    run(["ip", "address", "add", f"{CUSTOMER_ADDRESS}/24", "dev", "eth0"], ns=ns)
    run(["ip", "address", "add", f"{CUSTOMER_HOST}/32", "dev", "lo"], ns=ns)
    run(["ip", "route", "add", "10.0.0.0/8", "via", PRIVATE_ADDRESS.split("/")[0]], ns=ns)
    return Customer(ns)

