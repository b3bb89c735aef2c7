"""Fixtures for the engine's end-to-end tests: a router namespace running the engine with real services,
VM namespaces that take their address from dnsmasq with a real DHCP client and run small TCP servers,
and a public namespace that plays the outside world.
"""

import json
import sys
import time
from pathlib import Path

import pytest

from orchestration.netlab import make_router_net
from orchestration.netns import Namespaces, run

HERE = Path(__file__).parent
VM1 = ("vm1", "02:00:0a:01:01:05", "10.1.1.5")
VM2 = ("vm2", "02:00:0a:01:01:06", "10.1.1.6")
VM3 = ("vm3", "02:00:0a:01:01:07", "10.1.1.7")
USER_DATA = "#cloud-config\nhostname: vm1\n"


def wait_for(check, what, timeout=20.0):
    """Poll `check` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def dhcp(vm):
    """Run a real DHCP client in the VM's namespace; it configures the address dnsmasq hands out."""
    leases = f"/tmp/{vm.ns}.leases"
    argv = ["dhclient", "-1", "-4", "-sf", str(HERE / "dhclient-script"), "-lf", leases, "-pf", f"/tmp/{vm.ns}.pid"]
    return run([*argv, "eth0"], ns=vm.ns, check=False, timeout=60)


def address_of(vm):
    out = run(["ip", "-j", "-4", "address", "show", "dev", "eth0"], ns=vm.ns).stdout
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]


def set_address(vm):
    run(["ip", "address", "replace", f"{vm.ip}/24", "dev", "eth0"], ns=vm.ns)
    run(["ip", "route", "replace", "default", "via", "10.1.1.1"], ns=vm.ns)


def serve(ns, port, answer):
    """A TCP server in `ns` that answers every connection with `answer` (it dies with the namespace)."""
    argv = ["ip", "netns", "exec", ns, sys.executable, str(HERE / "tcp_answer.py"), str(port), answer]
    import subprocess

    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def connect(ns, host, port, timeout=3):
    """What a TCP connection from `ns` to host:port receives; empty when refused, dropped or timed out."""
    argv = [sys.executable, str(HERE / "tcp_answer.py"), "--connect", host, str(port), str(timeout)]
    return run(argv, ns=ns, check=False, timeout=timeout + 10).stdout.strip()


def http_get(ns, url, timeout=3):
    proc = run(["curl", "-sS", "-m", str(timeout), "-w", "\n%{http_code}", url], ns=ns, check=False)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


def ruleset(net):
    return run(["nft", "list", "table", "inet", "vr"], ns=net.router).stdout


def sample_state(net, vms):
    """A state with DHCP, metadata, firewall, port forwarding, static NAT, source NAT and a load balancer."""
    import base64

    vm1, vm2, vm3 = vms
    any_source = ["0.0.0.0/0"]
    return {
        "interfaces": net.interfaces(),
        "egress_policy": {"default": "deny"},
        "source_nat": [{"guest_cidr": "10.1.1.0/24", "public_ip": "203.0.113.10"}],
        "firewall": [
            {
                "direction": "ingress",
                "public_ip": "203.0.113.10",
                "protocol": "tcp",
                "ports": "2201-2202",
                "cidrs": any_source,
            },
            {"direction": "ingress", "public_ip": "203.0.113.10", "protocol": "tcp", "ports": 80, "cidrs": any_source},
            {
                "direction": "ingress",
                "public_ip": "203.0.113.11",
                "protocol": "tcp",
                "ports": 7000,
                "cidrs": any_source,
            },
            {"direction": "egress", "protocol": "tcp", "ports": 9000, "cidrs": ["203.0.113.0/24"]},
            {"direction": "egress", "protocol": "icmp", "cidrs": ["203.0.113.1/32"]},
        ],
        "port_forwarding": [
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2201", "vm_ip": vm1.ip, "vm_ports": 7000},
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2202", "vm_ip": vm2.ip, "vm_ports": 7000},
            {"public_ip": "203.0.113.10", "protocol": "tcp", "public_ports": "2203", "vm_ip": vm2.ip, "vm_ports": 7000},
        ],
        "static_nat": [{"public_ip": "203.0.113.11", "vm_ip": vm3.ip}],
        "load_balancer": [
            {
                "name": "web",
                "public_ip": "203.0.113.10",
                "port": 80,
                "backends": [{"ip": vm1.ip, "port": 7000}, {"ip": vm2.ip, "port": 7000}],
                "health_check": {"interval_ms": 500},
            }
        ],
        "dhcp": [{"mac": vm.mac, "ip": vm.ip, "hostname": vm.name} for vm in vms],
        "vm_data": [
            {
                "vm_ip": vm1.ip,
                "metadata": {"instance-id": "i-vm1", "local-hostname": "vm1", "availability-zone": "zone1"},
                "public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample vm1@test"],
                "user_data": base64.b64encode(USER_DATA.encode()).decode(),
                "password": "pw-of-vm1",
            },
            {"vm_ip": vm2.ip, "metadata": {"instance-id": "i-vm2"}},
        ],
    }


def state_document(state):
    return {"schema": 1, "kind": "state", "state": state}


@pytest.fixture(scope="module")
def router_net(tmp_path_factory):
    """One router with three VMs (no addresses yet) and a public namespace; removed after the module."""
    with Namespaces() as namespaces:
        root = tmp_path_factory.mktemp("router")
        root.chmod(0o755)
        net = make_router_net(namespaces, root)
        net.vm_list = [net.add_vm(*vm) for vm in (VM1, VM2, VM3)]
        yield net
