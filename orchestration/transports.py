"""How the manager reaches a router: OpenSSH to its control address, straight or through a hypervisor host
(ProxyJump) to a link-local address. One multiplexed connection per router (ControlMaster), keys only,
the router's host key pinned in the store on first contact and a changed key refused; every call has a
timeout and connection failures are retried a bounded number of times.
"""

import fcntl
import logging
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vr import contract

from orchestration.render import render
from vrpipe.errors import CommandError, VrpipeError, shown
from vrpipe.run import run

log = logging.getLogger("vrpipe.transport")
_KEY_GUARD = threading.Lock()
SSH_PORT = contract.SSH_PORT
SSH_FAILED = 255  # ssh's own exit status; the router's commands exit 0, 1 or 2
HOST_KEY_REFUSED = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


class TransportError(VrpipeError):
    """The router could not be reached, or the connection broke: the outcome of the call is unknown."""


class HostKeyChanged(TransportError):
    """The router answered with a host key other than the pinned one; nothing was sent."""


@dataclass(frozen=True)
class Reply:
    """What a router program answered: exit status, standard output and standard error."""

    status: int
    out: str
    err: str


@dataclass(frozen=True)
class JumpHost:
    """The hypervisor host the manager goes through to reach link-local control addresses."""

    address: str
    port: int = 22
    user: str = "root"

    @classmethod
    def parse(cls, text: str) -> "JumpHost":
        """`[user@]host[:port]`, as stored with a router."""
        user, _, rest = text.rpartition("@")
        host, _, port = rest.partition(":")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"jump host {shown(text)} is not [user@]host[:port]")
        return cls(host, int(port or 22), user or "root")

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


@dataclass(frozen=True)
class SshTarget:
    name: str
    address: str
    port: int = SSH_PORT
    user: str = "root"
    jump: JumpHost | None = None
    netns: str | None = None  # the network namespace ssh runs in (tests and the lab); None: this host's


@dataclass(frozen=True)
class SshOptions:
    connect_timeout: int = 5
    command_timeout: float = 300.0
    keepalive_interval: int = 2
    keepalive_count: int = 3
    attempts: int = 3  # tries per call when the connection fails; every router command is idempotent
    retry_delay: float = 0.5
    persist: int = 120  # seconds an idle master connection stays up


class Transport(Protocol):
    """What reaches one router: SshTransport, or a stand-in for it in unit tests."""

    def run(self, argv: Sequence[str], input: str | None = None, timeout: float | None = None) -> Reply: ...

    def execute(
        self, argv: Sequence[str], input: str | None = None, timeout: float | None = None
    ) -> tuple[int, str]: ...

    def copy(self, text: str, path: str) -> None: ...


