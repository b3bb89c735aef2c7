"""libvirt's daemons for the lab, its benchmarks and the tests, on a machine without systemd: virtlogd, then
libvirtd inside the host namespace that plays the hypervisor host (the taps it makes for a router's NICs
then join that namespace's bridges); both stopped by the PIDs they wrote.
"""

import contextlib
import os
import signal
import time
from pathlib import Path

import libvirt

from orchestration.deployers.libvirt import DEFAULT_URI
from vrpipe.errors import VrpipeError
from vrpipe.run import run

PID_FILES = {"virtlogd": Path("/run/virtlogd.pid"), "libvirtd": Path("/run/libvirtd.pid")}
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def start_libvirt(host_ns: str) -> list[int]:
    """Start virtlogd (unless one runs: it is shared and not ours to stop) and libvirtd in `host_ns`; wait
    until libvirt answers. Returns the PIDs this started, for `stop_libvirt`."""
    if _running("libvirtd") is not None:
        raise VrpipeError(
            f"libvirtd already runs (pid {_running('libvirtd')}), outside the lab's host namespace {host_ns}",
            hint="stop it first: the lab runs its own libvirtd where its bridges are",
        )
    started = []
    try:
        if _running("virtlogd") is None:
            run(["virtlogd", "-d"])
            started.append(_wait_pid("virtlogd"))
        run(["libvirtd", "-d"], ns=host_ns)
        started.append(_wait_pid("libvirtd"))
        _wait_answers()
    except Exception:
        stop_libvirt(started)
        raise
    return started


def stop_libvirt(pids: list[int]) -> None:
    """SIGTERM each daemon (libvirtd first), SIGKILL what is still there after STOP_TIMEOUT."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_pool(name: str, uri: str = DEFAULT_URI) -> None:
    """Stop and undefine a storage pool the lab made (its folder is the caller's to delete)."""
    connection = libvirt.open(uri)
    try:
        pool = connection.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass  # no such pool
    finally:
        connection.close()


def _running(daemon: str) -> int | None:
    try:
        pid = int(PID_FILES[daemon].read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    """Running, not a zombie (a daemon gone while the process it forked from has not reaped it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait_pid(daemon: str) -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    while (pid := _running(daemon)) is None:
        if time.monotonic() > deadline:
            raise VrpipeError(f"{daemon} wrote no pid to {PID_FILES[daemon]} within {READY_TIMEOUT:.0f}s")
        time.sleep(0.1)
    return pid


def _wait_answers() -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while run(["virsh", "-c", DEFAULT_URI, "version"], check=False, timeout=READY_TIMEOUT).returncode != 0:
        if time.monotonic() > deadline:
            raise VrpipeError(f"libvirtd does not answer at {DEFAULT_URI} within {READY_TIMEOUT:.0f}s")
        time.sleep(0.5)
