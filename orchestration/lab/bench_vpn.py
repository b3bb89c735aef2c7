"""`invoke bench-vpn`: two lab routers as two sites joined by IPsec (libipsec, as container routers need).
Measures how long the tunnel takes to carry traffic after both sites are applied, TCP throughput from the
VM at site A to the one at site B, and the traffic lost (a 10 ms ping through the tunnel) while site A
upgrades strongSwan in place (its packages installed again with dpkg, maintainer scripts and service
restart included). Last line: tunnel_up_s=<s> upgrade_outage_s=<s> throughput_mbit=<n>.
"""

import base64
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from image.config import load_config
from orchestration.lab.lab import Lab, throwaway_lab
from orchestration.lab.upgrade_lab import serve
from orchestration.lab.vpn_lab import SITES, add_site, site_commands, vm_ip
from orchestration.manager import Manager
from vrpipe.errors import VrpipeError
from vrpipe.run import run, spawn

PROJECT = Path(__file__).resolve().parents[2]
STRONGSWAN = ("libstrongswan", "strongswan-libcharon", "strongswan-swanctl", "charon-systemd",
              "libcharon-extra-plugins", "libcharon-extauth-plugins")  # fmt: skip
PING_INTERVAL = 0.01
ANSWER_PORT, SINK_PORT = 7000, 7001


def bench_vpn(rootfs: Path | str | None = None, seconds: float = 5.0) -> bool:
    """Run the benchmark; print progress and the summary line; False when anything failed."""
    with throwaway_lab(rootfs, f"vpb{os.getpid() % 100000}") as (manager, lab):
        try:
            figures = _bench(manager, lab, seconds)
        except VrpipeError as err:
            print(f"bench-vpn: {err}")
            return False
    print(" ".join(f"{name}={value}" for name, value in figures.items()))
    return True


def _bench(manager: Manager, lab: Lab, seconds: float) -> dict[str, str]:
    vms = {name: add_site(manager, lab, name) for name in SITES}
    serve(vms["r2"].ns, ANSWER_PORT, "site-b")
    started = time.monotonic()
    for name in SITES:
        outcome = manager.apply(name, site_commands(name))
        if not outcome.ok:
            raise VrpipeError(f"router {name}: {outcome.error}")
    _wait_for_answer(vms["r1"].ns, started + 60)
    tunnel_up = time.monotonic() - started
    print(f"tunnel carries traffic {tunnel_up:.2f} s after both sites were applied")
    throughput = _throughput(vms["r1"].ns, vms["r2"].ns, seconds)
    print(f"TCP through the tunnel: {throughput:.1f} Mbit/s for {seconds:.0f} s")
    outage = _upgrade_outage(manager, vms["r1"].ns)
    return {
        "tunnel_up_s": f"{tunnel_up:.2f}",
        "upgrade_outage_s": f"{outage:.2f}",
        "throughput_mbit": f"{throughput:.0f}",
    }


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _wait_for_answer(ns: str, deadline: float) -> None:
    argv = _python("orchestration.lab.traffic", "loop", "0.5", "0", f"{vm_ip('r2')}:{ANSWER_PORT}")
    while time.monotonic() < deadline:
        out = run(argv, ns=ns, check=False, cwd=PROJECT, timeout=30).stdout
        if '"failed": 0' in out:
            return
    raise VrpipeError("the VM at site A never reached the VM at site B through the tunnel")


def _throughput(sender: str, receiver: str, seconds: float) -> float:
    spawn(_python("orchestration.lab.vpn_lab", "sink", str(SINK_PORT)), ns=receiver, cwd=PROJECT, new_session=True)
    time.sleep(0.5)
    argv = _python("orchestration.lab.vpn_lab", "blast", vm_ip("r2"), str(SINK_PORT), str(seconds))
    return float(run(argv, ns=sender, cwd=PROJECT, timeout=seconds + 30).stdout.strip())


