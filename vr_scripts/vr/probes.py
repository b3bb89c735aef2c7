"""vr-probe: what the router serves, watched while an upgrade runs. `vr-probe --start` probes every target once
(each load balancer's frontend, each TCP port forward's VM as the router reaches it, DNS on each guest gateway,
dnsmasq's DHCP socket, the metadata service), then leaves a watcher probing them each interval and following
the size of the conntrack table; `vr-probe --stop` ends it and prints what it counted, as JSON: per target its
failed probes and its longest outage (from a failed probe to the next that passed). A target that fails that
first probe (before the upgrade changed anything) is reported as such, not watched.
"""

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .health import dns_query
from .layout import Layout
from .model import RouterState

CONNTRACK_COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")
UDP_SOCKETS = Path("/proc/net/udp")
DHCP_PORT = 67
# A conntrack table that loses more than half its entries, and at least this many, from one round to the
# next was flushed (entries expire a few at a time); established connections through NAT lose their state.
FLUSH_MIN_ENTRIES = 10
STOP_WAIT = 10.0  # seconds --stop waits for the watcher's report


@dataclass
class Watched:
    probes: int = 0
    failed: int = 0
    first_error: str = ""
    longest_outage: float = 0.0  # seconds
    down_since: float | None = None  # time.monotonic() of the failed probe that began the current outage

    def note(self, error: str, now: float) -> None:
        self.probes += 1
        if error:
            self.failed += 1
            self.first_error = self.first_error or error
            self.down_since = now if self.down_since is None else self.down_since
        self.end_outage(now, still_down=bool(error))

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "down_since"}

    def end_outage(self, now: float, still_down: bool = False) -> None:
        if self.down_since is not None:
            self.longest_outage = round(max(self.longest_outage, now - self.down_since), 2)
            self.down_since = self.down_since if still_down else None


