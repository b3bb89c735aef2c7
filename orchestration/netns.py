"""Network namespaces and veth links for routers, VMs and public hosts on one machine: the demo, the lab
and the tests build their networks from these. Everything created is recorded and removed by its own
name or process id on close, also when the code using it fails.
"""

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger("vrpipe.netns")
_serial = itertools.count()


def run(argv, *, ns=None, input=None, check=True, timeout=60):
    """Run argv (in namespace `ns` if given); return the CompletedProcess. Raises with stderr on failure."""
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    proc = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    log.debug("%s -> %d", full, proc.returncode)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(full)} exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


@dataclass
class Link:
    """One end of a veth pair: its namespace and device name."""

    ns: str
    device: str


class Namespaces:
    """Creates namespaces with a unique prefix and removes them, and the processes in them, on close."""

    def __init__(self, prefix="vrt"):
        self.prefix = f"{prefix}{os.getpid() % 100000}x{next(_serial)}"
        self.created = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, role):
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        self.created.append(name)
        run(["ip", "link", "set", "lo", "up"], ns=name)
        return name

    def veth(self, a, b, mac_a=None):
        """A veth pair between Link a and Link b, both ends up."""
        tmp = f"v{os.getpid() % 100000}x{next(_serial)}"
        argv = ["ip", "link", "add", tmp, "netns", a.ns, "type", "veth", "peer", "name", b.device, "netns", b.ns]
        run(argv)
        run(["ip", "link", "set", tmp, "name", a.device, *(["address", mac_a] if mac_a else [])], ns=a.ns)
        for end in (a, b):
            run(["ip", "link", "set", end.device, "up"], ns=end.ns)

    def bridge(self, ns, device):
        run(["ip", "link", "add", device, "type", "bridge"], ns=ns)
        run(["ip", "link", "set", device, "up"], ns=ns)

    def close(self):
        for name in reversed(self.created):
            kill_processes_in(name)
            run(["ip", "netns", "del", name], check=False)
        self.created.clear()


def kill_processes_in(ns, timeout=5.0):
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


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone once reaped.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True
