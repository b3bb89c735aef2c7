"""Site-to-site IPsec between two lab routers (system containers, so strongSwan's kernel-libipsec: ESP in
UDP through a TUN device): a VM at site A reaches a VM at site B by its private address, and only
ESP-in-UDP crosses the public bridge; a wrong key shows in the health report; a restart re-establishes
the tunnel from the full replay; removing the tunnel stops the traffic. Tests run in file order.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.commands import BadCommand, Command, Query
from orchestration.lab.lab import PUBLIC_BRIDGE
from orchestration.lab.vpn_lab import SITES, add_site, gateway_data, site_commands, vm_ip
from vrpipe.run import run

from .engine_fixtures import connect, serve, wait_for
from .orch_fixtures import orch_lab  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
MARKER = "VPN-PLAINTEXT-MARKER"


@pytest.fixture(scope="module")
def sites(orch_lab):  # noqa: F811
    manager, lab = orch_lab
    vms = {}
    for name in SITES:
        vms[name] = add_site(manager, lab, name)
        serve(vms[name].ns, 7000, f"{MARKER}-{name}")
    return manager, lab, vms


def apply(manager, name, commands):
    outcome = manager.apply(name, commands)
    assert outcome.ok, outcome.error
    return outcome


def tunnel_check(manager, name):
    health = manager.query(name, Query.HEALTH)
    return next((c for c in health["checks"] if c["name"].startswith("vpn ")), None)


def vm_a_reaches_vm_b(vms, timeout=2):
    return connect(vms["r1"].ns, vm_ip("r2"), 7000, timeout=timeout)


def test_a_vm_at_site_a_reaches_a_vm_at_site_b_by_its_private_address(sites):
    manager, _, vms = sites
    apply(manager, "r1", site_commands("r1"))
    apply(manager, "r2", site_commands("r2"))
    wait_for(lambda: (tunnel_check(manager, "r1") or {}).get("status") == "ok", "the tunnel up", timeout=60)
    answer = wait_for(lambda: vm_a_reaches_vm_b(vms), "VM B through the tunnel", timeout=30)
    # the private source address arrives: no source NAT for traffic that enters the tunnel
    assert answer == f"{MARKER}-r2 from {vm_ip('r1')}"
    assert tunnel_check(manager, "r2")["status"] == "ok"


def test_only_esp_in_udp_crosses_the_public_bridge(sites, tmp_path):
    manager, _, vms = sites
    frames_file, host = tmp_path / "frames", manager.config.host_netns
    ports = [
        line.split(":")[1].strip().split("@")[0]
        for line in run(["ip", "-o", "link", "show", "master", PUBLIC_BRIDGE], ns=host).stdout.splitlines()
    ]
    argv = [sys.executable, str(HERE / "frame_capture.py"), "6", str(frames_file), *ports]
    capture = subprocess.Popen(["ip", "netns", "exec", host, *argv], stdout=subprocess.PIPE)
    assert capture.stdout.readline().strip() == b"ready"
    for _ in range(5):
        assert vm_a_reaches_vm_b(vms).startswith(MARKER)
    capture.wait(timeout=30)
    frames = [bytes.fromhex(line) for line in frames_file.read_text().split()]
    nat_t = [f for f in frames if _udp_ports(f) == (4500, 4500)]
    assert len(nat_t) >= 10, f"{len(frames)} frames, {len(nat_t)} ESP in UDP"
    assert not [f for f in frames if MARKER.encode() in f], "plaintext crossed the public bridge"
    tcp = [f for f in frames if len(f) > 23 and f[12:14] == b"\x08\x00" and f[23] == 6]
    assert not tcp, "a TCP packet of the VMs crossed the bridge outside the tunnel"


def _udp_ports(frame):
    """(source, destination) UDP ports of an IPv4 frame, or None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    start = 14 + (frame[14] & 0x0F) * 4
    return int.from_bytes(frame[start : start + 2], "big"), int.from_bytes(frame[start + 2 : start + 4], "big")


def test_a_wrong_key_fails_with_a_clear_status_in_health(sites):
    manager, _, vms = sites
    apply(manager, "r2", [Command("add", "vpn_gateways", gateway_data("r2", psk="not-the-same-secret-key"))])
    seen = []

    def reported_failed():
        seen.append(tunnel_check(manager, "r2"))
        return seen[-1]["status"] == "fail" and "authentication failed" in seen[-1]["message"]

    try:
        wait_for(reported_failed, "r2's tunnel reported down with the reason", timeout=60)
    except AssertionError:
        journal = _router(manager, "r2", "journalctl", "-u", "strongswan", "-n", "40", "--no-pager")
        raise AssertionError(f"last seen: {seen[-1]}; r2's charon: {journal}") from None
    assert vm_a_reaches_vm_b(vms, timeout=1) == ""
    health = manager.query("r2", Query.HEALTH)
    assert not health["ok"] and any("vpn to-r1" in p for p in health["problems"]), health
    apply(manager, "r2", [Command("add", "vpn_gateways", gateway_data("r2"))])
    wait_for(lambda: vm_a_reaches_vm_b(vms, timeout=1), "the tunnel with the right key again", timeout=60)


def test_bad_vpn_input_is_refused_naming_the_field_and_nothing_changes(sites):
    manager, _, vms = sites
    before = manager.store.state("r1")
    bad = [
        ({**gateway_data("r1"), "remote_cidrs": ["10.1.1.0/25"]}, "remote_cidrs"),
        ({**gateway_data("r1"), "ike_proposals": ["aes256-sha999-modp2048"]}, "ike_proposals"),
        ({**gateway_data("r1"), "psk": "too-short"}, "psk"),
    ]
    for data, field in bad:
        with pytest.raises(BadCommand, match=field):
            manager.apply("r1", [Command("add", "vpn_gateways", data)])
    users = [{"name": "alice", "password": "password-1"}, {"name": "alice", "password": "password-2"}]
    state = {**before, "vpn_users": users}
    problems = _engine_refuses(manager, "r1", state)
    assert "vpn_users[1]" in problems and "duplicate" in problems, problems
    assert manager.store.state("r1") == before
    assert vm_a_reaches_vm_b(vms).startswith(MARKER)


def _router(manager, name, *argv):
    router = manager.store.router(name)
    return manager.deployer(router).execute(router, list(argv))[1]


def _engine_refuses(manager, name, state):
    """vr-apply on the router itself with a whole state: exit 2 and its problems."""
    router = manager.store.router(name)
    deployer = manager.deployer(router)
    document = {"schema": 1, "kind": "state", "state": state}
    status, out = deployer.execute(router, ["/opt/vr/bin/vr-apply", "-"], input=json.dumps(document))
    assert status == 2, out
    return out


def test_a_router_restart_re_establishes_the_tunnel_from_the_full_replay(sites):
    manager, _, vms = sites
    manager.stop("r1")
    assert vm_a_reaches_vm_b(vms, timeout=1) == ""
    started = time.monotonic()
    assert manager.start("r1").ok
    wait_for(lambda: vm_a_reaches_vm_b(vms, timeout=1), "the tunnel after the restart", timeout=90)
    print(f"tunnel back {time.monotonic() - started:.1f}s after the start")


def test_removing_the_tunnel_stops_the_traffic(sites):
    manager, _, vms = sites
    outcome = manager.apply("r1", [Command("remove", "vpn_gateways", {"name": "to-r2"})], aggregate=False)
    assert outcome[0].ok, outcome[0].error
    assert vm_a_reaches_vm_b(vms, timeout=2) == ""
    assert not manager.store.state("r1").get("vpn_gateways")
