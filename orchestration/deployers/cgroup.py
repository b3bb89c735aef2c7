"""Each container router's own cgroup (v2), the root of its cgroup namespace: without it every router's
systemd made its units' cgroups at the root of the host's hierarchy, so two routers' dnsmasq.service
shared one cgroup and stopping a unit in one router waited for the other router's processes.
`python -m orchestration.deployers.cgroup DIR ARGV...` enters DIR, then executes ARGV (no shell).
"""

import os
import sys
import time
from pathlib import Path

MOUNTS = Path("/proc/self/mounts")
PARENT = "vrpipe"  # the folder of every router's cgroup, beside the host's own


def hierarchy() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
    hosts), or None when it is not."""
    for line in MOUNTS.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def _path(name: str) -> Path | None:
    root = hierarchy()
    return None if root is None else root / PARENT / name


def make(name: str) -> Path | None:
    """The empty cgroup for router `name` (its netns name: unique on this host), or None without cgroup v2."""
    path = _path(name)
    if path is not None:
        remove(name)  # what a router killed with its host left behind
        path.mkdir(parents=True)
    return path


def launcher(path: Path, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", __name__, str(path), *argv]


def remove(name: str, timeout: float = 10.0) -> None:
    """Kill whatever still runs in router `name`'s cgroup (cgroup.kill), then remove it and the cgroups
    its systemd made in it, deepest first."""
    path = _path(name)
    if path is None or not path.is_dir():
        return
    (path / "cgroup.kill").write_text("1\n")
    deadline = time.monotonic() + timeout
    while "populated 1" in (path / "cgroup.events").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    path.rmdir()


def _enter_and_exec(path: str, argv: list[str]) -> None:
    Path(path, "cgroup.procs").write_text(f"{os.getpid()}\n")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    _enter_and_exec(sys.argv[1], sys.argv[2:])
