"""The engine end to end in network namespaces: real nftables, dnsmasq with a real DHCP client, haproxy,
the metadata service, and traffic from a public namespace and from the VMs. Tests run in file order
on one router (module fixture), each building on the state the previous one applied.
"""

import base64
import copy
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from vr.layout import Layout
from vr.services import ProcessServices

from orchestration.lab.netlab import VR_SCRIPTS, make_router_net
from orchestration.lab.netns import Namespaces
from orchestration.lab.workload import GUEST_NETWORK, PUBLIC_IP, fleet_state, vm_address, vm_mac
from vrpipe.run import run

from .engine_fixtures import (
    USER_DATA,
    address_of,
    connect,
    http_get,
    router_net,  # noqa: F401 - fixture
    ruleset,
    sample_state,
    serve,
    state_document,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def net(router_net):  # noqa: F811
    vms = router_net.vm_list
    for vm in vms:
        serve(vm.ns, 7000, vm.name)
    serve(router_net.public, 9000, "outside")
    return router_net


def test_sample_state_applies_and_router_is_healthy(net):
    code, result = net.apply(state_document(sample_state(net, net.vm_list)))
    assert code == 0, result
    assert result["ok"] and result["sections"]["dhcp"] == {"ok": True, "items": 3}
    assert set(result["timings"]) >= {"validate", "render", "check", "swap", "activate", "persist"}
    health = json.loads(net.engine("vr-health").stdout)
    assert health["ok"], health
    assert health["versions"]["vr-scripts"] == health["version"]
    assert health["versions"]["nftables"].startswith("nftables")
    assert health["services"] == {"dnsmasq": "active", "vr-metadata": "active", "haproxy": "active"}
    assert health["nftables"]["port_forwards"] == 3


def test_the_same_state_again_does_nothing_unless_something_it_made_changed(net):
    document = state_document(sample_state(net, net.vm_list))
    before = ruleset(net)
    code, result = net.apply(document)
    assert code == 0 and result["unchanged"] and result["actions"] == {}, result
    assert result["sections"]["dhcp"] == {"ok": True, "items": 3}
    hosts = net.root / "etc/vr/dhcp-hosts"
    text = hosts.read_text()
    hosts.write_text("")  # a file the state renders was changed behind the engine's back
    code, result = net.apply(document)
    assert code == 0 and "unchanged" not in result and result["actions"]["dnsmasq"] == "reloaded", result
    assert hosts.read_text() == text and ruleset(net) == before
    run(["nft", "delete", "table", "inet", "vr"], ns=net.router)  # the ruleset was flushed
    code, result = net.apply(document)
    assert code == 0 and result["actions"]["nftables"] == "loaded" and ruleset(net) == before, result


def test_vms_get_their_addresses_from_dnsmasq(net):
    for vm in net.vm_list:
        proc = net.dhcp(vm)
        assert proc.returncode == 0, proc.stderr
        assert address_of(vm) == [vm.ip]
    leases = (net.root / "var/lib/misc/dnsmasq.leases").read_text()
    assert all(vm.mac in leases for vm in net.vm_list)


def test_vm_names_resolve_through_the_router(net):
    vm1 = net.vm_list[0]
    # A raw DNS query to the router: the host's own resolver configuration must not take part.
    proc = run(["python3", "-c", DNS_QUERY, "10.1.1.1", "vm2.cloud.internal"], ns=vm1.ns, check=False)
    assert proc.stdout.strip() == "10.1.1.6", proc.stderr


DNS_QUERY = """
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(query, (server, 53))
reply = s.recv(512)
print(".".join(str(b) for b in reply[-4:]))
"""


def test_metadata_answers_each_vm_with_its_own_data(net):
    vm1, vm2, vm3 = net.vm_list
    assert http_get(vm1.ns, "http://10.1.1.1/latest/meta-data/instance-id") == (200, "i-vm1")
    assert http_get(vm2.ns, "http://10.1.1.1/latest/meta-data/instance-id") == (200, "i-vm2")
    assert http_get(vm1.ns, "http://10.1.1.1/latest/user-data") == (200, USER_DATA)
    assert http_get(vm1.ns, "http://10.1.1.1/latest/meta-data/public-keys")[1].startswith("ssh-ed25519 ")
    assert http_get(vm2.ns, "http://10.1.1.1/latest/user-data")[0] == 404
    assert http_get(vm3.ns, "http://10.1.1.1/latest/meta-data/instance-id")[0] == 404


def test_password_is_served_once(net):
    vm1 = net.vm_list[0]
    assert http_get(vm1.ns, "http://10.1.1.1/latest/password") == (200, "pw-of-vm1")
    assert http_get(vm1.ns, "http://10.1.1.1/latest/password") == (200, "saved_password")


def test_port_forwards_reach_their_vms(net):
    assert connect(net.public, "203.0.113.10", 2201) == "vm1 from 203.0.113.1"
    assert connect(net.public, "203.0.113.10", 2202) == "vm2 from 203.0.113.1"


def test_firewall_refuses_a_forward_it_does_not_allow(net):
    assert connect(net.public, "203.0.113.10", 2203, timeout=1) == ""
    assert connect(net.public, "203.0.113.10", 22, timeout=1) == ""


def test_static_nat_both_ways(net):
    vm3 = net.vm_list[2]
    assert connect(net.public, "203.0.113.11", 7000) == "vm3 from 203.0.113.1"
    assert connect(vm3.ns, "203.0.113.1", 9000) == "outside from 203.0.113.11"


def test_source_nat_only_where_egress_allows(net):
    vm1 = net.vm_list[0]
    assert connect(vm1.ns, "203.0.113.1", 9000) == "outside from 203.0.113.10"
    serve(net.public, 9001, "closed")
    assert connect(vm1.ns, "203.0.113.1", 9001, timeout=1) == ""
    assert run(["ping", "-c", "1", "-W", "2", "203.0.113.1"], ns=vm1.ns, check=False).returncode == 0


def test_load_balancer_spreads_over_both_backends(net):
    wait_for(lambda: connect(net.public, "203.0.113.10", 80).startswith("vm"), "haproxy to answer")
    answers = {connect(net.public, "203.0.113.10", 80).split()[0] for _ in range(6)}
    assert answers == {"vm1", "vm2"}


def test_batch_and_single_command_change_only_what_they_name(net):
    add = {
        "op": "add",
        "type": "firewall",
        "data": {
            "direction": "ingress",
            "public_ip": "203.0.113.10",
            "protocol": "tcp",
            "ports": 2203,
            "cidrs": ["0.0.0.0/0"],
        },
    }
    code, result = net.apply({"schema": 1, "kind": "batch", "commands": [add]})
    assert code == 0 and result["results"] == [{"index": 0, "type": "firewall", "op": "add", "ok": True}]
    assert result["actions"] == {"nftables": "updated"}  # elements only: no whole-table load
    assert connect(net.public, "203.0.113.10", 2203) == "vm2 from 203.0.113.1"
    proc = net.engine("vr-cmd", "firewall", "remove", json.dumps(add["data"]))
    assert proc.returncode == 0, proc.stdout
    assert connect(net.public, "203.0.113.10", 2203, timeout=1) == ""


def test_element_updates_converge_with_a_whole_reapply(net):
    """A batch that changes only set and map elements is loaded as `add/delete element` in one transaction;
    re-applying the persisted state whole gives the same ruleset and files."""
    rule = {"direction": "ingress", "public_ip": "203.0.113.10", "protocol": "tcp", "ports": 2204}
    forward = {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": 2204, "vm_ip": "10.1.1.7"}
    commands = [
        {"op": "add", "type": "firewall", "data": {**rule, "cidrs": ["203.0.113.0/25"]}},
        {"op": "add", "type": "firewall", "data": {**rule, "cidrs": ["203.0.113.128/25"]}},  # collapses to a /24
        {"op": "add", "type": "port_forwarding", "data": {**forward, "vm_ports": 7000}},
    ]
    for batch in (commands[:1], commands[1:]):
        code, result = net.apply({"schema": 1, "kind": "batch", "commands": batch})
        assert code == 0 and result["actions"] == {"nftables": "updated"}, result
    assert connect(net.public, "203.0.113.10", 2204) == "vm3 from 203.0.113.1"
    before, files_before, state_before = _table(net), _rendered(net), net.engine("vr-state").stdout
    proc = net.engine("vr-apply", "--reapply")
    assert proc.returncode == 0 and json.loads(proc.stdout)["actions"]["nftables"] == "loaded", proc.stdout
    assert _table(net) == before and _rendered(net) == files_before
    assert net.engine("vr-state").stdout == state_before  # the journal folded into a new snapshot
    removes = [{**c, "op": "remove"} for c in commands]
    code, result = net.apply({"schema": 1, "kind": "batch", "commands": removes})
    assert code == 0 and result["actions"] == {"nftables": "updated"}, result
    assert connect(net.public, "203.0.113.10", 2204, timeout=1) == ""


def test_nested_port_ranges_from_many_sources_load_and_match(net):
    """20 nested ranges x 256 sources once rendered 102,400 elements and timed out in `nft -c`."""
    rules = [
        {
            "direction": "ingress",
            "public_ip": "203.0.113.10",
            "protocol": "tcp",
            "ports": f"{2100 + i}-{2300 - i}",
            "cidrs": [f"10.{j}.{i}.1/32" for j in range(255)] + (["203.0.113.1/32"] if i == 19 else []),
        }
        for i in range(20)
    ]
    commands = [{"op": "add", "type": "firewall", "data": rule} for rule in rules]
    code, result = net.apply({"schema": 1, "kind": "batch", "commands": commands})
    assert code == 0, result
    assert connect(net.public, "203.0.113.10", 2203) == "vm2 from 203.0.113.1"
    code, result = net.apply({"schema": 1, "kind": "batch", "commands": [{**c, "op": "remove"} for c in commands]})
    assert code == 0, result
    assert connect(net.public, "203.0.113.10", 2203, timeout=1) == ""


@pytest.mark.parametrize("resident", [False, True], ids=["vr-apply", "vr-engine"])
def test_a_kill_at_any_point_of_a_batch_leaves_the_old_or_the_new_state(net, resident):
    """SIGKILL the process applying a batch (vr-apply, or the resident engine it handed the batch to) at a
    spread of moments: the persisted state is the old one or the new one, never a mix, and a whole re-apply
    from it brings a healthy router."""
    ip = "10.1.1.30"
    commands = [
        {"op": "add", "type": "dhcp", "data": {"mac": "02:00:0a:01:01:30", "ip": ip, "hostname": "vm30"}},
        {"op": "add", "type": "vm_data", "data": {"vm_ip": ip, "metadata": {"instance-id": "i-30"}}},
        {
            "op": "add",
            "type": "port_forwarding",
            "data": {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": 2230, "vm_ip": ip, "vm_ports": 22},
        },
    ]
    add = {"schema": 1, "kind": "batch", "commands": commands}
    remove = {"schema": 1, "kind": "batch", "commands": [{**c, "op": "remove"} for c in commands]}
    old = net.engine("vr-state").stdout
    assert net.apply(add)[0] == 0
    new = net.engine("vr-state").stdout
    assert net.apply(remove)[0] == 0 and net.engine("vr-state").stdout == old
    env = ["env", f"VR_ROOT={net.root}", "VR_SERVICES=process"]
    argv = ["ip", "netns", "exec", net.router, *env, str(VR_SCRIPTS / "bin" / "vr-apply"), "-"]
    for delay in (0.0, 0.02, 0.05, 0.08, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4, 0.6):
        if net.engine("vr-state").stdout != old:
            assert net.apply(remove)[0] == 0
        daemon = _start_engine(net) if resident else None
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        proc.stdin.write(json.dumps(add).encode())
        proc.stdin.close()
        time.sleep(delay)
        _kill(daemon or proc)
        proc.wait(timeout=60)
        persisted = net.engine("vr-state").stdout
        assert persisted in (old, new), delay
    proc = net.engine("vr-apply", "--reapply")
    assert proc.returncode == 0, proc.stdout
    assert json.loads(net.engine("vr-health").stdout)["ok"]
    assert connect(net.public, "203.0.113.10", 2201) == "vm1 from 203.0.113.1"
    if net.engine("vr-state").stdout != old:
        assert net.apply(remove)[0] == 0


def test_invalid_batch_names_the_bad_command_and_changes_nothing(net):
    before, files_before = ruleset(net), _files(net)
    good = {"op": "add", "type": "dhcp", "data": {"mac": "02:00:0a:01:01:20", "ip": "10.1.1.20", "hostname": "ok"}}
    bad = {"op": "add", "type": "dhcp", "data": {"mac": "02:00:0a:01:01:21", "ip": "10.9.9.9", "hostname": "x;reboot"}}
    code, result = net.apply({"schema": 1, "kind": "batch", "commands": [good, bad, good]})
    assert code == 2 and not result["ok"]
    wheres = sorted(p["where"] for p in result["problems"])
    assert wheres == ["commands[1].data.hostname"], result["problems"]
    assert result["results"][1]["ok"] is False and result["results"][0]["error"] == "not applied"
    assert ruleset(net) == before and _files(net) == files_before


def test_the_resident_engine_applies_what_vr_cmd_hands_it(net):
    """vr-engine keeps the state in memory; it notices an apply made in another process, and when it is
    gone vr-cmd applies in its own process."""
    daemon = _start_engine(net)
    entry = {"mac": "02:00:0a:01:01:31", "ip": "10.1.1.31", "hostname": "vm31"}
    try:
        proc = net.engine("vr-cmd", "dhcp", "add", json.dumps(entry))
        assert proc.returncode == 0 and json.loads(proc.stdout)["resident"], proc.stdout
        assert "vm31" in net.engine("vr-state").stdout
        assert net.engine("vr-apply", "--reapply").returncode == 0  # in its own process: new snapshot files
        proc = net.engine("vr-cmd", "dhcp", "remove", json.dumps({"mac": entry["mac"]}))
        assert proc.returncode == 0 and json.loads(proc.stdout)["resident"], proc.stdout
        assert "vm31" not in net.engine("vr-state").stdout and "vm31" not in _files(net)["etc/vr/dhcp-hosts"]
        with socket.socket(socket.AF_UNIX) as conn:  # another engine version is refused, not applied
            conn.connect(str(net.root / "run/vr/engine.sock"))
            conn.sendall(json.dumps({"version": "0", "document": {}}).encode())
            conn.shutdown(socket.SHUT_WR)
            assert "refused" in json.loads(conn.recv(4096))
        with socket.socket(socket.AF_UNIX) as conn:  # a client that leaves before the answer
            conn.connect(str(net.root / "run/vr/engine.sock"))
            conn.sendall(json.dumps({"version": json.loads(proc.stdout)["version"], "document": {}}).encode())
        proc = net.engine("vr-cmd", "dhcp", "add", json.dumps(entry))
        assert proc.returncode == 0 and json.loads(proc.stdout)["resident"], proc.stdout  # still serving
        assert net.engine("vr-cmd", "dhcp", "remove", json.dumps({"mac": entry["mac"]})).returncode == 0
    finally:
        _kill(daemon)
    proc = net.engine("vr-cmd", "dhcp", "add", json.dumps(entry))
    assert proc.returncode == 0 and "resident" not in json.loads(proc.stdout), proc.stdout
    assert net.engine("vr-cmd", "dhcp", "remove", json.dumps({"mac": entry["mac"]})).returncode == 0


def test_leases_survive_a_dnsmasq_restart(net):
    state = sample_state(net, net.vm_list)
    state["interfaces"]["guests"][0]["domain"] = "other.internal"  # main config change: restart
    code, result = net.apply(state_document(state))
    assert code == 0 and result["actions"]["dnsmasq"] == "restarted", result
    leases = (net.root / "var/lib/misc/dnsmasq.leases").read_text()
    assert all(vm.mac in leases for vm in net.vm_list)
    assert net.dhcp(net.vm_list[0]).returncode == 0


def test_a_failure_after_the_swap_puts_the_previous_state_back(net):
    state = sample_state(net, net.vm_list)
    without_lb = copy.deepcopy(state)
    without_lb["load_balancer"] = []
    code, result = net.apply(state_document(without_lb))
    assert code == 0 and result["actions"].get("haproxy") == "stopped", result
    before, files_before = ruleset(net), _files(net)
    # Something else holds the port the new balancer wants: haproxy cannot start after nftables was swapped.
    serve(net.router, 8080, "squatter")
    wait_for(lambda: "8080" in run(["ss", "-ltn"], ns=net.router).stdout, "the squatter to listen")
    state["load_balancer"][0]["public_ip"], state["load_balancer"][0]["port"] = "203.0.113.12", 8080
    state["firewall"].append(
        {"direction": "ingress", "public_ip": "203.0.113.12", "protocol": "tcp", "ports": 8080, "cidrs": ["0.0.0.0/0"]}
    )
    code, result = net.apply(state_document(state))
    assert code == 1 and result["failed"]["subsystem"] == "haproxy", result
    assert result["sections"]["load_balancer"]["error"].startswith("haproxy activate failed")
    assert ruleset(net) == before
    assert _files(net) == files_before
    assert connect(net.public, "203.0.113.10", 2201) == "vm1 from 203.0.113.1"


def _start_engine(net):
    """vr-engine in the router's namespace, as its systemd unit runs it on a router; answering once it returns."""
    (net.root / "run/vr/engine.sock").unlink(missing_ok=True)
    env = ["env", f"VR_ROOT={net.root}", "VR_SERVICES=process"]
    argv = ["ip", "netns", "exec", net.router, *env, str(VR_SCRIPTS / "bin" / "vr-engine")]
    daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: (net.root / "run/vr/engine.sock").exists(), "the resident engine's socket")
    return daemon


def _kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _table(net):
    """The router's table as JSON, each set's elements sorted: the kernel lists them in insertion order."""
    listing = json.loads(run(["nft", "-j", "-s", "list", "table", "inet", "vr"], ns=net.router).stdout)["nftables"]
    for entry in listing:
        for kind in ("set", "map", "rule", "chain", "table"):
            body = entry.get(kind, {})
            body.pop("handle", None)
            if "elem" in body:
                body["elem"] = sorted(body["elem"], key=json.dumps)
    return listing


def _files(net):
    paths = [
        "etc/vr/nftables.nft",
        "etc/dnsmasq.d/vr.conf",
        "etc/vr/dhcp-hosts",
        "etc/haproxy/haproxy.cfg",
        "var/lib/vr/metadata.json",
        "var/lib/vr/state.json",
        "var/lib/vr/state.journal",
    ]
    return {p: (net.root / p).read_text() if (net.root / p).exists() else None for p in paths}


def _rendered(net):
    return {p: text for p, text in _files(net).items() if not p.startswith("var/lib/vr/state.")}


def test_user_data_limit_is_enforced_end_to_end(net):
    too_big = base64.b64encode(b"x" * (32 * 1024 + 1)).decode()
    command = {"op": "add", "type": "vm_data", "data": {"vm_ip": "10.1.1.5", "user_data": too_big}}
    code, result = net.apply({"schema": 1, "kind": "batch", "commands": [command]})
    assert code == 2 and result["problems"][0]["where"] == "commands[0].data.user_data"


def test_a_vm_using_another_vms_address_gets_no_metadata(net):
    """vm3 takes vm1's address while vm1 is away: the source address says vm1, the MAC says vm3."""
    vm1, _, vm3 = net.vm_list
    run(["ip", "link", "set", "eth0", "down"], ns=vm1.ns)
    try:
        run(["ip", "neigh", "flush", "dev", "eth1"], ns=net.router)
        run(["ip", "address", "add", f"{vm1.ip}/24", "dev", "eth0"], ns=vm3.ns)
        url = "http://10.1.1.1/latest/meta-data/instance-id"
        proc = run(
            ["curl", "-sS", "-m", "3", "--interface", vm1.ip, "-w", "\n%{http_code}", url], ns=vm3.ns, check=False
        )
        assert proc.stdout.rsplit("\n", 1)[-1] == "403", proc.stdout + proc.stderr
        assert "i-vm1" not in proc.stdout
    finally:
        run(["ip", "address", "del", f"{vm1.ip}/24", "dev", "eth0"], ns=vm3.ns, check=False)
        run(["ip", "link", "set", "eth0", "up"], ns=vm1.ns)


def test_undecodable_bytes_are_refused_alike_on_stdin_and_in_a_file(tmp_path):
    """Bytes that are not UTF-8 used to pass on stdin as lone surrogates, be persisted, and break the
    metadata service's reply; they are refused before anything is read, from stdin as from a file."""
    document = json.dumps(state_document({"vm_data": [{"vm_ip": "10.1.1.5", "password": "PW"}]})).encode()
    bad = document.replace(b"PW", b"p\xffw")
    (tmp_path / "bad.json").write_bytes(bad)
    env = {**os.environ, "VR_ROOT": str(tmp_path / "root"), "VR_SERVICES": "process"}
    vr_apply = str(VR_SCRIPTS / "bin" / "vr-apply")
    results = []
    for argv, stdin in (([vr_apply, "-"], bad), ([vr_apply, str(tmp_path / "bad.json")], None)):
        proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60, check=False)
        assert proc.returncode == 2, proc.stdout
        problem = json.loads(proc.stdout)["problems"][0]
        assert problem["where"] == "document" and "can't decode byte 0xff" in problem["error"]
        results.append(problem["error"].split(": ", 1)[1])
    assert results[0] == results[1]
    assert not (tmp_path / "root/var/lib/vr/state.json").exists()


def test_a_zombie_service_counts_as_down(tmp_path):
    """A killed daemon whose parent has not reaped it yet still answers `kill -0`; in process mode it
    used to be reported running (and not restarted) while it was down."""
    layout = Layout(tmp_path)
    daemon = subprocess.Popen(["sleep", "60"])
    layout.pid_file("vr-metadata").parent.mkdir(parents=True)
    layout.pid_file("vr-metadata").write_text(f"{daemon.pid}\n")
    services = ProcessServices(layout)
    assert services.is_active("vr-metadata")
    daemon.kill()
    wait_for(lambda: Path(f"/proc/{daemon.pid}/stat").read_text().split(") ")[1][0] == "Z", "a zombie")
    try:
        assert not services.is_active("vr-metadata")
    finally:
        daemon.wait()


@pytest.mark.slow
def test_the_last_of_10000_vms_gets_dhcp_dns_metadata_and_its_port_forward(tmp_path):
    """A router holding 10,000 VMs of state serves the last of them like the first."""
    last = 9999
    (tmp_path / "root").mkdir()
    with Namespaces("vrk") as namespaces:
        big = make_router_net(namespaces, tmp_path / "root")
        code, result = big.apply(state_document(fleet_state(last + 1)))
        assert code == 0, result
        vm = big.add_vm("vmlast", vm_mac(last), vm_address(last))
        serve(vm.ns, 22, "vm-last")
        assert big.dhcp(vm).returncode == 0 and address_of(vm) == [vm.ip]
        gateway = str(GUEST_NETWORK.network_address + 1)
        proc = run(["python3", "-c", DNS_QUERY, gateway, f"vm{last}.cloud.internal"], ns=vm.ns, check=False)
        assert proc.stdout.strip() == vm.ip, proc.stderr
        assert http_get(vm.ns, f"http://{gateway}/latest/meta-data/instance-id") == (200, f"i-{last:06d}")
        # The fleet's rules admit each VM's forward from its own 198.51.x.0/24 only: let the outside in.
        rule = {"direction": "ingress", "public_ip": PUBLIC_IP, "protocol": "tcp", "ports": 20000 + last}
        command = {"op": "add", "type": "firewall", "data": {**rule, "cidrs": ["203.0.113.1/32"]}}
        code, result = big.apply({"schema": 1, "kind": "batch", "commands": [command]})
        assert code == 0 and result["actions"] == {"nftables": "updated"}, result
        assert connect(big.public, PUBLIC_IP, 20000 + last) == "vm-last from 203.0.113.1"
