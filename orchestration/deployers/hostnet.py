"""The network of the host that plays the hypervisor: a namespace holding one bridge per network, the
control bridge with the link-local gateway address, and the host ends of routers' NICs (veth pairs for
containers, tap devices for VMs). NIC MAC addresses are fixed per router and NIC, as a hypervisor's are.
"""

import contextlib
import os
import signal
import time

from orchestration.deployers.base import CONTROL_PREFIX
from orchestration.store import Router
from vrpipe.run import run

CONTROL_BRIDGE, CONTROL_GATEWAY = "vrctl", "169.254.0.1"


def control_address(router_id: int) -> str:
    """Link-local control addresses by router id: 169.254.1.2 onwards (169.254.0.0/24 is the host's)."""
    if not 1 <= router_id <= 250 * 254:
        raise ValueError(f"router id {router_id} has no control address")
    return f"169.254.{(router_id - 1) // 250 + 1}.{(router_id - 1) % 250 + 2}"


def nic_mac(router: Router, index: int) -> str:
    """The MAC of a router's NIC number `index` (0 is eth0): locally administered, stable across restarts."""
    return f"0a:00:{router.id >> 8 & 255:02x}:{router.id & 255:02x}:00:{index:02x}"


def ensure_host(host_ns: str | None) -> None:
    """The host namespace (None: this host's own network) with the control bridge and its gateway address
    (idempotent)."""
    if host_ns is not None and host_ns not in run(["ip", "netns", "list"]).stdout.split():
        run(["ip", "netns", "add", host_ns])
        run(["ip", "link", "set", "lo", "up"], ns=host_ns)
    if ensure_bridge(host_ns, CONTROL_BRIDGE):
        run(["ip", "address", "add", f"{CONTROL_GATEWAY}/{CONTROL_PREFIX}", "dev", CONTROL_BRIDGE], ns=host_ns)


def ensure_bridge(host_ns: str | None, bridge: str) -> bool:
    """Create the bridge in the host namespace unless it exists; True if it was created."""
    if run(["ip", "link", "show", bridge], ns=host_ns, check=False).returncode == 0:
        return False
    run(["ip", "link", "add", bridge, "type", "bridge"], ns=host_ns)
    run(["ip", "link", "set", bridge, "up"], ns=host_ns)
    return True


def plug(host_ns: str | None, bridge: str, host_end: str, ns: str, device: str, mac: str | None = None) -> None:
    """A veth pair: `device` (with `mac` if given) in namespace `ns`, `host_end` in the host's `bridge`."""
    ensure_bridge(host_ns, bridge)
    # The kernel frees a deleted namespace's veth pairs in the background: a router destroyed a moment ago
    # (recreate) may still have its host end here, under the name that is the router's own.
    remove_link(host_ns, host_end)
    into_host = ["netns", host_ns] if host_ns is not None else []
    argv = ["ip", "link", "add", host_end, *into_host, "type", "veth", "peer", "name", device]
    run([*argv, *(["address", mac] if mac else []), "netns", ns])
    run(["ip", "link", "set", host_end, "master", bridge, "up"], ns=host_ns)
    run(["ip", "link", "set", device, "up"], ns=ns)


def tap(host_ns: str | None, bridge: str, name: str) -> None:
    """A tap device in the host's `bridge`, for a VM's NIC."""
    ensure_bridge(host_ns, bridge)
    run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], ns=host_ns)
    run(["ip", "link", "set", name, "master", bridge, "up"], ns=host_ns)


def remove_link(host_ns: str | None, name: str) -> None:
    run(["ip", "link", "del", name], ns=host_ns, check=False)


def kill_processes_in(ns: str, timeout: float = 5.0) -> None:
    """Stop every process whose network namespace is `ns` (listed by pid with `ip netns pids`)."""
    pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.02)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone once reaped.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True
