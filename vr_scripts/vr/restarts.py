"""vr-restart-stale: after an upgrade, renews what still runs replaced code. dpkg replaces a file by renaming
the new one over it, so a process that mapped the old one shows it "(deleted)" in /proc/PID/maps (or as its
executable). Each such process is mapped to its systemd unit (its cgroup), and each unit is reloaded or
restarted the least disruptive way (PID 1 re-executes itself). Prints one JSON report: per unit what was
done and why; what still runs old code (a failure, or a reboot's job); what ends by itself (sessions,
load-balancer workers finishing their connections).
"""

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass

from .run import CommandFailed, run

PROC = "/proc"
# Where code lives (/dev/shm, memfd and the like are data). Not only at the start: a process in a mount
# namespace of its own (a unit's sandboxing) shows files from ours by the path from the machine's root.
CODE = re.compile(r"(^|/)(usr|lib|lib64|bin|sbin|opt)/")
DELETED = " (deleted)"
PID1 = "PID 1"  # the "unit" of systemd itself
# How a unit is renewed, least disruptive first; any other service is restarted.
WAYS = {
    "haproxy.service": ("reload", "seamless reload: the master re-executes itself, old workers finish connections"),
    "dnsmasq.service": ("restart", "restart: its DHCP leases are kept on disk"),
    "ssh.service": ("restart", "restart: open sessions survive (KillMode=process), new ones get the new code"),
    "vr-metadata.service": ("restart", "restart: systemd keeps its sockets, requests wait for the new process"),
    PID1: ("daemon-reexec", "systemctl daemon-reexec: systemd re-executes itself, keeping every unit"),
}
RESTART = ("restart", "restart")
LEFT_ALONE = {"dbus.service": "restarting the message bus breaks its clients: a reboot renews it"}
SESSIONS = ("ssh.service",)  # its other processes are sessions, forked before the restart
DRAIN_STEP = 0.25


@dataclass(frozen=True)
class Stale:
    """A process that maps code no longer on disk."""

    pid: int
    command: str
    unit: str  # its systemd unit (a .service, a .scope), PID1, or "" when it has none
    files: tuple[str, ...]


@dataclass
class Renewal:
    unit: str
    action: str  # reload, restart, daemon-reexec, none
    why: str  # the processes and old files that made it necessary
    how: str  # why this way
    ok: bool = True
    error: str = ""


def scan(proc: str = PROC) -> list[Stale]:
    """Every process (but this one) that maps a deleted file where code lives."""
    found = []
    for entry in sorted(os.listdir(proc), key=lambda e: (len(e), e)):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            files = _old_files(f"{proc}/{entry}")
            if files:
                found.append(Stale(int(entry), _read(f"{proc}/{entry}/comm").strip(), _unit(proc, entry), files))
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
        except PermissionError:
            continue  # not ours to look into (outside the router's own processes)
    return found


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _old_files(pid_dir: str) -> tuple[str, ...]:
    try:
        exe = os.readlink(f"{pid_dir}/exe")
    except OSError:
        exe = ""  # a kernel thread: no executable, no maps
    fields = (line.split(maxsplit=5) for line in _read(f"{pid_dir}/maps").splitlines())
    mapped = [f[5] for f in fields if len(f) == 6]
    old = {path.removesuffix(DELETED) for path in [exe, *mapped] if path.endswith(DELETED)}
    return tuple(sorted(path for path in old if CODE.search(path)))


def _unit(proc: str, pid: str) -> str:
    """The unit of a process: the last .service or .scope of its cgroup path (a container's cgroup path
    starts with the host's part, which does not matter here)."""
    if pid == "1":
        return PID1
    for line in _read(f"{proc}/{pid}/cgroup").splitlines():
        if line.startswith("0::"):
            units = [part for part in line[3:].split("/") if part.endswith((".service", ".scope"))]
            return units[-1] if units else ""
    return ""


def main_pids(units: list[str]) -> dict[str, int]:
    """Each service's main process, as systemd knows it (PID 1 is its own)."""
    services = [u for u in units if u.endswith(".service")]
    found = {PID1: 1}
    if services:
        shown = run(["systemctl", "show", "--property=Id,MainPID", *services])
        for block in shown.strip().split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            found[fields.get("Id", "")] = int(fields.get("MainPID", "0") or 0)
    return found


