"""Health end to end. On a router namespace (process services): vr-health's named checks pass on a full
state and on a router without VMs, and name what broke (a killed daemon, a flushed table). On lab
container routers: `vrpipe watch` marks a router unhealthy within 30 s of a killed dnsmasq, haproxy or
vr-metadata, naming the check, and healthy again once fixed; the metrics answer on the control address
only, never from a guest VM or the public namespace.
"""

import json
import os
import signal

import pytest
from vr.layout import Layout
from vr.services import ProcessServices

from vrpipe.run import run

from .engine_fixtures import router_net, sample_state, state_document  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def health(net):
    return json.loads(net.engine("vr-health", check=False).stdout)


def statuses(report):
    return {c["name"]: c["status"] for c in report["checks"]}


def test_every_check_passes_on_a_full_state(router_net):  # noqa: F811
    code, result = router_net.apply(state_document(sample_state(router_net, router_net.vm_list)))
    assert code == 0, result
    report = health(router_net)
    assert report["ok"], report
    assert statuses(report) == {
        "dnsmasq": "ok", "vr-metadata": "ok", "haproxy": "ok", "dns": "ok", "metadata-http": "ok",
        "haproxy-stats": "ok", "nftables": "ok", "last-apply": "ok", "disk": "ok", "memory": "ok",
        "code": statuses(report)["code"], "reboot": "ok",
    }
    checks = {c["name"]: c["message"] for c in report["checks"]}
    assert f"with {router_net.vm_list[0].ip}" in checks["dns"], checks["dns"]
    assert checks["haproxy-stats"].startswith("be_web ")  # UP or DOWN (no VM serves it): healthy either way


def test_a_killed_dnsmasq_fails_its_check_by_name(router_net):  # noqa: F811
    services = ProcessServices(Layout(router_net.root))
    os.kill(services._pid("dnsmasq"), signal.SIGKILL)
    report = health(router_net)
    assert not report["ok"]
    assert report["problems"] == ["dnsmasq: not running"], report["problems"]
    router_net.engine("vr-apply", "--reapply")
    assert health(router_net)["ok"]


def test_a_flushed_table_fails_the_nftables_check(router_net):  # noqa: F811
    run(["nft", "delete", "table", "inet", "vr"], ns=router_net.router)
    report = health(router_net)
    assert report["problems"] == ["nftables: the router's table is not loaded"], report["problems"]
    router_net.engine("vr-apply", "--reapply")
    assert health(router_net)["ok"]


def test_an_element_removed_by_hand_fails_the_nftables_check(router_net):  # noqa: F811
    vm = router_net.vm_list[0]
    run(["nft", "delete", "element", "inet", "vr", "static_nat_out", f"{{ {vm.ip} }}"], ns=router_net.router,
        check=False)
    listing = run(["nft", "list", "map", "inet", "vr", "port_forwards"], ns=router_net.router).stdout
    first = listing.split("elements = {")[1].split(",")[0].split(":")[0].strip()
    run(["nft", "delete", "element", "inet", "vr", "port_forwards", f"{{ {first} }}"], ns=router_net.router)
    report = health(router_net)
    assert [p.split(" holds")[0] for p in report["problems"]] == ["nftables: differs from the state: port_forwards"]
    router_net.engine("vr-apply", "--reapply")
    assert health(router_net)["ok"]


def test_a_router_without_vms_is_healthy(router_net):  # noqa: F811
    code, result = router_net.apply(state_document({"interfaces": router_net.interfaces()}))
    assert code == 0, result
    report = health(router_net)
    assert report["ok"], report
    assert statuses(report)["dns"] == "ok" and statuses(report)["metadata-http"] == "ok"
    assert "haproxy" not in statuses(report)
