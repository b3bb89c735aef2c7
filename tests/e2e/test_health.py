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
from vr import contract
from vr.layout import Layout
from vr.services import ProcessServices

from orchestration.lab.netlab import VR_SCRIPTS
from vrpipe.run import run, spawn

from .engine_fixtures import http_get, router_net, sample_state, state_document, wait_for  # noqa: F401 - fixture

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


def test_metrics_answer_on_the_control_address_only(router_net):  # noqa: F811
    net = router_net
    code, result = net.apply(state_document(sample_state(net, net.vm_list)))
    assert code == 0, result
    env = {"PATH": os.environ["PATH"], "VR_ROOT": str(net.root), "VR_SERVICES": "process"}
    server = spawn([str(VR_SCRIPTS / "bin" / "vr-metrics")], ns=net.router, env=env, output=net.root / "metrics.log")
    try:
        url = f"http://{net.control_ip}:{contract.METRICS_PORT}/metrics"
        code, text = wait_for(lambda: (answer := http_get(net.manager, url))[0] == 200 and answer, "metrics")
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert samples["vr_health_ok"] == "1.0"
        assert samples['vr_health_check_status{check="dns"}'] == "0.0"
        assert samples['vr_state_items{section="dhcp"}'] == str(float(len(net.vm_list)))
        assert float(samples['vr_applies_total{kind="state",outcome="ok"}']) >= 1
        assert 'vr_haproxy_up{proxy="be_web",server="BACKEND"}' in samples
        assert 'vr_nftables_packets_total{chain="input",verdict="drop"}' in samples
        assert "vr_apply_duration_seconds_count" in samples
        vm = net.vm_list[0]
        # Routes towards the control network, so that only the router's own binding and firewall stop them.
        run(["ip", "address", "add", f"{vm.ip}/24", "dev", "eth0"], ns=vm.ns, check=False)
        run(["ip", "route", "replace", "default", "via", net.gateway], ns=vm.ns)
        run(["ip", "route", "replace", "169.254.0.0/16", "via", net.public_ips[0]], ns=net.public)
        for ns, address in ((vm.ns, net.gateway), (vm.ns, net.control_ip), (net.public, net.public_ips[0]),
                            (net.public, net.control_ip)):
            assert http_get(ns, f"http://{address}:{contract.METRICS_PORT}/metrics", timeout=2)[0] == 0, (ns, address)
    finally:
        server.kill()
        server.wait()
