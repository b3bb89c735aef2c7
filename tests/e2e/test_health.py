"""Health end to end. On a router namespace (process services): vr-health's named checks pass on a full
state and on a router without VMs, and name what broke (a killed daemon, a flushed table). On lab
container routers: `vrpipe watch` marks a router unhealthy within 30 s of a killed dnsmasq, haproxy or
vr-metadata, naming the check, and healthy again once fixed; the metrics answer on the control address
only, never from a guest VM or the public namespace.
"""

import json
import os
import re
import signal
import threading
import time

import pytest
from vr import contract
from vr.layout import Layout
from vr.services import ProcessServices

from orchestration.cli import main as cli_main
from orchestration.commands import Command
from orchestration.lab.lab import public_ip
from orchestration.lab.netlab import VR_SCRIPTS
from orchestration.watch import Watcher, WatchOptions
from vrpipe.run import run, spawn

from .engine_fixtures import http_get, router_net, sample_state, state_document, wait_for  # noqa: F401 - fixture
from .orch_fixtures import orch_lab  # noqa: F401 - fixture

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


# Lab container routers, watched by `vrpipe watch`'s Watcher with its defaults (10 s, unhealthy after 2).

DETECT_WITHIN = 30.0


@pytest.fixture(scope="module")
def watched(orch_lab):  # noqa: F811
    """r1 with a VM, a port forward and a load balancer; r2 with no VM at all; a watcher running on both."""
    manager, lab = orch_lab
    for index, name in ((1, "r1"), (2, "r2")):
        lab.create_router(name)
        manager.start(name)
        commands = lab.network_commands(index)
        if name == "r1":
            vm = lab.add_vm(name, index, 0)
            balancer = {"name": "web", "public_ip": public_ip(index), "port": 8080,
                        "backends": [{"ip": vm.ip, "port": 7000}]}
            commands += [*lab.vm_commands(vm, index, 0), Command("add", "load_balancer", balancer)]
            lab.vm = vm
        outcome = manager.apply(name, commands)
        assert outcome.ok, outcome.error
    assert lab.dhcp(lab.vm)
    watcher, stop = Watcher(manager, WatchOptions()), threading.Event()
    thread = threading.Thread(target=watcher.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    lab.stop_watch = lambda: (stop.set(), thread.join())
    yield manager, lab
    lab.stop_watch()
    watcher.close()


def on_router(manager, name, *argv):
    router = manager.store.router(name)
    status, out = manager.deployer(router).execute(router, list(argv))
    assert status == 0, out
    return out


def wait_health(manager, name, state, since):
    """Seconds from `since` until the store says `state`, and the health then."""
    deadline = since + 3 * DETECT_WITHIN
    while time.monotonic() < deadline:
        health = manager.store.router(name).health
        if health.state == state and health.at is not None and health.at.timestamp() > time.time() - 30:
            return time.monotonic() - since, health
        time.sleep(0.5)
    raise AssertionError(f"{name} not {state} in {3 * DETECT_WITHIN:.0f}s: {manager.store.router(name).health}")


def test_both_routers_are_watched_and_healthy(watched):
    manager, _ = watched
    for name in ("r1", "r2"):
        wait_health(manager, name, "healthy", time.monotonic())


@pytest.mark.parametrize(
    "service, signal_name, failed_check, fix",
    [
        ("dnsmasq", "KILL", "dnsmasq: not running", ["systemctl", "start", "dnsmasq"]),
        # systemd restarts these at once when killed: frozen, they are alive but do not answer.
        ("haproxy", "STOP", "haproxy-stats: ", ["systemctl", "kill", "-s", "CONT", "haproxy"]),
        ("vr-metadata", "STOP", "metadata-http: ", ["systemctl", "kill", "-s", "CONT", "vr-metadata"]),
    ],
)
def test_a_broken_service_is_known_within_30s_by_name_and_healthy_again_once_fixed(
    watched, service, signal_name, failed_check, fix
):
    manager, _ = watched
    wait_health(manager, "r1", "healthy", time.monotonic())
    broken = time.monotonic()
    on_router(manager, "r1", "systemctl", "kill", "-s", signal_name, service)
    seconds, health = wait_health(manager, "r1", "unhealthy", broken)
    assert seconds < DETECT_WITHIN, f"{service}: unhealthy only after {seconds:.1f}s"
    assert failed_check in (health.detail or ""), health.detail
    on_router(manager, "r1", *fix)
    wait_health(manager, "r1", "healthy", time.monotonic())
    assert manager.store.router("r2").health.state == "healthy"  # no false alarm on the router without VMs


def test_metrics_answer_the_manager_on_the_control_address_only(watched):
    manager, lab = watched
    r1 = manager.store.router("r1")
    url = f"http://{r1.control_address}:{contract.METRICS_PORT}/metrics"
    code, text = wait_for(lambda: (answer := http_get(manager.config.ssh_netns, url))[0] == 200 and answer, "metrics")
    assert "vr_health_ok 1.0" in text and 'vr_dhcp_leases 1.0' in text
    assert 'vr_haproxy_up{proxy="be_web",server="BACKEND"}' in text
    # Routes towards the control network: only the router's binding and firewall stand in the way.
    run(["ip", "route", "replace", "169.254.0.0/16", "via", public_ip(1)], ns=lab.public)
    run(["ip", "route", "replace", "default", "via", "10.1.1.1"], ns=lab.vm.ns)
    for ns, address in ((lab.vm.ns, r1.control_address), (lab.vm.ns, "10.1.1.1"),
                        (lab.public, r1.control_address), (lab.public, public_ip(1))):
        assert http_get(ns, f"http://{address}:{contract.METRICS_PORT}/metrics", timeout=2)[0] == 0, (ns, address)


def test_vrpipe_list_shows_health_and_its_age(watched, capsys):
    manager, _ = watched
    wait_health(manager, "r1", "healthy", time.monotonic())
    config = manager.config
    argv = ["--state-dir", str(config.state_dir), "--json", "list"]
    assert cli_main(argv) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["r1"]["health"] == "healthy" and rows["r1"]["health_age_s"] < 30
    assert cli_main(argv[:2] + ["list"]) == 0
    assert re.search(r"r1 .* healthy \d+s ago", capsys.readouterr().out)


def vr_health(manager, name):
    router = manager.store.router(name)
    return json.loads(manager.deployer(router).execute(router, [contract.command("vr-health")])[1])


def test_the_resident_engine_answers_health_and_follows_each_change(watched):
    manager, lab = watched
    report = vr_health(manager, "r1")
    assert report["ok"] and report.get("resident"), report  # no Python start nor rendering per check
    forward = {"public_ip": public_ip(1), "protocol": "tcp", "public_ports": "2299", "vm_ip": lab.vm.ip,
               "vm_ports": "7000"}
    assert manager.apply("r1", [Command("add", "port_forwarding", forward)]).ok
    report = vr_health(manager, "r1")  # counts of the state it remembered would differ from the table now
    assert report["ok"] and report.get("resident"), report["problems"]
    assert manager.apply("r1", [Command("remove", "port_forwarding", forward)]).ok
    on_router(manager, "r1", "nft", "flush", "map", "inet", "vr", "port_forwards")
    report = vr_health(manager, "r1")
    assert [p for p in report["problems"] if p.startswith("nftables: differs")], report
    on_router(manager, "r1", contract.command("vr-apply"), "--reapply")  # in its own process: new state files
    on_router(manager, "r1", "systemctl", "stop", "vr-engine")
    try:
        report = vr_health(manager, "r1")
        assert report["ok"] and "resident" not in report, report  # made in vr-health's own process
    finally:
        on_router(manager, "r1", "systemctl", "start", "vr-engine")


# Asks the metadata service every 20 ms for `seconds`; prints how many requests were answered, refused, or
# neither within 5 s.
ASK_METADATA = """
import http.client, json, sys, time
counts = {"answered": 0, "refused": 0, "other": 0, "errors": []}
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        connection = http.client.HTTPConnection("10.1.1.1", 80, timeout=5)
        connection.request("GET", "/latest/meta-data/")
        connection.getresponse().read()
        connection.close()
        counts["answered"] += 1
    except ConnectionRefusedError:
        counts["refused"] += 1
    except OSError as err:
        counts["other"] += 1
        counts["errors"].append(repr(err))
    time.sleep(0.02)
print(json.dumps(counts))
"""


def test_vr_metadata_restarts_without_refusing_a_request(watched):
    manager, lab = watched
    main_pid = ["systemctl", "show", "--property", "MainPID", "--value", "vr-metadata"]
    before = on_router(manager, "r1", *main_pid).strip()
    asking = spawn(["python3", "-c", ASK_METADATA, "8"], ns=lab.vm.ns, pipe=True)
    try:
        time.sleep(1)
        for _ in range(3):  # systemd keeps its listening sockets meanwhile: requests wait, none is refused
            on_router(manager, "r1", "systemctl", "restart", "vr-metadata")
            time.sleep(0.5)
        counts = json.loads(asking.communicate(timeout=30)[0])
    finally:
        asking.kill()
    assert on_router(manager, "r1", *main_pid).strip() not in (before, "0")
    assert counts["refused"] == 0 and counts["other"] == 0 and counts["answered"] > 50, counts


def test_with_action_recreate_a_broken_router_is_recreated_and_healthy_again(watched):
    manager, lab = watched
    lab.stop_watch()  # one watcher at a time: this one recreates
    old_key = manager.store.router("r2").host_key
    seen = []
    watcher = Watcher(manager, WatchOptions(action="recreate"), seen.append)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, kwargs={"names": ["r2"], "stop": stop}, daemon=True)
    try:
        thread.start()
        on_router(manager, "r2", "nft", "delete", "table", "inet", "vr")
        wait_health(manager, "r2", "unhealthy", time.monotonic())
        wait_health(manager, "r2", "healthy", time.monotonic())
    finally:
        stop.set()
        thread.join()
        watcher.close()
    assert "r2: recreating it (--action recreate)" in seen, seen
    assert manager.store.router("r2").host_key not in (None, old_key)  # a new router, with new host keys
    assert "inet vr" in on_router(manager, "r2", "nft", "list", "tables")
