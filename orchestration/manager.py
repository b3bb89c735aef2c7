"""The manager: one code path for every router whatever runs it. It keeps each router's desired state in the
store, sends changes through the routing resource (per command or aggregated) under the router's lock,
records them once the router applied them, and on start gives the router a full replay of its state.
"""

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from vr import contract

from orchestration import commands as cmds
from orchestration.commands import Command, Query
from orchestration.deployers.base import CONTROL_DEVICE, CONTROL_PREFIX, Boot
from orchestration.deployers.container import ContainerConfig, ContainerDeployer
from orchestration.deployers.hostnet import control_address
from orchestration.deployers.qemu import QemuConfig, QemuDeployer
from orchestration.resource import RoutingResource
from orchestration.store import Store
from orchestration.transports import JumpHost, SshConnections, SshOptions, SshTarget, TransportError, ensure_key
from vrpipe.errors import VrpipeError

log = logging.getLogger("vrpipe.manager")
CONFIG_FILE = "config.json"


class ReplayFailed(VrpipeError):
    pass


@dataclass(frozen=True)
class ManagerConfig:
    """Where the manager keeps things and how it reaches routers; validated once, here."""

    state_dir: Path
    database: str = ""  # SQLAlchemy URL; default: an SQLite file in state_dir
    rootfs: Path | None = None  # the template rootfs the container deployer boots
    image: Path | None = None  # the template qcow2 the qemu deployer boots
    accel: str = "tcg"  # the qemu deployer's accelerator
    host_netns: str = "vrpipe-hv"  # the namespace playing the hypervisor host (control bridge)
    ssh_netns: str | None = "vrpipe-hv"  # where ssh runs; None: this host's own network
    netns_prefix: str = "vrp-"
    lock_timeout: float = 120.0
    ssh: SshOptions = field(default_factory=SshOptions)

    def __post_init__(self):
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if not self.database:
            object.__setattr__(self, "database", f"sqlite:///{self.state_dir / 'vrpipe.db'}")
        for name in ("rootfs", "image"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.accel not in ("tcg", "kvm"):
            raise ValueError(f"accel {self.accel!r}: use tcg or kvm")
        if not self.database.startswith(("sqlite:", "postgresql")):
            raise ValueError(f"database {self.database!r}: use sqlite:///PATH or postgresql+psycopg://...")

    @classmethod
    def load(cls, state_dir, **overrides):
        """The settings saved in state_dir (by `invoke lab`, or `save()`), then the overrides given."""
        path = Path(state_dir) / CONFIG_FILE
        saved = json.loads(path.read_text()) if path.exists() else {}
        values = {**saved, **{k: v for k, v in overrides.items() if v is not None}}
        known = set(cls.__dataclass_fields__) - {"state_dir", "ssh"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        return cls(Path(state_dir), **values)

    def save(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "database": self.database,
            "host_netns": self.host_netns,
            "ssh_netns": self.ssh_netns,
            "netns_prefix": self.netns_prefix,
            "accel": self.accel,
            **{name: str(getattr(self, name)) for name in ("rootfs", "image") if getattr(self, name)},
        }
        (self.state_dir / CONFIG_FILE).write_text(json.dumps(values, indent=1) + "\n")


class Manager:
    def __init__(self, config):
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(config.database)
        self.key = ensure_key(config.state_dir / "id_ed25519")
        self.connections = SshConnections(self.key, config.state_dir / "hypervisors.known_hosts", config.ssh)
        self.resource = RoutingResource(self.transport)
        self._deployers = {}

    def close(self):
        self.connections.close()
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # reaching routers

    def transport(self, name):
        router = self.store.router(name)
        jump = JumpHost.parse(router.jump_host) if router.jump_host else None
        target = SshTarget(name, router.control_address, jump=jump, netns=self.config.ssh_netns)
        return self.connections.transport(target, router.host_key, lambda key: self.store.pin_host_key(name, key))

    def deployer(self, kind):
        if kind not in self._deployers:
            self._deployers[kind] = self._make_deployer(kind)
        return self._deployers[kind]

    def _make_deployer(self, kind):
        config = self.config
        if kind == "container":
            if config.rootfs is None:
                raise ValueError("the container deployer needs the template's rootfs (--rootfs)")
            settings = ContainerConfig(
                config.rootfs, config.state_dir / "containers", config.host_netns, config.netns_prefix
            )
            return ContainerDeployer(settings, self.transport)
        if kind == "qemu":
            if config.image is None:
                raise ValueError("the qemu deployer needs the template's qcow2 (--image)")
            settings = QemuConfig(config.image, config.state_dir / "vms", config.host_netns, accel=config.accel)
            return QemuDeployer(settings, self.transport)
        raise ValueError(f"unknown deployer {kind!r}: container or qemu")

    # lifecycle

    def create(self, name, networks=(), deployer="container", jump_host=None):
        """A router in the store (with its control interface as desired state) and on its deployer."""
        if jump_host:
            JumpHost.parse(jump_host)
        router = self.store.add_router(name, deployer, control_address, networks, jump_host)
        address = router.control_address
        control = {"control": {"device": CONTROL_DEVICE, "address": f"{address}/{CONTROL_PREFIX}"}}
        self.store.record(name, cmds.validate([Command("add", "interfaces", control)], {}))
        public_key = Path(f"{self.key}.pub").read_text().strip()
        self.deployer(deployer).create(router, Boot(name, address, public_key))
        return router

    def start(self, name, progress=lambda message: None):
        """Boot the router, wait for it to answer, and replay its whole desired state."""
        router = self.store.router(name)
        self.connections.forget(name)
        self.deployer(router.deployer).start(router)
        progress(f"{name}: booting")
        self.wait_ready(name)
        progress(f"{name}: replaying its state")
        return self.replay(name)

    def wait_ready(self, name):
        router = self.store.router(name)
        timeout = self.deployer(router.deployer).boot_timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _ = self.transport(name).execute(["test", "-e", contract.READY_FILE])
                if status == 0:
                    return
            except TransportError as err:
                if "host key" in str(err) or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"router {name} did not become ready within {timeout:.0f}s")
            time.sleep(0.5)

    def stop(self, name):
        router = self.store.router(name)
        self.deployer(router.deployer).stop(router)
        self.connections.forget(name)

    def destroy(self, name):
        router = self.store.router(name)
        self.deployer(router.deployer).destroy(router)
        self.connections.forget(name)
        self.store.remove_router(name)

    def running(self, name):
        router = self.store.router(name)
        return self.deployer(router.deployer).running(router)

    # desired state

    def apply(self, name, commands, aggregate=True):
        """Check the commands against the desired state, send them to the router, and record those the
        router applied. Aggregated: all or nothing (the Outcome names a bad command); per command: each
        on its own. Returns the Outcome (aggregated) or the list of Answers (per command)."""
        commands = [self._with_control(name, c) for c in commands]
        with self.store.lock(name, self.config.lock_timeout):
            parsed = cmds.validate(commands, self.store.state(name))
            if not aggregate:
                return self._per_command(name, commands, parsed)
            self.resource.start(name)
            try:
                for command in commands:
                    self.resource.execute(name, command)
                outcome = self.resource.finish(name)
            finally:
                if self.resource.is_open(name):
                    self.resource.cleanup(name)
            if outcome.ok:
                self.store.record(name, parsed)
            log.info("router %s: %d commands aggregated: %s", name, len(commands), outcome.error or "applied")
            return outcome

    def _per_command(self, name, commands, parsed):
        answers = []
        for command, engine_command in zip(commands, parsed, strict=True):
            answer = self.resource.execute(name, command)
            if answer.ok:
                self.store.record(name, [engine_command])
            answers.append(answer)
        return answers

    def _with_control(self, name, command):
        """An `interfaces` command keeps the router's control interface unless it names one itself:
        without it the router's firewall would lock its manager out."""
        if command.type != "interfaces" or "control" in command.data:
            return command
        router = self.store.router(name)
        control = {"device": CONTROL_DEVICE, "address": f"{router.control_address}/{CONTROL_PREFIX}"}
        return replace(command, data={**command.data, "control": control})

    def replay(self, name):
        """Full replay: the router's whole desired state as one aggregated apply, then its health."""
        with self.store.lock(name, self.config.lock_timeout):
            started = time.monotonic()
            outcome = self.resource.apply_state(name, self.store.state(name))
            log.info("router %s: full replay in %.2fs: %s", name, time.monotonic() - started, outcome.error or "ok")
            if not outcome.ok:
                raise ReplayFailed(f"router {name}: replay failed: {outcome.error}")
            health = self.query(name, Query.HEALTH)
            if not health.get("ok"):
                raise ReplayFailed(f"router {name}: unhealthy after replay: {'; '.join(health.get('problems', []))}")
            return outcome

    def query(self, name, query):
        return self.resource.query(name, query)
