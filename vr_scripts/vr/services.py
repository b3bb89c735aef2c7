"""Service control, the one way the engine starts, reloads and stops dnsmasq, haproxy and the metadata
service: through systemd on a router, or as plain processes with pid files under the router's root when
tests run several routers as network namespaces on one machine (VR_SERVICES=process).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .layout import Layout
from .run import CommandFailed, run, succeeds


class Services(Protocol):
    """What the engine asks of service control; each action returns what it did ("restarted")."""

    def is_active(self, name: str) -> bool: ...
    def active(self, names: Sequence[str]) -> dict[str, bool]: ...
    def start(self, name: str) -> str: ...
    def stop(self, name: str) -> str: ...
    def restart(self, name: str) -> str: ...
    def reload(self, name: str) -> str: ...


# what `systemctl is-active` prints for a unit its exit status counts as active
UP_STATES = ("active", "reloading", "refreshing")
PAST = {"start": "started", "stop": "stopped", "restart": "restarted", "reload": "reloaded"}


class SystemdServices:
    """On a router: systemd units. Debian's dnsmasq unit reloads with SIGHUP, haproxy's with a seamless USR2."""

    def is_active(self, name: str) -> bool:
        return succeeds(["systemctl", "is-active", "--quiet", f"{name}.service"])

    def active(self, names: Sequence[str]) -> dict[str, bool]:
        """Each unit's state from one systemctl run (it prints a line per unit, exit status aside); a unit
        reloading counts as active, as is_active's exit status has it."""
        if not names:
            return {}
        lines = run(["systemctl", "is-active", *(f"{n}.service" for n in names)], check=False).split()
        return {name: index < len(lines) and lines[index] in UP_STATES for index, name in enumerate(names)}

    def _systemctl(self, verb: str, name: str) -> str:
        try:
            run(["systemctl", verb, f"{name}.service"])
        except CommandFailed:
            if verb not in ("start", "restart"):
                raise
            # Debian's dnsmasq unit is Type=forking with a PID file; under load systemd sometimes gives
            # up on that file ("unavailable resources") although the daemon is fine. One more try, once.
            time.sleep(1)
            run(["systemctl", verb, f"{name}.service"])
        return PAST[verb]

    def start(self, name: str) -> str:
        return self._systemctl("start", name)

    def stop(self, name: str) -> str:
        return self._systemctl("stop", name)

    def restart(self, name: str) -> str:
        return self._systemctl("restart", name)

    def reload(self, name: str) -> str:
        return self._systemctl("reload", name)


class ProcessServices:
    """Daemons started directly, each with a pid file under the router's root; the caller's network
    namespace is theirs. dnsmasq runs as root here because test roots are not readable by its own user."""

    RELOAD_SIGNALS = {"dnsmasq": signal.SIGHUP, "haproxy": signal.SIGUSR2, "vr-metadata": signal.SIGHUP}

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _argv(self, name: str) -> list[str]:
        layout, pid_file = self.layout, self.layout.pid_file(name)
        argv = {
            "dnsmasq": ["dnsmasq", f"--conf-file={layout.dnsmasq_conf}", f"--pid-file={pid_file}", "--user=root"],
            "haproxy": ["haproxy", "-W", "-D", "-p", str(pid_file), "-f", str(layout.haproxy_cfg)],
            "vr-metadata": [sys.executable, "-m", "vr.metadata_server"],
        }.get(name)
        if argv is None:  # strongswan: charon-systemd needs systemd (a VPN runs on routers, not in these tests)
            raise OSError(f"{name} does not run as a plain process (VR_SERVICES=process); use systemd")
        return argv

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self.layout.pid_file(name).read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if _alive(pid) else None

    def is_active(self, name: str) -> bool:
        return self._pid(name) is not None

    def active(self, names: Sequence[str]) -> dict[str, bool]:
        return {name: self.is_active(name) for name in names}

    def start(self, name: str) -> str:
        pid_file = self.layout.pid_file(name)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        if name == "vr-metadata":
            env = {**os.environ, "VR_ROOT": str(self.layout.root), "PYTHONPATH": str(Path(__file__).parent.parent)}
            log = open(self.layout.root / "var/log/vr/metadata.log", "ab")  # noqa: SIM115 - handed to the daemon
            proc = subprocess.Popen(self._argv(name), env=env, stdout=log, stderr=log, start_new_session=True)
            pid_file.write_text(f"{proc.pid}\n")
            _wait_listening(self.layout)
        else:
            run(self._argv(name))
        return PAST["start"]

    def stop(self, name: str) -> str:
        pid = self._pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
        self.layout.pid_file(name).unlink(missing_ok=True)
        return PAST["stop"]

    def restart(self, name: str) -> str:
        self.stop(name)
        self.start(name)
        return PAST["restart"]

    def reload(self, name: str) -> str:
        pid = self._pid(name)
        assert pid is not None, f"{name} is not running"  # subsystems reload only a service that is active
        os.kill(pid, self.RELOAD_SIGNALS[name])
        return PAST["reload"]


def _alive(pid: int) -> bool:
    """Whether pid runs. `kill -0` also succeeds on a zombie (dead, not yet reaped by its parent), so
    read its state from /proc: Z (zombie) and X (dead) are down."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.02)
    raise TimeoutError(f"process {pid} did not stop within {timeout:.0f}s")


def _wait_listening(layout: Layout, port: int = 80, timeout: float = 5.0) -> None:
    """Wait until the metadata service accepts connections, so an apply reports a service that works."""
    addresses = json.loads(layout.metadata.read_text())["listen"]
    deadline = time.monotonic() + timeout
    while addresses and time.monotonic() < deadline:
        try:
            socket.create_connection((addresses[0], port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"the metadata service did not listen on {addresses[0]}:{port} within {timeout:.0f}s")


def for_layout(layout: Layout) -> Services:
    kind = os.environ.get("VR_SERVICES", "systemd")
    if kind not in ("systemd", "process"):
        raise ValueError(f"VR_SERVICES={kind!r}: must be systemd or process")
    return ProcessServices(layout) if kind == "process" else SystemdServices()