@dataclass
class Conntrack:
    first: int = -1
    low: int = -1
    high: int = -1
    last: int = -1
    flushes: int = 0

    def note(self, count: int) -> None:
        if self.first < 0:
            self.first = self.low = self.high = count
        elif self.last - count >= max(FLUSH_MIN_ENTRIES, self.last // 2 + 1):
            self.flushes += 1
        self.low, self.high, self.last = min(self.low, count), max(self.high, count), count


@dataclass
class Watch:
    interval: float
    started: float = field(default_factory=time.time)
    rounds: int = 0
    targets: dict[str, Watched] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why its first probe failed
    conntrack: Conntrack | None = None

    def report(self) -> dict[str, object]:
        failures = sum(t.failed for t in self.targets.values()) + (self.conntrack.flushes if self.conntrack else 0)
        return {
            "ok": True,
            "seconds": round(time.time() - self.started, 2),
            "interval": self.interval,
            "rounds": self.rounds,
            "failures": failures,
            "targets": {name: t.to_json() for name, t in self.targets.items()},
            "skipped": self.skipped,
            "conntrack": asdict(self.conntrack) if self.conntrack else None,
        }


Probe = Callable[[], None]  # raises OSError (or http.client.HTTPException) when the target does not answer


def targets(state: RouterState, layout: Layout, timeout: float) -> dict[str, Probe]:
    """What this state has the router serve, by name."""
    found: dict[str, Probe] = {}
    for lb in state.load_balancer:
        found[f"load-balancer {lb.name} {lb.public_ip}:{lb.port}"] = _connect(str(lb.public_ip), lb.port, timeout)
    for pf in state.port_forwarding:
        if pf.protocol == "tcp":
            name = f"port-forward {pf.public_ip}:{pf.public_ports} -> {pf.vm_ip}:{pf.vm_ports.first}"
            found[name] = _connect(str(pf.vm_ip), pf.vm_ports.first, timeout)
    for guest in state.interfaces.guests:
        gateway = str(guest.gateway.ip)
        name = state.dhcp[0].hostname if state.dhcp else "vr-probe.invalid"
        found[f"dns {gateway}"] = _resolve(gateway, name, timeout)
    if state.interfaces.guests:
        found["dhcp"] = _dhcp_listening
    listen = json.loads(layout.metadata.read_text())["listen"] if layout.metadata.exists() else []
    for address in listen[:1]:
        found[f"metadata {address}"] = _http(address, timeout)
    return found


def _connect(address: str, port: int, timeout: float) -> Probe:
    def probe() -> None:
        socket.create_connection((address, port), timeout).close()

    return probe


def _resolve(server: str, name: str, timeout: float) -> Probe:
    def probe() -> None:
        dns_query(server, name, timeout)

    return probe


def _dhcp_listening() -> None:
    """dnsmasq's DHCP socket is bound (a DHCP exchange needs a client on a guest network)."""
    lines = UDP_SOCKETS.read_text().splitlines()[1:]
    if not any(line.split()[1].endswith(f":{DHCP_PORT:04X}") for line in lines):
        raise OSError(f"nothing listens on UDP port {DHCP_PORT}")


def _http(address: str, timeout: float) -> Probe:
    def probe() -> None:
        connection = http.client.HTTPConnection(address, 80, timeout=timeout)
        try:
            connection.request("GET", "/latest/meta-data/")
            connection.getresponse().read()  # any status: the service answers by source address
        finally:
            connection.close()

    return probe


def _error(probe: Probe) -> str:
    """"" when the probe passed, else what went wrong."""
    try:
        probe()
    except (OSError, http.client.HTTPException) as err:
        return str(err) or type(err).__name__
    return ""


def _conntrack_count() -> int | None:
    try:
        return int(CONNTRACK_COUNT.read_text())
    except (OSError, ValueError):
        return None  # no conntrack in this kernel or namespace


def first_round(watch: Watch, probes: dict[str, Probe]) -> dict[str, Probe]:
    """Probe everything once; returns the targets that answered, the ones to watch."""
    watched = {}
    for name, probe in probes.items():
        error = _error(probe)
        if error:
            watch.skipped[name] = error
        else:
            watch.targets[name], watched[name] = Watched(probes=1), probe
    count = _conntrack_count()
    if count is not None:
        watch.conntrack = Conntrack()
        watch.conntrack.note(count)
    watch.rounds = 1
    return watched


def watch_until_stopped(watch: Watch, probes: dict[str, Probe], deadline: float, report: Path) -> None:
    """Probe each interval until SIGTERM (or the deadline), then write the report."""
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    while not stopped and time.monotonic() < deadline:
        began = time.monotonic()
        for name, probe in probes.items():
            watch.targets[name].note(_error(probe), time.monotonic())
        count = _conntrack_count()
        if watch.conntrack and count is not None:
            watch.conntrack.note(count)
        watch.rounds += 1
        time.sleep(max(0.0, watch.interval - (time.monotonic() - began)))
    for target in watch.targets.values():
        target.end_outage(time.monotonic())  # a target still down at the end: its outage so far
    partial = report.with_name(report.name + ".new")
    partial.write_text(json.dumps(watch.report()))
    os.replace(partial, report)


def start(layout: Layout, state: RouterState, interval: float, timeout: float, seconds: float) -> int:
    stop_running(layout, quiet=True)  # one left by a connection cut during an earlier upgrade
    layout.probe_report.unlink(missing_ok=True)
    watch = Watch(interval)
    probes = first_round(watch, targets(state, layout, timeout))
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        layout.probe_pid.write_text(str(pid))
        print(json.dumps({"ok": True, "pid": pid, "watched": sorted(probes), "skipped": watch.skipped}))
        return 0
    os.setsid()  # outlive the SSH session that started it
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    watch_until_stopped(watch, probes, time.monotonic() + seconds, layout.probe_report)
    os._exit(0)


def stop_running(layout: Layout, quiet: bool = False) -> int:
    """End the watcher and print its report (quiet: only end it)."""
    try:
        pid = int(layout.probe_pid.read_text())
    except (OSError, ValueError):
        return 0 if quiet else _fail("no vr-probe watcher was started")
    layout.probe_pid.unlink()
    with contextlib.suppress(ProcessLookupError):  # else it reached its deadline: its report is there
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while not layout.probe_report.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if quiet:
        return 0
    if not layout.probe_report.exists():
        return _fail(f"the vr-probe watcher (PID {pid}) left no report within {STOP_WAIT:.0f}s")
    print(layout.probe_report.read_text())
    return 0


def _fail(message: str) -> int:
    print(json.dumps({"ok": False, "error": message}))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vr-probe", description="Watch what the router serves (an upgrade's).")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--start", action="store_true", help="probe once, then leave a watcher running")
    action.add_argument("--stop", action="store_true", help="end the watcher and print its counts as JSON")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between rounds (0.2)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds one probe waits for its answer (1.0)")
    parser.add_argument("--seconds", type=float, default=3600.0, help="the watcher ends by itself after this")
    args = parser.parse_args(argv)
    from . import persist

    layout = Layout.from_env()
    if args.stop:
        return stop_running(layout)
    if not 0.01 <= args.interval <= 60:
        parser.error(f"--interval {args.interval}: give 0.01 to 60 seconds")
    if not 0.01 <= args.timeout <= 60:
        parser.error(f"--timeout {args.timeout}: give 0.01 to 60 seconds")
    layout.probe_pid.parent.mkdir(parents=True, exist_ok=True)
    return start(layout, persist.read(layout), args.interval, args.timeout, args.seconds)
