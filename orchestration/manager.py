"""The manager: one code path for every router whatever runs it. It keeps each router's desired state in the
store, sends changes through the routing resource (per command or aggregated) under the router's lock,
records them once the router applied them, and on start gives the router a full replay of its state.
A redundant pair is one name for two member routers: one desired state, sent alike to each member that
runs (each with its own control address), recorded once; start, stop and destroy act on both.
"""

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, overload

from vr import contract
from vr.document import CheckedCommand

from orchestration import commands as cmds
from orchestration import pairing
from orchestration.commands import Command, Query
from orchestration.deployers.base import CONTROL_DEVICE, CONTROL_PREFIX, Boot, Deployer
from orchestration.deployers.container import ContainerConfig, ContainerDeployer
from orchestration.deployers.hostnet import control_address
from orchestration.deployers.libvirt import LibvirtConfig, LibvirtDeployer, hypervisor_of, is_local
from orchestration.deployers.qemu import QemuConfig, QemuDeployer
from orchestration.resource import Answer, ApplyOutcome, RoutingResource
from orchestration.settings import ManagerConfig
from orchestration.store import Network, Pair, Router, Store
from orchestration.transports import JumpHost, SshConnections, SshTarget, SshTransport, TransportError, ensure_key
from vrpipe.errors import SettingsError, VrpipeError, shown

log = logging.getLogger("vrpipe.manager")


class ReplayFailed(VrpipeError):
    pass


DEPLOYERS = ("container", "qemu", "libvirt")
# A hostname label, short enough for the router's namespace and interface names derived from it.
ROUTER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")
PAIR_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?")  # its members' names add -a and -b


def _check_name(name: str, pattern: re.Pattern[str], longest: int) -> None:
    if not pattern.fullmatch(name):
        raise SettingsError(
            f"router name {shown(name)} is not valid",
            hint=f"1-{longest} lower-case letters, digits and '-', starting with a letter or digit "
            "(it is the hostname)",
        )


