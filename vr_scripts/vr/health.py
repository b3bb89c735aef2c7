"""The router's health report (vr-health): named checks, each "ok", "warn" or "fail" with a message, of
what an operator needs to trust the router. "ok" is the verdict: no check failed (a warning is worth
knowing but the router still forwards and answers). vr-metrics exports the same checks.
"""

import http.client
import json
import os
import random
import shutil
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, contract, dnsmasq, haproxy, metadata, nftables, redundancy, vpn
from .layout import Layout
from .model import SECTIONS, RouterState
from .run import CommandFailed, run
from .services import Services

OK, WARN, FAIL = "ok", "warn", "fail"
PROBE_TIMEOUT = 2.0  # seconds one probe of a service may take
DISK_FAIL, DISK_WARN = 0.05, 0.15  # free fraction of the filesystem holding the state
MEMORY_FAIL, MEMORY_WARN = 0.03, 0.10  # available fraction of memory
REBOOT_REQUIRED = "run/reboot-required"  # written by Debian's update hooks (kernel, libc)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    message: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


class Memo:
    """What a resident process (vr-engine) keeps from one report to the next: each tool's version while
    its binary stays the same file, and the element counts of the state while it is the same object
    (rendering it loads Jinja2 and the templates: most of a report's cost in a process of its own)."""

    def __init__(self) -> None:
        self.versions: tuple[tuple[tuple[int, int] | None, ...], dict[str, str | None]] | None = None
        self.counts: tuple[RouterState, dict[str, int]] | None = None

    def tool_versions(self) -> dict[str, str | None]:
        files = tuple(_file_id(argv[0]) for _, argv in TOOLS)
        if self.versions is None or self.versions[0] != files:
            self.versions = (files, tool_versions())
        return self.versions[1]

    def expected_counts(self, state: RouterState, layout: Layout) -> dict[str, int]:
        if self.counts is None or self.counts[0] is not state:
            self.counts = (state, expected_counts(state, layout))
        return self.counts[1]


def report(layout: Layout, services: Services, state: RouterState, memo: Memo | None = None) -> dict[str, Any]:
    memo = memo or Memo()
    live = live_counts()
    running = running_services(services, state)
    checks = run_checks(layout, running, state, live, memo)
    failed = [c for c in checks if c.status == FAIL]
    return {
        "ok": not failed,
        "problems": [f"{c.name}: {c.message}" for c in failed],
        "warnings": [f"{c.name}: {c.message}" for c in checks if c.status == WARN],
        "checks": [c.to_json() for c in checks],
        "version": __version__,
        "versions": memo.tool_versions(),
        "services": {name: "active" if up else "inactive" for name, up in running.items()},
        "state": {name: len(getattr(state, name)) for name, s in SECTIONS.items() if s.key_fields},
        "nftables": live or {},
        "vrrp": redundancy.role(layout) if state.redundancy else None,
    }


def live_counts() -> dict[str, int] | None:
    """Elements per set and map of the loaded table, or None when the table is not loaded."""
    try:
        return nftables.counts()
    except CommandFailed:
        return None


def needed_services(state: RouterState) -> dict[str, bool]:
    """The services this state needs running: none on a router without guests or load balancers."""
    guests, pair = bool(state.interfaces.guests), state.redundancy is not None
    needed = {dnsmasq.SERVICE: guests, metadata.SERVICE: guests, haproxy.SERVICE: bool(state.load_balancer)}
    needed |= dict.fromkeys(redundancy.SERVICES if pair else (), True)
    return {**needed, vpn.SERVICE: True} if vpn.needed(state) else needed  # strongswan: only on a VPN router


def running_services(services: Services, state: RouterState) -> dict[str, bool]:
    """Whether each service a router can need is active (one systemctl run per report)."""
    return services.active(list(needed_services(state)))


def run_checks(
    layout: Layout,
    running: Mapping[str, bool],
    state: RouterState,
    live: Mapping[str, int] | None,
    memo: Memo,
) -> list[Check]:
    checks = [service_check(name, running[name]) for name, needed in needed_services(state).items() if needed]
    down = {c.name for c in checks if c.status != OK}
    if not redundancy.holds_virtual_addresses(state, layout):
        # A BACKUP holds none of the addresses its services answer on: probing them would fail.
        down |= {dnsmasq.SERVICE, metadata.SERVICE, haproxy.SERVICE}
    if state.interfaces.guests and dnsmasq.SERVICE not in down:
        checks.append(dns_check(state))
    if state.interfaces.guests and metadata.SERVICE not in down:
        checks.append(metadata_check(layout))
    if state.load_balancer and haproxy.SERVICE not in down:
        checks.append(haproxy_check(layout))
    if state.vpn_gateways and vpn.SERVICE not in down:
        checks += [Check(f"vpn {name}", status, message) for name, status, message in vpn.tunnel_status(layout, state)]
    checks += [
        nftables_check(layout, state, live, memo),
        last_apply_check(layout),
        disk_check(layout),
        memory_check(),
        code_check(),
        reboot_check(layout),
    ]
    return checks


