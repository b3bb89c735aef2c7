"""vr-vrrp: what a member of a redundant pair does when keepalived changes its role. Becoming MASTER it
commits conntrackd's external cache (the peer's flows) into the kernel before it takes the guest gateways
and public addresses, then announces them by gratuitous ARP; becoming BACKUP it gives them up first.
"""

import argparse
import contextlib
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

from .interfaces import live_addresses
from .layout import Layout
from .redundancy import BACKUP, MASTER, role, role_locked
from .run import CommandFailed, run

Address = tuple[str, ipaddress.IPv4Interface]
ROLE_EVENTS = (MASTER, BACKUP, "FAULT", "STOP")
GARP_ROUNDS = 3  # a neighbour that misses one announcement takes the next
GARP_GAP = 0.2  # seconds between rounds


def _moving(layout: Layout) -> list[Address]:
    try:
        pairs = json.loads(layout.vrrp_addresses.read_text())["addresses"]
    except FileNotFoundError:
        return []  # no pair (any more): nothing moves
    return [(device, ipaddress.IPv4Interface(address)) for device, address in pairs]


def _conntrackd(layout: Layout, *args: str) -> None:
    run(["conntrackd", "-C", str(layout.conntrackd_conf), *args], timeout=10)


def take(layout: Layout) -> None:
    """Become MASTER: flows first, addresses second, so no packet of a synced flow meets an empty table."""
    with role_locked(layout):
        layout.vrrp_state.write_text(f"{MASTER}\n")
        with contextlib.suppress(CommandFailed):  # conntrackd down: serve anyway, new flows still work
            _conntrackd(layout, "-c")
        addresses = _moving(layout)
        lines = [f"address replace {address} dev {device}" for device, address in addresses]
        if lines:
            run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
        announce(addresses)
        with contextlib.suppress(CommandFailed):
            # Start this member's own cache afresh from the kernel's table and send it to the peer.
            _conntrackd(layout, "-f", "internal")
            _conntrackd(layout, "-R")
            _conntrackd(layout, "-B")


def release(layout: Layout) -> None:
    """Become BACKUP (or stop): give the addresses up at once, then follow the new MASTER's table."""
    with role_locked(layout):
        layout.vrrp_state.write_text(f"{BACKUP}\n")
        held = [pair for pair in _moving(layout) if pair in live_addresses()]
        lines = [f"address del {address} dev {device}" for device, address in held]
        if lines:
            run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
        with contextlib.suppress(CommandFailed):  # conntrackd stopping too (shutdown): nothing to follow
            _conntrackd(layout, "-t")
            _conntrackd(layout, "-n")


def announce(addresses: list[Address]) -> None:
    """Gratuitous ARP for each address on its device, so that neighbours replace the old MASTER's MAC."""
    for round_ in range(GARP_ROUNDS):
        if round_:
            time.sleep(GARP_GAP)
        for device, address in addresses:
            with contextlib.suppress(OSError):  # a device gone meanwhile: the next apply sorts it out
                send_garp(device, address.ip)


def garp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """An Ethernet broadcast ARP request for `ip` from `ip` itself (RFC 5227's announcement)."""
    ethernet = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip.packed + b"\x00" * 6 + ip.packed
    return ethernet + arp


def send_garp(device: str, ip: ipaddress.IPv4Address) -> None:
    mac = bytes.fromhex(Path(f"/sys/class/net/{device}/address").read_text().strip().replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((device, 0))
        sock.send(garp_frame(mac, ip))


def follow(layout: Layout, fifo: str) -> int:
    """keepalived's notify FIFO: one event per line, in order (`INSTANCE "vr" MASTER 200`). A failed
    event is reported and the next one still handled: this reader ending would end every failover.
    Opened for writing too, so that it never reads an end of file between keepalived's writes; it ends
    with keepalived's unit (whose ExecStopPost releases)."""
    with os.fdopen(os.open(fifo, os.O_RDWR), "r") as events:
        for line in events:
            words = line.split()
            # Other events (MASTER_RX_LOWER_PRI: a MASTER heard a lower priority) change no role.
            if len(words) < 3 or words[0] != "INSTANCE" or words[2] not in ROLE_EVENTS:
                continue
            try:
                take(layout) if words[2] == MASTER else release(layout)
            except Exception as error:  # noqa: BLE001 - any failure: say it (the journal), keep reading
                print(f"vr-vrrp: {words[2]} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    return 0


def set_handover(layout: Layout, on: bool) -> None:
    """Give mastership away (keepalived goes to FAULT and the peer takes over) or be eligible again."""
    layout.vrrp_handover.parent.mkdir(parents=True, exist_ok=True)
    layout.vrrp_handover.write_text("1\n" if on else "0\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vr-vrrp", description="Move a redundant pair's addresses (keepalived).")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("fifo", help="read keepalived's notify FIFO (keepalived starts this)").add_argument("path")
    sub.add_parser("release", help="give the virtual addresses up (keepalived stopped)")
    sub.add_parser("status", help="print this member's role as JSON")
    sub.add_parser("handover", help="give mastership to the peer (until resume)")
    sub.add_parser("resume", help="be eligible for mastership again")
    args = parser.parse_args(argv)
    os.environ.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")  # keepalived starts us with none
    layout = Layout.from_env()
    if args.action == "fifo":
        return follow(layout, args.path)
    if args.action == "release":
        release(layout)
    elif args.action in ("handover", "resume"):
        set_handover(layout, args.action == "handover")
    json.dump({"ok": True, "role": role(layout)}, sys.stdout)
    sys.stdout.write("\n")
    return 0
