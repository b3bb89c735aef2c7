"""`invoke bench-apply`: end to end from the manager to routers running as system containers. A full
replay of N VMs (a DHCP entry, a metadata set, a port forward and a firewall rule each) as one aggregated
apply, against a bounded sample of the same kinds of commands sent one by one (per-command mode), then a
replay of many routers in parallel. The last line is `replay_<N>_vms_s=<s> speedup=<x>`. With
`deployer="libvirt"`: one libvirt router (TCG, libvirtd started in the lab's host namespace) beside one
container router, each timed from create to ready and for a full replay of N VMs.
"""

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from orchestration.commands import Command, validate
from orchestration.deployers.hostnet import ensure_host
from orchestration.fleet import for_each
from orchestration.lab import workload
from orchestration.lab.lab import PROJECT, Lab, lab_config
from orchestration.lab.libvirt_host import remove_pool, start_libvirt, stop_libvirt
from orchestration.manager import Manager
from orchestration.resource import ApplyOutcome
from orchestration.store import Router
from vrpipe.errors import VrpipeError, shown

PREFIX = "vrbench-"
Result = TypeVar("Result")


def _state_commands(router: Router, vms: int) -> list[Command]:
    interfaces = workload.interfaces(control_ip=router.control_address)
    commands = [Command("add", "interfaces", interfaces)]
    return commands + [Command(**c) for c in workload.vm_commands(range(vms))]


def _store_state(manager: Manager, name: str, vms: int) -> None:
    """The router's desired state of `vms` VMs, put in the store directly (as if built up over time)."""
    commands = _state_commands(manager.store.router(name), vms)
    manager.store.record(name, validate(commands, manager.store.state(name)))


def _timed(action: Callable[[], Result]) -> tuple[float, Result]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def bench_apply(
    vms: int = 1000,
    sample: int = 400,
    routers: int = 20,
    rootfs: Path | str | None = None,
    deployer: str = "container",
    image: Path | str | None = None,
    prefix: str = PREFIX,
) -> bool:
    """Print the measurements; return False if any apply or replay failed. `prefix` names the lab's
    namespaces (and storage pool), so that two runs on one machine never meet."""
    if deployer not in ("container", "libvirt"):
        raise VrpipeError(
            f"deployer {shown(deployer)}: bench-apply compares container routers, or a libvirt one with one"
        )
    state_dir = tempfile.mkdtemp(prefix="vrpipe-bench-")
    try:
        config = lab_config(rootfs, state_dir, prefix)
        if deployer == "libvirt":
            config = dataclasses.replace(config, image=_image(image), libvirt_pool=f"{prefix}pool",
                                         libvirt_pool_dir=Path(state_dir) / "pool")
    except VrpipeError:
        shutil.rmtree(state_dir)
        raise
    items = 4 * vms
    kinds = f"a libvirt router from {config.image} beside a system container" if deployer == "libvirt" else (
        "routers as system containers")
    print(f"bench-apply: {kinds} from {config.rootfs}; a state of {vms} VMs = {items} items")
    try:
        with Manager(config) as manager:
            lab = Lab(manager, prefix)
            try:
                if deployer == "libvirt":
                    return _beside(manager, lab, vms)
                return _run(manager, lab, vms, sample, routers, items)
            finally:
                lab.down()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _image(image: Path | str | None) -> Path:
    path = Path(image) if image else PROJECT / "build" / "template" / "vr-router.qcow2"
    if not path.is_file():
        raise VrpipeError(f"{path} is not a file", hint="build the template (invoke build-template) or pass --image")
    return path


def _beside(manager: Manager, lab: Lab, vms: int) -> bool:
    """One libvirt router and one container router: create to ready, then a full replay of `vms` VMs."""
    assert lab.host is not None, "the lab has a host namespace"
    ensure_host(lab.host)  # where libvirtd runs
    daemons = start_libvirt(lab.host)
    figures: dict[str, float] = {}
    try:
        for kind in ("container", "libvirt"):
            ready, replay = _create_and_replay(manager, lab, kind, vms)
            print(f"{kind:<9} router: create to ready {ready:7.3f} s, full replay of {vms} VMs {replay:7.3f} s")
            figures |= {f"{kind}_ready_s": ready, f"{kind}_replay_{vms}_vms_s": replay}
    finally:
        for router in manager.store.routers():
            manager.destroy(router.name)
        remove_pool(manager.config.libvirt_pool)
        stop_libvirt(daemons)
    print("bench-apply: ok")
    print(" ".join(f"{key}={value:.3f}" for key, value in figures.items()))
    return True


def _create_and_replay(manager: Manager, lab: Lab, kind: str, vms: int) -> tuple[float, float]:
    """Seconds from create until the router is ready (booted, its empty state replayed), then for a full
    replay of `vms` VMs; the router is destroyed afterwards."""
    name = f"b{kind[0]}"
    ready, _ = _timed(lambda: (lab.create_router(name, deployer=kind), manager.start(name)))
    _store_state(manager, name, vms)
    replay, _ = _timed(lambda: manager.replay(name))
    manager.destroy(name)
    return ready, replay


def _run(manager: Manager, lab: Lab, vms: int, sample: int, routers: int, items: int) -> bool:
    lab.create_router("b0")
    manager.start("b0")
    _store_state(manager, "b0", vms)
    cold, outcome = _timed(lambda: manager.replay("b0"))
    print(f"full replay, router without the state  {cold:7.3f} s  (router apply {_engine_seconds(outcome):.3f} s)")
    warm, _ = _timed(lambda: manager.replay("b0"))
    print(f"full replay, router already has it     {warm:7.3f} s")

    per_vm = sample // 4
    sampled = [Command(**c) for c in workload.vm_commands(range(vms, vms + per_vm))]
    print(
        f"per-command mode: a bounded sample of {len(sampled)} commands ({per_vm} each of dhcp, vm_data, "
        f"port_forwarding, firewall), one vr-cmd run over SSH each, on the router holding {items} items"
    )
    per_command, answers = _timed(lambda: manager.apply("b0", sampled, aggregate=False))
    each = per_command / len(sampled)
    print(f"per-command mode                       {per_command:7.3f} s  = {each * 1000:.1f} ms per command")
    more = [Command(**c) for c in workload.vm_commands(range(vms + per_vm, vms + 2 * per_vm))]
    aggregated, batch = _timed(lambda: manager.apply("b0", more))
    print(f"the same number of commands aggregated {aggregated:7.3f} s")
    extrapolated = each * items
    print(f"{items} commands one by one would take about {extrapolated:.0f} s (sample time per command x {items})")
    ok = all(a.ok for a in answers) and batch.ok

    names = [f"p{i}" for i in range(1, routers + 1)]
    for name in names:
        lab.create_router(name)
        _store_state(manager, name, vms)
    booted = for_each(names, manager.start, 4, lambda message: None)
    parallel, replayed = _timed(lambda: for_each(names, manager.replay, routers))
    failures = {n: e for n, e in (*booted.items(), *replayed.items()) if e}
    print(f"{routers} routers of {vms} VMs each replayed in parallel: {parallel:.3f} s ({len(failures)} failed)")
    for name, error in failures.items():
        print(f"  {name}: {error}")
    ok = ok and not failures
    print(f"bench-apply: {'ok' if ok else 'FAILED'}")
    print(f"replay_{vms}_vms_s={cold:.3f} speedup={extrapolated / cold:.0f}")
    return ok


def _engine_seconds(outcome: ApplyOutcome) -> float:
    return sum(outcome.result.get("timings", {}).values())
