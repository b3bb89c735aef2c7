"""What the router's metrics say, gathered on each scrape: health checks, applies (counted and timed from
the apply log as it grows), items per state section, DHCP leases, haproxy's proxies and servers, and the
counters of the router's own nftables chains. vr.metrics_server turns these families into Prometheus's
text format; this module needs only the standard library.
"""

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from . import __version__, health
from .layout import Layout
from .model import SECTIONS, RouterState
from .run import CommandFailed, run
from .services import Services

# Apply durations: from an unchanged state (milliseconds) to a 10,000-VM state (seconds).
APPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CHECK_VALUES = {health.OK: 0, health.WARN: 1, health.FAIL: 2}


@dataclass
class Family:
    """One metric: a gauge or counter (samples: (labels, value)) or a histogram (buckets, sum, count)."""

    name: str
    kind: str  # "gauge", "counter" or "histogram"
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    buckets: list[tuple[str, int]] = field(default_factory=list)  # histogram: (upper bound, cumulative count), +Inf
    total: float = 0.0  # histogram: sum of the observations

    def add(self, value: float, *labels: str) -> Self:
        self.samples.append((labels, value))
        return self


class ApplyLog:
    """Counts and times the applies of the apply log, reading only what was appended since the last call
    (a rotated log starts again from its new file). Counters start at what the current file holds."""

    inode: int | None
    offset: int
    partial: bytes  # the start of a line not yet written whole

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.inode, self.offset, self.partial = None, 0, b""
        self.outcomes: dict[tuple[str, str], int] = {}  # (kind, outcome) -> count
        self.durations = [0] * (len(APPLY_BUCKETS) + 1)
        self.seconds = 0.0
        self.last: tuple[float, bool] | None = None  # (timestamp, ok) of the newest apply

    def update(self) -> None:
        with self.lock:
            for line in self._new_lines():
                parsed = health.apply_line(line)
                if parsed is not None:
                    self.observe(*parsed)

    def _new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as log:
                stat = os.fstat(log.fileno())
                if stat.st_ino != self.inode or stat.st_size < self.offset:
                    self.inode, self.offset, self.partial = stat.st_ino, 0, b""
                log.seek(self.offset)
                data = self.partial + log.read()
                self.offset = log.tell()
        except FileNotFoundError:
            return []
        *lines, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def observe(self, when: float, summary: Mapping[str, Any]) -> None:
        kind = summary.get("kind", "unknown")
        outcome = apply_outcome(summary)
        self.outcomes[kind, outcome] = self.outcomes.get((kind, outcome), 0) + 1
        seconds = sum(v for v in (summary.get("timings") or {}).values() if isinstance(v, int | float))
        self.seconds += seconds
        for i, bound in enumerate((*APPLY_BUCKETS, float("inf"))):
            if seconds <= bound:
                self.durations[i] += 1
        self.last = (when, bool(summary.get("ok")))

    def families(self) -> list[Family]:
        with self.lock:
            applies = Family("vr_applies", "counter", "Applies by kind and outcome", ("kind", "outcome"))
            for (kind, outcome), count in sorted(self.outcomes.items()):
                applies.add(count, kind, outcome)
            bounds = [*map(str, APPLY_BUCKETS), "+Inf"]
            duration = Family("vr_apply_duration_seconds", "histogram", "Time one apply took (its phases)")
            duration.buckets, duration.total = list(zip(bounds, self.durations, strict=True)), self.seconds
            families = [applies, duration]
            if self.last is not None:
                families.append(Family("vr_apply_last_timestamp_seconds", "gauge", "When the last apply ended")
                                .add(self.last[0]))
                families.append(Family("vr_apply_last_ok", "gauge", "1 if the last apply succeeded").add(
                    int(self.last[1])))
            return families


def apply_outcome(summary: Mapping[str, Any]) -> str:
    if summary.get("unchanged"):
        return "unchanged"
    if summary.get("ok"):
        return "ok"
    return "invalid" if "problems" in summary else "failed"


