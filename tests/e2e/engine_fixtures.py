"""Fixtures for the engine's end-to-end tests: a router namespace running the engine with real services,
VM namespaces that take their address from dnsmasq with a real DHCP client and run small TCP servers,
and a public namespace that plays the outside world.
"""

import json
import sys
import time
from pathlib import Path

import pytest

from orchestration.lab.netlab import SAMPLE_VMS, USER_DATA, make_router_net, sample_state  # noqa: F401 - re-exported
from orchestration.lab.netns import Namespaces
from vrpipe.run import run

HERE = Path(__file__).parent


def wait_for(check, what, timeout=20.0):
    """Poll `check` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


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
    return run(["nft", "-s", "list", "table", "inet", "vr"], ns=net.router).stdout  # -s: counters aside


def state_document(state):
    return {"schema": 1, "kind": "state", "state": state}


@pytest.fixture(scope="module")
def router_net(tmp_path_factory):
    """One router with three VMs (no addresses yet) and a public namespace; removed after the module."""
    with Namespaces() as namespaces:
        root = tmp_path_factory.mktemp("router")
        root.chmod(0o755)
        net = make_router_net(namespaces, root)
        net.vm_list = [net.add_vm(*vm) for vm in SAMPLE_VMS]
        yield net