def _strongswan_debs(manager: Manager) -> list[Path]:
    """strongSwan's .debs as the template was built with them: in its rootfs's apt cache, or in the .deb
    cache the template build keeps (build/cache/debs/SUITE)."""
    config, rootfs = load_config({}), manager.config.rootfs
    folders = [rootfs / "var/cache/apt/archives"] if rootfs else []
    for folder in [*folders, config.cache_dir / config.suite]:
        debs = sorted(d for d in folder.glob("*.deb") if d.name.split("_")[0] in STRONGSWAN)
        if len(debs) == len(STRONGSWAN):
            return debs
    raise VrpipeError(f"no .debs of {', '.join(STRONGSWAN)} in the rootfs's apt cache or {config.cache_dir}")


def _copy_debs(manager: Manager, debs: list[Path]) -> list[str]:
    """Put the .debs on r1 (base64 through the router's transport, which carries text) under /tmp."""
    router = manager.store.router("r1")
    paths = []
    for deb in debs:
        path = f"/tmp/{deb.name}"
        data = base64.b64encode(deb.read_bytes()).decode()
        status, out = manager.deployer(router).execute(router, [*DECODE, path], input=data)
        if status != 0:
            raise VrpipeError(f"copying {deb.name} to r1 failed: {out[-300:]}")
        paths.append(path)
    return paths


DECODE = ["python3", "-c", "import base64, sys; open(sys.argv[1], 'wb').write(base64.b64decode(sys.stdin.read()))"]


def _upgrade_outage(manager: Manager, ns: str) -> float:
    """Lost ping time through the tunnel while r1 reinstalls strongSwan's packages (and 10 s after); the
    same for the engine's part of an upgrade of vr-scripts (its postinst's `vr-apply --reapply`)."""
    router = manager.store.router("r1")
    deployer = manager.deployer(router)
    debs = _copy_debs(manager, _strongswan_debs(manager))
    charon = ["systemctl", "show", "--property=MainPID", "--value", "strongswan"]
    with _lost_traffic(ns, "strongSwan upgrade") as strongswan:
        before = deployer.execute(router, charon)[1].strip()
        _execute(manager, ["dpkg", "-i", *debs])
        after = deployer.execute(router, charon)[1].strip()
        if after == before:
            raise VrpipeError(f"charon was not restarted by the upgrade (pid {before} before and after)")
        print(f"strongSwan reinstalled in place on r1 (charon {before} -> {after})")
    with _lost_traffic(ns, "engine re-apply (vr-scripts upgrade)"):
        _execute(manager, ["/opt/vr/bin/vr-apply", "--reapply"])
    return strongswan[0]


def _execute(manager: Manager, argv: list[str]) -> None:
    router = manager.store.router("r1")
    status, out = manager.deployer(router).execute(router, argv)
    if status != 0:
        raise VrpipeError(f"{argv[0]} on r1 failed: {out[-500:]}")


@contextlib.contextmanager
def _lost_traffic(ns: str, what: str) -> Iterator[list[float]]:
    """A 10 ms ping from `ns` to the VM at site B while the block runs and for 10 s after; the seconds of
    lost pings are put in the list it yields."""
    lost: list[float] = []
    ping = spawn(["ping", "-n", "-i", str(PING_INTERVAL), "-w", "300", vm_ip("r2")], ns=ns, pipe=True)
    time.sleep(2)
    started = time.monotonic()
    try:
        yield lost
    finally:
        took = time.monotonic() - started
        time.sleep(10)
        ping.send_signal(signal.SIGINT)
        output = ping.communicate(timeout=30)[0]
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    if summary is None:
        raise VrpipeError("ping through the tunnel printed no summary")
    sent, received = map(int, summary.groups())
    lost.append((sent - received) * PING_INTERVAL)
    print(f"{what}: {took:.1f} s; ping through the tunnel lost {sent - received} of {sent} ({lost[0]:.2f} s)")