def collect(layout: Layout, services: Services, state: RouterState, apply_log: ApplyLog) -> list[Family]:
    """Every family, read now."""
    live = health.live_counts()
    checks = health.run_checks(layout, health.running_services(services, state), state, live, health.Memo())
    families = [
        Family("vr_info", "gauge", "The engine's version", ("version",)).add(1, __version__),
        Family("vr_health_ok", "gauge", "1 if no health check fails").add(int(all(c.status != health.FAIL
                                                                              for c in checks))),
        check_family(checks),
        state_family(state),
        Family("vr_dhcp_leases", "gauge", "DHCP leases dnsmasq holds").add(lease_count(layout.leases)),
    ]
    apply_log.update()
    families += apply_log.families()
    if state.load_balancer:
        with contextlib.suppress(OSError):  # the haproxy-stats check says so
            families += haproxy_families(health.haproxy_stats(layout))
    if live is not None:
        families += nftables_families(_table_listing())
    return families


def check_family(checks: Iterable[health.Check]) -> Family:
    family = Family("vr_health_check_status", "gauge", "Each health check: 0 ok, 1 warn, 2 fail", ("check",))
    for check in checks:
        family.add(CHECK_VALUES[check.status], check.name)
    return family


def state_family(state: RouterState) -> Family:
    family = Family("vr_state_items", "gauge", "Items per section of the persisted state", ("section",))
    for name, section in SECTIONS.items():
        if section.key_fields:
            family.add(len(getattr(state, name)), name)
    return family


def lease_count(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def haproxy_families(rows: Iterable[Mapping[str, str]]) -> list[Family]:
    """Up/down and sessions of each frontend, backend and server, from haproxy's `show stat` rows."""
    labels = ("proxy", "server")
    up = Family("vr_haproxy_up", "gauge", "1 if the proxy or server is UP (or OPEN)", labels)
    current = Family("vr_haproxy_sessions_current", "gauge", "Sessions open now", labels)
    total = Family("vr_haproxy_sessions", "counter", "Sessions since haproxy started", labels)
    for row in rows:
        key = (row.get("pxname", ""), row.get("svname", ""))
        up.add(int(row.get("status", "").startswith(("UP", "OPEN"))), *key)
        current.add(_number(row.get("scur")), *key)
        total.add(_number(row.get("stot")), *key)
    return [up, current, total]


def _number(text: str | None) -> float:
    try:
        return float(text)  # type: ignore[arg-type]  # None (a column not in the row) is caught below
    except (TypeError, ValueError):
        return 0.0


def _table_listing() -> dict[str, Any]:
    try:
        return json.loads(run(["nft", "-j", "list", "table", "inet", "vr"]))
    except CommandFailed:
        return {}


def nftables_families(listing: Mapping[str, Any]) -> list[Family]:
    """The counters of the router's own chains (`counter drop` at a chain's end counts what it refused),
    from `nft -j list table inet vr`, by chain and verdict."""
    labels = ("chain", "verdict")
    packets = Family("vr_nftables_packets", "counter", "Packets counted by the router's rules", labels)
    octets = Family("vr_nftables_bytes", "counter", "Bytes counted by the router's rules", labels)
    sums: dict[tuple[str, str], tuple[int, int]] = {}
    for entry in listing.get("nftables", []):
        rule = entry.get("rule")
        if not rule:
            continue
        counter = next((e["counter"] for e in rule.get("expr", []) if "counter" in e), None)
        if counter is None:
            continue
        verdict = next((k for e in rule["expr"] for k in e if k in ("accept", "drop", "reject", "jump")), "none")
        key = (rule["chain"], verdict)
        old = sums.get(key, (0, 0))
        sums[key] = (old[0] + counter["packets"], old[1] + counter["bytes"])
    for key, (p, b) in sorted(sums.items()):
        packets.add(p, *key)
        octets.add(b, *key)
    return [packets, octets]