def service_check(name: str, up: bool) -> Check:
    return Check(name, OK if up else FAIL, "active" if up else "not running")


def dns_check(state: RouterState) -> Check:
    """dnsmasq answers on the first guest gateway: with the address of a known DHCP entry, or (on a
    network without VMs) with any answer at all, even "no such name"."""
    server = str(state.interfaces.guests[0].gateway.ip)
    entry = state.dhcp[0] if state.dhcp else None
    name = entry.hostname if entry else "vr-health.invalid"
    try:
        addresses = dns_query(server, name)
    except OSError as err:
        return Check("dns", FAIL, f"no answer from {server}:53 ({err})")
    if entry is None:
        return Check("dns", OK, f"{server}:53 answers")
    if str(entry.ip) not in addresses:
        return Check("dns", FAIL, f"{server}:53 answers {name} with {addresses or 'nothing'}, not {entry.ip}")
    return Check("dns", OK, f"{server}:53 answers {name} with {entry.ip}")


def dns_query(server: str, name: str, timeout: float = PROBE_TIMEOUT) -> list[str]:
    """The IPv4 addresses of an A query for name; OSError when no answer comes (a reply that is not
    NOERROR is an answer with no address)."""
    query_id = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(packet)
        while True:
            reply = sock.recv(4096)
            if reply[:2] == packet[:2]:
                return parse_addresses(reply, len(packet))


def parse_addresses(reply: bytes, answers_at: int) -> list[str]:
    """The A records of a DNS reply to our one question (its answers start at answers_at: the reply
    repeats the question first; dnsmasq compresses answer names to a 2-byte pointer)."""
    found: list[str]
    count, offset, found = struct.unpack("!H", reply[6:8])[0], answers_at, []
    for _ in range(count):
        offset = _skip_name(reply, offset)
        kind, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += length
    return found


def _skip_name(data: bytes, offset: int) -> int:
    while data[offset]:
        if data[offset] & 0xC0 == 0xC0:
            return offset + 2
        offset += data[offset] + 1
    return offset + 1


def metadata_check(layout: Layout) -> Check:
    """The metadata service answers HTTP on its first address (any status: it answers by source address)."""
    listen = json.loads(layout.metadata.read_text())["listen"] if layout.metadata.exists() else []
    if not listen:
        return Check("metadata-http", OK, "no guest address to serve")
    url = f"http://{listen[0]}/latest/meta-data/"
    # http.client rather than urllib.request, which imports much more, in a command run every 10 s
    connection = http.client.HTTPConnection(listen[0], 80, timeout=PROBE_TIMEOUT)
    try:
        connection.request("GET", "/latest/meta-data/")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as err:
        return Check("metadata-http", FAIL, f"no answer from {url} ({err or type(err).__name__})")
    finally:
        connection.close()
    return Check("metadata-http", OK, f"{url} answers {status}")


def haproxy_check(layout: Layout) -> Check:
    """haproxy's stats socket answers; the message gives each backend's state (a backend whose VMs are
    down is the VMs' problem, not the router's, so it does not fail the check)."""
    try:
        rows = haproxy_stats(layout)
    except OSError as err:
        return Check("haproxy-stats", FAIL, f"the stats socket does not answer ({err})")
    backends = [f"{r['pxname']} {r['status']}" for r in rows if r.get("svname") == "BACKEND"]
    return Check("haproxy-stats", OK, ", ".join(backends) or "no backends")