def plan(stale: list[Stale]) -> list[Renewal]:
    """One renewal per unit, PID 1 first (the units it restarts then come from the new systemd)."""
    by_unit: dict[str, list[Stale]] = {}
    for process in stale:
        by_unit.setdefault(process.unit, []).append(process)
    renewals = []
    for unit in sorted(by_unit, key=lambda u: (u != PID1, u)):
        processes = by_unit[unit]
        files = sorted({f for p in processes for f in p.files})
        why = f"{', '.join(f'{p.command}[{p.pid}]' for p in processes)} map old {', '.join(files)}"
        if not unit or unit.endswith(".scope"):
            renewals.append(Renewal(unit or "(no unit)", "none", why, "not a service: it ends with its session"))
        elif unit in LEFT_ALONE:
            renewals.append(Renewal(unit, "none", why, LEFT_ALONE[unit]))
        else:
            action, how = WAYS.get(unit, RESTART)
            renewals.append(Renewal(unit, action, why, how))
    return renewals


def renew(renewal: Renewal) -> None:
    argv = ["systemctl", "daemon-reexec"] if renewal.unit == PID1 else ["systemctl", renewal.action, renewal.unit]
    try:
        run(argv, timeout=120)
    except CommandFailed as err:
        renewal.ok, renewal.error = False, str(err)


def still_old(renewals: list[Renewal], started: float, drain: float) -> tuple[list[Stale], list[Stale]]:
    """After the renewals: (what still runs old code, what ends by itself). A unit's main process that
    maps old code failed its renewal; so does any process started since, and a service left alone. Other
    processes (sessions, haproxy's old workers) end by themselves: wait up to drain seconds for the workers."""
    acted = {r.unit for r in renewals if r.action != "none"}
    deadline = time.monotonic() + drain
    while True:
        stale = scan()
        mains = main_pids(sorted({p.unit for p in stale}))
        failed = [p for p in stale if _failed(p, acted, mains, started)]
        ending = [p for p in stale if p not in failed]
        draining = [p for p in ending if p.unit not in SESSIONS]
        if not draining or time.monotonic() >= deadline:
            return failed, ending
        time.sleep(DRAIN_STEP)


def _failed(process: Stale, acted: set[str], mains: dict[str, int], started: float) -> bool:
    if not process.unit or process.unit.endswith(".scope"):
        return False  # not a service: it ends with its session
    if process.unit not in acted:
        return True  # left alone (a reboot's job), or new since the scan
    return mains.get(process.unit) == process.pid or _started_after(process, started)


def _started_after(process: Stale, since: float) -> bool:
    """Whether the process started after `since` (time.time()): from its start in /proc/PID/stat."""
    try:
        fields = _read(f"{PROC}/{process.pid}/stat").rsplit(")", 1)[1].split()
        uptime = float(_read(f"{PROC}/uptime").split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return False
    started = time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started > since


def report(dry_run: bool = False, drain: float = 10.0) -> dict:
    stale = scan()
    renewals = plan(stale)
    started = time.time()
    if not dry_run:
        for renewal in renewals:
            if renewal.action != "none":
                renew(renewal)
    failed, ending = still_old(renewals, started, drain) if not dry_run else (stale, [])
    return {
        "ok": all(r.ok for r in renewals) and not failed,
        "dry_run": dry_run,
        "units": [asdict(r) for r in renewals],
        "still_old": [asdict(p) for p in failed],
        "ends_by_itself": [asdict(p) for p in ending],
        "reboot_required": any(p.unit in (PID1, *LEFT_ALONE) for p in failed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vr-restart-stale", description="Restart or reload what still runs replaced code; print a JSON report."
    )
    parser.add_argument("--dry-run", action="store_true", help="only say what runs old code and what would be done")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for old haproxy workers (10)")
    args = parser.parse_args(argv)
    result = report(args.dry_run, args.drain)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if result["ok"] or args.dry_run else 1