class SshTransport:
    """Runs router programs over one multiplexed SSH connection. `pin(key)` is called once, with the
    host key the router showed on first contact, so that the caller can keep it."""

    def __init__(
        self,
        target: SshTarget,
        key_file: Path,
        work_dir: Path | str,
        pinned_key: str | None,
        pin: Callable[[str], None],
        hypervisor_known_hosts: Path,
        options: SshOptions = SshOptions(),
    ):
        self.target, self.options, self._pin = target, options, pin
        self.pinned_key = pinned_key
        self.known_hosts = Path(work_dir) / f"{target.name}.known_hosts"
        self.config = Path(work_dir) / f"{target.name}.ssh_config"
        self._settings = dict(
            name=target.name,
            target=target,
            key=key_file,
            known_hosts=self.known_hosts,
            hypervisor_known_hosts=hypervisor_known_hosts,
            control_dir=work_dir,
            options=options,
        )
        self._write_config()

    def _write_config(self) -> None:
        alias = f"vr-{self.target.name}"
        self.known_hosts.write_text(f"{alias} {self.pinned_key}\n" if self.pinned_key else "")
        self.config.write_text(render("ssh_config.j2", pinned=bool(self.pinned_key), **self._settings))

    def _ssh(self, *args: str, input: str | None = None, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-F", str(self.config), *args]
        try:
            return run(argv, ns=self.target.netns, input=input, check=False, timeout=timeout)
        except CommandError as err:  # ssh timed out and was killed: the outcome is unknown
            raise TransportError(f"router {self.target.name}: {err}") from err

    def execute(
        self, argv: Sequence[str], input: str | None = None, timeout: float | None = None
    ) -> tuple[int, str]:
        """Run argv on the router; return (exit status, stdout)."""
        reply = self.run(argv, input, timeout)
        return reply.status, reply.out

    def run(self, argv: Sequence[str], input: str | None = None, timeout: float | None = None) -> Reply:
        """Run argv on the router; return its Reply. Retries only failed connections."""
        remote = shlex.join(argv)  # the remote side hands this to a shell: every word quoted
        for attempt in range(1, self.options.attempts + 1):
            proc = self._ssh("router", "--", remote, input=input, timeout=timeout or self.options.command_timeout)
            if proc.returncode != SSH_FAILED:
                self._pin_on_first_contact()
                return Reply(proc.returncode, proc.stdout, proc.stderr)
            error = proc.stderr.strip().splitlines()[-1:] or ["ssh failed"]
            if any(marker in proc.stderr for marker in HOST_KEY_REFUSED):
                raise HostKeyChanged(f"router {self.target.name}: host key differs from the pinned one; refused")
            log.info("router %s: attempt %d/%d: %s", self.target.name, attempt, self.options.attempts, error[0])
            if attempt < self.options.attempts:
                time.sleep(self.options.retry_delay * attempt)
        raise TransportError(f"router {self.target.name} at {self.target.address}: {error[0]}")

    def copy(self, text: str, path: str) -> None:
        """Put `text` into the file `path` on the router (dd reads it from the connection)."""
        status, _ = self.execute(["dd", f"of={path}", "status=none"], input=text)
        if status != 0:
            raise TransportError(f"router {self.target.name}: writing {path} failed with exit status {status}")

    def _pin_on_first_contact(self) -> None:
        if self.pinned_key:
            return
        lines = [line.split(None, 1) for line in self.known_hosts.read_text().splitlines() if line.strip()]
        if not lines:
            raise TransportError(f"router {self.target.name}: ssh recorded no host key on first contact")
        self.pinned_key = lines[0][1]
        self._pin(self.pinned_key)
        self._write_config()

    def close(self) -> None:
        """End the multiplexed connection (the master exits; a later call opens a new one)."""
        self._ssh("-O", "exit", "router", timeout=10)

    def master_pid(self) -> int | None:
        """The pid of the master connection, or None when there is none."""
        proc = self._ssh("-O", "check", "router", timeout=10)
        text = proc.stderr.strip()
        return int(text.split("pid=")[1].rstrip(")")) if proc.returncode == 0 and "pid=" in text else None


class SshConnections:
    """The manager's SSH state: its key pair, a short directory for configs and control sockets, and one
    transport per router, reused. `close()` ends every connection and removes the directory."""

    def __init__(self, key_file: Path | str, hypervisor_known_hosts: Path | str, options: SshOptions = SshOptions()):
        self.key_file, self.options = Path(key_file), options
        self.hypervisor_known_hosts = Path(hypervisor_known_hosts)
        # Control socket paths must stay under 108 bytes: a short directory of its own.
        self.work_dir = Path(tempfile.mkdtemp(prefix="vrssh-"))
        self.transports: dict[str, SshTransport] = {}
        self._guard = threading.Lock()

    def transport(self, target: SshTarget, pinned_key: str | None, pin: Callable[[str], None]) -> SshTransport:
        with self._guard:
            return self._transport(target, pinned_key, pin)

    def _transport(self, target: SshTarget, pinned_key: str | None, pin: Callable[[str], None]) -> SshTransport:
        current = self.transports.get(target.name)
        if current is None or current.target != target or current.pinned_key != pinned_key:
            self.hypervisor_known_hosts.touch()
            current = SshTransport(
                target, self.key_file, self.work_dir, pinned_key, pin, self.hypervisor_known_hosts, self.options
            )
            self.transports[target.name] = current
        return current

    def forget(self, name: str) -> None:
        with self._guard:
            transport = self.transports.pop(name, None)
        if transport is not None:
            transport.close()

    def close(self) -> None:
        for name in list(self.transports):
            self.forget(name)
        shutil.rmtree(self.work_dir, ignore_errors=True)


def ensure_key(path: Path | str) -> Path:
    """The manager's SSH key pair (ed25519), made once, also when routers are created in parallel (threads
    or processes): the first one makes it under a lock, the others find it made."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _KEY_GUARD, open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vrpipe-manager", "-f", str(path)])
    return path