def haproxy_stats(layout: Layout) -> list[dict[str, str]]:
    """`show stat` from haproxy's stats socket, one dict per proxy and server (haproxy's CSV columns)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        sock.connect(str(layout.haproxy_socket))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    lines = b"".join(chunks).decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise OSError(f"unexpected answer {lines[:1]}")
    header = lines[0][2:].split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]


def nftables_check(layout: Layout, state: RouterState, live: Mapping[str, int] | None, memo: Memo) -> Check:
    """The router's table is loaded and each set and map holds as many elements as the persisted state
    renders to (a flushed ruleset or a hand-edited set shows here)."""
    if not layout.state.exists():
        return Check("nftables", OK, "no state applied yet")
    if live is None:
        return Check("nftables", FAIL, "the router's table is not loaded")
    expected = memo.expected_counts(state, layout)
    wrong = [f"{n} holds {live.get(n, 'nothing')}, not {c}" for n, c in sorted(expected.items()) if live.get(n) != c]
    if wrong:
        return Check("nftables", FAIL, "differs from the state: " + "; ".join(wrong[:3]))
    return Check("nftables", OK, f"{len(expected)} sets and maps as the state says")


def expected_counts(state: RouterState, layout: Layout) -> dict[str, int]:
    """Elements per set and map of the table this state renders to."""
    (text,) = nftables.render(state, layout).values()
    _, elements = nftables._elements(text)  # the parser of the files nftables.py renders
    return {name: len(items) for name, items in elements.items()}


def last_apply(layout: Layout) -> tuple[float, dict[str, Any]] | None:
    """The last line of the apply log: (its time as a Unix timestamp, its JSON summary), or None."""
    try:
        with open(layout.log, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 65536))
            lines = log.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        parsed = apply_line(line)
        if parsed is not None:
            return parsed
    return None


def apply_line(line: str) -> tuple[float, dict[str, Any]] | None:
    """(timestamp, summary) of one apply log line ("2026-12-01 13:00:00,123 {json}"), or None."""
    stamp, _, text = line.partition(",")
    try:
        when = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
        return when + int(text[:3]) / 1000, json.loads(text[3:].strip())
    except (ValueError, json.JSONDecodeError):
        return None


def last_apply_check(layout: Layout) -> Check:
    """A failed apply left the previous state in force: worth a warning, not a broken router."""
    found = last_apply(layout)
    if found is None:
        return Check("last-apply", OK, "no apply yet")
    when, summary = found
    age = f"{max(0, time.time() - when):.0f}s ago"
    kind = summary.get("kind", "apply")
    if summary.get("ok"):
        return Check("last-apply", OK, f"{kind} applied {age}")
    reason = summary.get("error") or (summary.get("failed") or {}).get("error") or "failed"
    return Check("last-apply", WARN, f"{kind} {age} was refused: {reason}")


def headroom_status(free: float, fail_below: float, warn_below: float) -> str:
    return FAIL if free < fail_below else WARN if free < warn_below else OK


def disk_check(layout: Layout) -> Check:
    path = layout.state.parent if layout.state.parent.exists() else layout.root
    stat = os.statvfs(path)
    free = stat.f_bavail / stat.f_blocks if stat.f_blocks else 1.0
    status = headroom_status(free, DISK_FAIL, DISK_WARN)
    return Check("disk", status, f"{free:.0%} free on {path} ({stat.f_bavail * stat.f_frsize >> 20} MiB)")


def memory_check(meminfo: Path = Path("/proc/meminfo")) -> Check:
    values: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    free = values["MemAvailable"] / values["MemTotal"]
    status = headroom_status(free, MEMORY_FAIL, MEMORY_WARN)
    return Check("memory", status, f"{free:.0%} available ({values['MemAvailable'] >> 10} MiB)")


def code_check(proc: Path = Path("/proc")) -> Check:
    """No process runs code that an upgrade replaced: a mapped file shown "(deleted)" is an old library
    or binary still in use until that process restarts."""
    stale: dict[str, str] = {}
    for maps in proc.glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        deleted = stale_files(text)
        if deleted:
            stale[_command_name(maps.parent)] = deleted[0]
    if not stale:
        return Check("code", OK, "every process runs the installed code")
    shown = ", ".join(f"{name} ({path})" for name, path in sorted(stale.items())[:5])
    return Check("code", WARN, f"restart needed: {shown}")


def stale_files(maps_text: str) -> list[str]:
    """The replaced executables and libraries among the lines of one /proc/PID/maps."""
    found: list[str] = []
    for line in maps_text.splitlines():
        if line.endswith(" (deleted)"):
            path = line.split(None, 5)[-1].removesuffix(" (deleted)")
            if path.startswith(("/usr/", "/lib", "/opt/", "/bin/", "/sbin/")) and path not in found:
                found.append(path)
    return found


def _command_name(pid_dir: Path) -> str:
    try:
        return (pid_dir / "comm").read_text().strip()
    except OSError:
        return pid_dir.name


def reboot_check(layout: Layout) -> Check:
    if (layout.root / REBOOT_REQUIRED).exists():
        return Check("reboot", WARN, "a reboot is required (/run/reboot-required)")
    return Check("reboot", OK, "no reboot required")


TOOLS = (("nftables", ["nft", "--version"]), ("dnsmasq", ["dnsmasq", "--version"]), ("haproxy", ["haproxy", "-v"]))


def tool_versions() -> dict[str, str | None]:
    """The engine's version and the first line each tool prints about its own version."""
    versions: dict[str, str | None] = {contract.ENGINE_PACKAGE: __version__}
    for name, argv in TOOLS:
        try:
            versions[name] = run(argv, timeout=10).splitlines()[0].strip()
        except (CommandFailed, OSError, IndexError):
            versions[name] = None
    return versions


def _file_id(command: str) -> tuple[int, int] | None:
    """(inode, mtime) of the command's binary: an upgrade replaces the file, so both change."""
    path = shutil.which(command)
    try:
        info = os.stat(path) if path else None
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns) if info else None
