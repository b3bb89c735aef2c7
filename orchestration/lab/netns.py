"""Network namespaces and veth links for routers, VMs and public hosts on one machine: the demo, the lab
and the tests build their networks from these. Everything created is recorded and removed by its own
name or process id on close, also when the code using it fails.
"""

import itertools
import os
from dataclasses import dataclass

from orchestration.deployers.hostnet import kill_processes_in
from vrpipe.run import run

_serial = itertools.count()


@dataclass
class Link:
    """One end of a veth pair: its namespace and device name."""

    ns: str
    device: str


class Namespaces:
    """Creates namespaces with a unique prefix and removes them, and the processes in them, on close."""

    def __init__(self, prefix: str = "vrt"):
        self.prefix = f"{prefix}{os.getpid() % 100000}x{next(_serial)}"
        self.created: list[str] = []

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        self.created.append(name)
        run(["ip", "link", "set", "lo", "up"], ns=name)
        return name

    def veth(self, a: Link, b: Link, mac_a: str | None = None) -> None:
        """A veth pair between Link a and Link b, both ends up."""
        tmp = f"v{os.getpid() % 100000}x{next(_serial)}"
        argv = ["ip", "link", "add", tmp, "netns", a.ns, "type", "veth", "peer", "name", b.device, "netns", b.ns]
        run(argv)
        run(["ip", "link", "set", tmp, "name", a.device, *(["address", mac_a] if mac_a else [])], ns=a.ns)
        for end in (a, b):
            run(["ip", "link", "set", end.device, "up"], ns=end.ns)

    def bridge(self, ns: str, device: str) -> None:
        run(["ip", "link", "add", device, "type", "bridge"], ns=ns)
        run(["ip", "link", "set", device, "up"], ns=ns)

    def close(self) -> None:
        for name in reversed(self.created):
            kill_processes_in(name)
            run(["ip", "netns", "del", name], check=False)
        self.created.clear()
