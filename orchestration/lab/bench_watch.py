"""`invoke bench-watch`: N routers as system containers watched by one manager at the default 10 s
interval. It measures the manager's CPU while watching (this process, the ssh and ip processes it ran,
and the SSH master connections it keeps), how long one round of checks over the fleet takes, and how
soon a killed dnsmasq is known. The last line is `detect_s=<s> routers=<n> manager_cpu_pct=<p>`.
"""

import os
import resource
import threading
import time
from pathlib import Path

from orchestration.commands import Command
from orchestration.fleet import for_each
from orchestration.lab.lab import Lab, throwaway_lab
from orchestration.manager import Manager
from orchestration.watch import Watcher, WatchOptions
from vrpipe.errors import VrpipeError

PREFIX = "vrwatch-"
TICKS = os.sysconf("SC_CLK_TCK")
MEMORY_RESERVE = 2 << 30  # bytes left to the rest of the machine: no router starts below it


def bench_watch(routers: int = 20, seconds: float = 60.0, rootfs: Path | str | None = None) -> bool:
    """Print the measurements; return False if a router did not come up or the failure went unseen."""
    with throwaway_lab(rootfs, PREFIX) as (manager, lab):
        print(f"bench-watch: {routers} routers as system containers from {manager.config.rootfs}")
        return _run(manager, lab, routers, seconds)


def _available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _bring_up(manager: Manager, lab: Lab, name: str) -> None:
    index = int(name[1:])
    if _available_memory() < MEMORY_RESERVE:
        raise VrpipeError(f"not started: less than {MEMORY_RESERVE >> 30} GiB of memory left (about 85 MB per router)")
    manager.start(name)
    vm = {"mac": f"02:00:00:{index:02x}:00:10", "ip": "10.1.1.10", "hostname": "vm0"}
    outcome = manager.apply(name, [*lab.network_commands(index), Command("add", "dhcp", vm)])
    if not outcome.ok:
        raise VrpipeError(outcome.error or "the router refused its commands")


def _processes_cpu(pids: list[int | None]) -> float:
    """CPU seconds of these processes so far (the SSH masters: daemons of their own, not our children)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except (OSError, TypeError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (every core; /proc/stat), for context: on a lab
    machine this includes the routers answering the checks, and anything else running."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS


def _own_cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(manager: Manager, lab: Lab, routers: int, seconds: float) -> bool:
    names = [f"w{i}" for i in range(1, routers + 1)]
    started = time.monotonic()
    for name in names:  # one at a time: the first create makes the manager's SSH key
        lab.create_router(name)
    failed = {n: e for n, e in for_each(names, lambda n: _bring_up(manager, lab, n), 4).items() if e}
    print(f"{routers - len(failed)}/{routers} routers up in {time.monotonic() - started:.0f}s")
    for name, error in failed.items():
        print(f"  {name}: {error}")
    if failed:
        return False
    options = WatchOptions()
    watcher = Watcher(manager, options, lambda message: print(f"  watch: {message}"))
    try:
        first = time.monotonic()
        watcher.round()  # opens every SSH master connection, outside the measurement
        print(f"first round (opening {routers} SSH connections) {time.monotonic() - first:.1f}s")
        pids = [manager.transport(name).master_pid() for name in names]
        cpu, masters, busy, wall = _own_cpu(), _processes_cpu(pids), _machine_busy(), time.monotonic()
        rounds = max(1, round(seconds / options.interval))
        durations = []
        for _ in range(rounds):
            begun = time.monotonic()
            checked = watcher.round()
            durations.append(time.monotonic() - begun)
            unhealthy = [c.name for c in checked if c.health.state != "healthy"]
            if unhealthy:
                print(f"  false alarm: {', '.join(unhealthy)}")
            time.sleep(max(0.0, options.interval - durations[-1]))
        used = _own_cpu() - cpu + _processes_cpu(pids) - masters
        elapsed = time.monotonic() - wall
        machine = (_machine_busy() - busy) / elapsed
        percent = 100 * used / elapsed
        print(f"{rounds} rounds every {options.interval:g}s: one round over {routers} routers took "
              f"{min(durations):.1f}-{max(durations):.1f}s; manager CPU {used:.1f}s in {elapsed:.0f}s = "
              f"{percent:.1f}% of one core")
        print(f"the whole machine was busy {machine:.2f} of {os.cpu_count()} cores meanwhile (routers answering the "
              "checks, and anything else running here)")
        detect = _detect(manager, watcher, names[0])
    finally:
        watcher.close()
    print(f"bench-watch: {'ok' if detect is not None else 'FAILED: the killed dnsmasq went unseen'}")
    print(f"detect_s={detect if detect is None else round(detect, 1)} routers={routers} manager_cpu_pct={percent:.1f}")
    return detect is not None


def _detect(manager: Manager, watcher: Watcher, name: str, limit: float = 90.0) -> float | None:
    """Seconds from killing dnsmasq on `name` until the watch (running at its interval) marks it unhealthy.
    The kill comes half an interval after a round started: the average case (the worst is a kill just
    after a check: unhealthy_after intervals plus one check)."""
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    time.sleep(watcher.options.interval / 2)
    router = manager.store.router(name)
    killed = time.monotonic()
    manager.deployer(router).execute(router, ["systemctl", "kill", "-s", "KILL", "dnsmasq"])
    try:
        while time.monotonic() - killed < limit:
            if manager.store.router(name).health.state == "unhealthy":
                return time.monotonic() - killed
            time.sleep(0.2)
        return None
    finally:
        stop.set()
        thread.join()