class Manager:
    """Opening a manager changes nothing: the state directory, its SSH key and an SQLite store are made by
    the first command that changes something (`create`)."""

    def __init__(self, config: ManagerConfig):
        self.config = config
        self.key = config.state_dir / "id_ed25519"
        self.connections = SshConnections(self.key, config.state_dir / "hypervisors.known_hosts", config.ssh)
        self.resource = RoutingResource(self.transport)
        self._deployers: dict[tuple[str, tuple[tuple[str, str], ...]], Deployer] = {}

    @functools.cached_property
    def store(self) -> Store:
        if self.config.sqlite_file is not None and self.config.sqlite_file.parent == self.config.state_dir:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
        return Store(self.config.database)

    def close(self) -> None:
        self.connections.close()
        if "store" in self.__dict__:
            self.store.close()

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reaching routers

    def transport(self, name: str) -> SshTransport:
        router = self.store.router(name)
        jump = JumpHost.parse(router.jump_host) if router.jump_host else None
        target = SshTarget(name, router.control_address, jump=jump, netns=self.config.ssh_netns)
        return self.connections.transport(target, router.host_key, lambda key: self.store.pin_host_key(name, key))

    def deployer(self, router: Router) -> Deployer:
        """The deployer of this router, with the settings it was created with."""
        key = (router.deployer, tuple(sorted(router.settings.items())))
        if key not in self._deployers:
            self._deployers[key] = self._make_deployer(router.deployer, router.settings)
        return self._deployers[key]

    def _make_deployer(self, kind: str, settings: dict[str, str]) -> Deployer:
        config = self.config
        if kind == "container":
            container = ContainerConfig(
                Path(settings["rootfs"]), config.state_dir / "containers", config.host_netns, config.netns_prefix
            )
            return ContainerDeployer(container, self.transport)
        if kind == "qemu":
            qemu = QemuConfig(Path(settings["image"]), config.state_dir / "vms", config.host_netns,
                              accel=settings.get("accel", "tcg"))
            return QemuDeployer(qemu, self.transport)
        if kind == "libvirt":
            libvirt = LibvirtConfig(
                Path(settings["image"]), settings["host"], config.host_netns, settings["pool"],
                Path(settings["pool_dir"]), accel=settings.get("accel", "tcg"),
            )
            return LibvirtDeployer(libvirt, self.transport)
        raise SettingsError(f"unknown deployer {shown(kind)}: use {' or '.join(DEPLOYERS)}")

    def _deployer_settings(self, kind: str, host: str | None = None) -> dict[str, str]:
        """What a new router of this kind is made from (and, through libvirt, on which host), checked now
        and kept with it in the store."""
        config = self.config
        if host is not None and kind != "libvirt":
            raise SettingsError(f"a {kind} router runs on this machine: --host is for libvirt routers")
        if kind == "container":
            if config.rootfs is None:
                raise SettingsError("a container router needs the template's rootfs", hint="pass --rootfs DIR")
            settings = {"rootfs": str(config.rootfs.resolve())}
        elif kind == "qemu":
            if config.image is None:
                raise SettingsError("a qemu router needs the template's qcow2", hint="pass --image FILE")
            settings = {"image": str(config.image.resolve()), "accel": config.accel}
        elif kind == "libvirt":
            if config.image is None:
                raise SettingsError("a libvirt router needs the template's qcow2", hint="pass --image FILE")
            host = host or config.libvirt_uri
            settings = {
                # a remote host's path is the host's: nothing to resolve here
                "image": str(config.image.resolve() if is_local(host) else config.image),
                "host": host,
                "pool": config.libvirt_pool,
                "pool_dir": str(config.libvirt_pool_dir),
                "accel": config.accel,
            }
        else:
            raise SettingsError(f"unknown deployer {shown(kind)}: use {' or '.join(DEPLOYERS)}")
        self._make_deployer(kind, settings)  # a missing rootfs or image fails here, before the store changes
        return settings

    # lifecycle

    def create(
        self,
        name: str,
        networks: Iterable[Network] = (),
        deployer: str = "container",
        jump_host: str | None = None,
        host: str | None = None,
    ) -> Router:
        """A router in the store (with its control interface as desired state) and on its deployer; `host`
        is the libvirt URI of the host a libvirt router runs on (reached through it unless `jump_host`)."""
        _check_name(name, ROUTER_NAME, 24)
        settings, jump_host = self._placement(deployer, jump_host, host)
        return self._add(name, list(networks), deployer, jump_host, settings)

    def create_pair(
        self,
        name: str,
        networks: Iterable[Network] = (),
        deployer: str = "container",
        jump_host: str | None = None,
        host: str | None = None,
    ) -> Pair:
        """A redundant pair `name`: members `name`-a and `name`-b, each with `networks` and a sync link the
        manager chooses (pairing.py), and the pair's `redundancy` section as desired state."""
        _check_name(name, PAIR_NAME, 22)
        settings, jump_host = self._placement(deployer, jump_host, host)
        networks = list(networks)
        pair = self.store.add_pair(name, pairing.member_names(name), pairing.sync_link)
        device = pairing.sync_device(networks)
        made: list[Router] = []
        try:
            for member, letter in zip(pair.members, pairing.MEMBERS, strict=True):
                member_networks = [*networks, Network(device, pair.sync_bridge)]
                made.append(self._add(member, member_networks, deployer, jump_host, settings, (pair.id, letter)))
            redundancy = pairing.redundancy(pair.id, pair.members, device, pair.sync_network)
            self.store.record(name, cmds.validate([redundancy], self.store.state(name)))
        except Exception:
            for router in made:  # nothing half-made: neither member nor the pair stays
                self.deployer(router).destroy(router)
            self.store.remove_pair(name)
            raise
        return pair

    def _placement(self, deployer: str, jump_host: str | None, host: str | None) -> tuple[dict[str, str], str | None]:
        """The deployer settings of a new router and the jump host that reaches it."""
        settings = self._deployer_settings(deployer, host)
        jump_host = jump_host or (hypervisor_of(settings["host"]) if deployer == "libvirt" else None)
        if jump_host:
            JumpHost.parse(jump_host)
        return settings, jump_host

    def _add(
        self,
        name: str,
        networks: list[Network],
        deployer: str,
        jump_host: str | None,
        settings: dict[str, str],
        member_of: tuple[int, str] | None = None,
    ) -> Router:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_key(self.key)
        router = self.store.add_router(name, deployer, control_address, networks, jump_host, settings, member_of)
        if member_of is None or member_of[1] == pairing.MEMBERS[0]:  # a pair's state is kept with member a
            control = Command("add", "interfaces", {"control": self._control(router)})
            self.store.record(name, cmds.validate([control], {}))
        try:
            self._create_instance(router)
        except Exception:
            self.store.remove_router(name)  # nothing half-made: no store row without its router
            raise
        return router

    def members(self, name: str) -> tuple[str, ...]:
        """The routers behind a name: a pair's two members, or the router itself."""
        pair = self.store.pair(name)
        return pair.members if pair else (name,)

    def _logical(self, name: str) -> str:
        """The name whose desired state this router runs: its pair's for a member, else its own."""
        if self.store.pair(name) is not None:
            return name
        return self.store.router(name).pair or name

    def _serving(self, name: str) -> tuple[str, ...]:
        """Where a change to this router or pair goes: every member that runs (a stopped one gets it all
        with its start's replay), or, when none runs, the router itself or both members."""
        members = self.members(name)
        running = tuple(m for m in members if self.store.router(m).status == "running")
        return running if len(members) > 1 and running else members

    def _create_instance(self, router: Router) -> None:
        public_key = Path(f"{self.key}.pub").read_text().strip()
        self.deployer(router).create(router, Boot(router.name, router.control_address, public_key))

    def start(self, name: str, progress: Callable[[str], None] = lambda message: None) -> ApplyOutcome:
        """Boot the router (a pair's members, one after the other), wait for it to answer, and replay its
        whole desired state."""
        if self.store.pair(name) is not None:
            outcomes = [self.start(member, progress) for member in self.members(name)]
            return outcomes[-1]
        router = self.store.router(name)
        self.connections.forget(name)
        self.deployer(router).start(router)
        self.store.set_status(name, "running")
        progress(f"{name}: booting")
        self.wait_ready(name)
        progress(f"{name}: replaying its state")
        return self.replay(name)

    def wait_ready(self, name: str) -> None:
        router = self.store.router(name)
        timeout = self.deployer(router).boot_timeout
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
                raise VrpipeError(
                    f"router {name} did not become ready within {timeout:.0f}s",
                    hint="its console log is in the state directory (containers/ or vms/)",
                )
            time.sleep(0.5)

    def stop(self, name: str) -> None:
        if self.store.pair(name) is not None:
            for member in self.members(name):
                self.stop(member)
            return
        router = self.store.router(name)
        self.deployer(router).stop(router)
        self.connections.forget(name)
        self.store.set_status(name, "stopped")

    def destroy(self, name: str) -> int:
        """Remove the router (a pair: both members) and its desired state (every rule) from the store;
        returns how many rules went."""
        rules = self.rule_count(name)
        if self.store.pair(name) is not None:
            for member in self.members(name):
                router = self.store.router(member)
                self.deployer(router).destroy(router)
                self.connections.forget(member)
            self.store.remove_pair(name)
            return rules
        router = self.store.router(name)
        if router.pair:
            raise SettingsError(f"{name} is a member of the pair {router.pair}",
                                hint=f"destroy the pair (vrpipe destroy {router.pair}), or recreate {name}")
        self.deployer(router).destroy(router)
        self.connections.forget(name)
        self.store.remove_router(name)
        return rules

    def recreate(self, name: str, progress: Callable[[str], None] = lambda message: None) -> ApplyOutcome:
        """A new router from the template in place of the old one (CloudStack's restart with cleanup): same
        name, control address and settings, its whole desired state replayed; DHCP leases carried over.
        A member of a pair is recreated alone while the other serves, and rejoins as BACKUP (no preemption)."""
        pair = self.store.pair(name)
        if pair is not None:
            raise SettingsError(f"{name} is a pair: recreate one member at a time, while the other serves",
                                hint=f"vrpipe recreate {pair.members[1]}")
        router = self.store.router(name)
        leases = self._leases(name) if self.running(name) else None
        progress(f"{name}: destroying the old router" + (" (leases kept)" if leases else ""))
        deployer = self.deployer(router)
        deployer.destroy(router)
        self.connections.forget(name)
        self.store.forget_host_key(name)  # the new router makes new host keys
        self._create_instance(router)
        deployer.start(router)
        self.store.set_status(name, "running")
        progress(f"{name}: booting")
        self.wait_ready(name)
        if leases:
            deployer.copy(router, leases, contract.LEASES_FILE)
        progress(f"{name}: replaying its state")
        return self.replay(name)

    def _leases(self, name: str) -> str | None:
        try:
            status, out = self.transport(name).execute(["cat", contract.LEASES_FILE])
        except TransportError:
            return None
        return out if status == 0 and out.strip() else None

    def running(self, name: str) -> bool:
        router = self.store.router(name)
        return self.deployer(router).running(router)

    def rule_count(self, name: str) -> int:
        return sum(len(v) for v in self.store.state(name).values() if isinstance(v, list))

    # NICs

    def plug(self, name: str, network: Network) -> Router:
        """Give the router a NIC on `network.bridge`: at once if it runs (its deployer hot-plugs), at its
        next start otherwise; kept in the store. A guest network on it is then an `interfaces` command."""
        with self.store.lock(name, self.config.lock_timeout):
            router = self.store.router(name)
            if network.device == CONTROL_DEVICE or any(n.device == network.device for n in router.networks):
                raise SettingsError(f"router {name} already has a NIC {network.device}", hint="name another device")
            deployer = self._plugging(router)
            plugged = self.store.set_networks(name, [*router.networks, network])
            if deployer.hot_plug:
                try:
                    deployer.prepare(plugged, network)
                except Exception:
                    self.store.set_networks(name, router.networks)
                    raise
            log.info("router %s: %s plugged into %s", name, network.device, network.bridge)
            return plugged

    def unplug(self, name: str, device: str) -> Router:
        """Take a NIC off the router (once the guest has let it go, when it runs). Refused while its
        desired interfaces still put a guest network or public address on it."""
        with self.store.lock(name, self.config.lock_timeout):
            router = self.store.router(name)
            network = next((n for n in router.networks if n.device == device), None)
            if network is None:
                devices = ", ".join(n.device for n in router.networks) or "none"
                raise SettingsError(f"router {name} has no NIC {device} to unplug (its NICs: {devices}; "
                                    f"{CONTROL_DEVICE} is the control network and stays)")
            interfaces = self.store.state(name).get("interfaces") or {}
            if any(i.get("device") == device for i in (*interfaces.get("guests", ()), *interfaces.get("public", ()))):
                raise SettingsError(
                    f"router {name}: {device} still carries a guest network or public address",
                    hint="send an interfaces command without it first (vrpipe add NAME interfaces ...)",
                )
            deployer = self._plugging(router)
            if deployer.hot_plug:
                deployer.cleanup(router, network)
            log.info("router %s: %s unplugged", name, device)
            return self.store.set_networks(name, [n for n in router.networks if n != network])

    def _plugging(self, router: Router) -> Deployer:
        deployer = self.deployer(router)
        if not deployer.hot_plug and deployer.running(router):
            raise SettingsError(
                f"router {router.name} runs as a {router.deployer} router, whose NICs change only while it is stopped",
                hint=f"vrpipe stop {router.name} first (or use a libvirt router)",
            )
        return deployer

    # desired state

    @overload
    def apply(self, name: str, commands: Iterable[Command], aggregate: Literal[True] = True) -> ApplyOutcome: ...

    @overload
    def apply(self, name: str, commands: Iterable[Command], aggregate: Literal[False]) -> list[Answer]: ...

    def apply(self, name: str, commands: Iterable[Command], aggregate: bool = True) -> ApplyOutcome | list[Answer]:
        """Check the commands against the desired state, send them to the router, and record those the
        router applied. Aggregated: all or nothing (the ApplyOutcome names a bad command); per command: each
        on its own. Returns the ApplyOutcome (aggregated) or the list of Answers (per command).
        A pair (or a member's name: its pair) gets the same commands on each running member, each with its own
        control address: the first member that answers leads (its refusal stops there, nothing recorded),
        what it applied is recorded once and sent to the other; a member that did not take it is an error
        naming it, once recorded (a replay of that member catches it up)."""
        name = self._logical(name)
        pair = len(self.members(name)) > 1
        commands = [self._with_control(self.members(name)[0], c) for c in commands]  # as the store keeps them
        with self.store.lock(name, self.config.lock_timeout):
            parsed = cmds.validate(commands, self.store.state(name))
            targets, missed = list(self._serving(name)), []
            while True:
                leader = targets.pop(0)
                own = [self._with_control(leader, c, replace_given=pair) for c in commands]
                try:
                    result = self._lead(name, leader, own, parsed, aggregate)
                    break
                except TransportError as err:
                    if not targets:
                        raise
                    missed.append(f"{leader} ({err})")
            applied = [c for c, a in zip(commands, result, strict=True) if a.ok] if isinstance(result, list) else (
                commands if result.ok else [])
            if applied:
                missed += [m for m in targets if not self._catch_up(m, applied, aggregate)]
            if missed:
                raise VrpipeError(f"pair {name}: recorded, but not taken by {', '.join(missed)}",
                                  hint="vrpipe replay (or recreate) that member once it answers")
            return result

    def _lead(self, name: str, member: str, commands: Sequence[Command], parsed: Sequence[CheckedCommand],
              aggregate: bool) -> ApplyOutcome | list[Answer]:
        """Send to the (first) router and record what it applied."""
        if not aggregate:
            return self._per_command(name, member, commands, parsed)
        outcome = self._aggregated(member, commands)
        if outcome.ok:
            self.store.record(name, parsed)
        return outcome

    def _aggregated(self, name: str, commands: Sequence[Command]) -> ApplyOutcome:
        self.resource.start(name)
        try:
            for command in commands:
                self.resource.execute(name, command)
            outcome = self.resource.finish(name)
        finally:
            if self.resource.is_open(name):
                self.resource.cleanup(name)
        log.info("router %s: %d commands aggregated: %s", name, len(commands), outcome.error or "applied")
        return outcome

    def _catch_up(self, member: str, commands: Sequence[Command], aggregate: bool) -> bool:
        """The other member of a pair takes what the first applied (and the store recorded), with its own
        control address; False when it did not (logged)."""
        own = [self._with_control(member, c, replace_given=True) for c in commands]
        try:
            if aggregate:
                outcome = self._aggregated(member, own)
                error = None if outcome.ok else outcome.error or "refused"
            else:
                error = next((a.error for a in (self.resource.execute(member, c) for c in own) if not a.ok), None)
        except VrpipeError as err:
            error = str(err)
        if error:
            log.warning("router %s did not take what its pair recorded: %s", member, error)
        return error is None

    def _per_command(self, name: str, member: str, commands: Sequence[Command],
                     parsed: Sequence[CheckedCommand]) -> list[Answer]:
        answers = []
        for command, engine_command in zip(commands, parsed, strict=True):
            answer = self.resource.execute(member, command)
            if answer.ok:
                self.store.record(name, [engine_command])
            answers.append(answer)
        return answers

    def _control(self, router: Router) -> dict[str, str]:
        return {"device": CONTROL_DEVICE, "address": f"{router.control_address}/{CONTROL_PREFIX}"}

    def _with_control(self, name: str, command: Command, replace_given: bool = False) -> Command:
        """An `interfaces` command keeps the router's control interface unless it names one itself:
        without it the router's firewall would lock its manager out. A pair's second member gets its own
        (`replace_given`) in place of the first's."""
        if command.type != "interfaces" or ("control" in command.data and not replace_given):
            return command
        return replace(command, data={**command.data, "control": self._control(self.store.router(name))})

    def member_state(self, name: str) -> dict[str, Any]:
        """The desired state this router runs: a member's is its pair's, with its own control address."""
        state = self.store.state(name)
        router = self.store.router(name)
        if router.pair:
            state["interfaces"] = {**(state.get("interfaces") or {}), "control": self._control(router)}
        return state

    def replay(self, name: str) -> ApplyOutcome:
        """Full replay: the router's whole desired state as one aggregated apply, then its health. A pair:
        each running member, one after the other."""
        targets = self._serving(name) if self.store.pair(name) is not None else (name,)
        with self.store.lock(self._logical(name), self.config.lock_timeout):
            outcomes = [self._replay_one(member) for member in targets]
            return outcomes[-1]

    def _replay_one(self, name: str) -> ApplyOutcome:
        started = time.monotonic()
        outcome = self.resource.apply_state(name, self.member_state(name))
        log.info("router %s: full replay in %.2fs: %s", name, time.monotonic() - started, outcome.error or "ok")
        if not outcome.ok:
            raise ReplayFailed(f"router {name}: replay failed: {outcome.error}")
        health = self._healthy_within(name, self.config.replay_health_wait)
        if not health.get("ok"):
            raise ReplayFailed(f"router {name}: unhealthy after replay: {'; '.join(health.get('problems', []))}")
        return outcome

    def _healthy_within(self, name: str, wait: float) -> dict[str, Any]:
        """The router's health once it is ok, or its last answer after `wait` seconds: dnsmasq binds a
        new address when the kernel announces it, so a router just booted answers a moment after its apply."""
        deadline = time.monotonic() + wait
        while not (health := self.query(name, Query.HEALTH)).get("ok") and time.monotonic() < deadline:
            log.info("router %s: not yet healthy after replay: %s", name, "; ".join(health.get("problems", [])))
            time.sleep(1.0)
        return health

    def query(self, name: str, query: Query) -> dict[str, Any]:
        return self.resource.query(name, query)
