"""Instance metadata: one JSON file holding every VM's metadata, keys, user-data and password, keyed by
the VM's address, which the metadata service reads (it notices a new file by its mtime, so an apply never
restarts it unless the guest gateways it listens on change).
"""

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout
from .model import RouterState, VmData

NAME = "metadata"
SERVICE = "vr-metadata"

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    macs = {str(e.ip): e.mac for e in state.dhcp}
    vms = {str(vm.vm_ip): _vm(vm, macs.get(str(vm.vm_ip))) for vm in state.vm_data}
    document = {"listen": [str(g.gateway.ip) for g in state.interfaces.guests], "vms": vms}
    # Compact: an indent would make json use its pure-Python encoder, ten times slower at 10,000 VMs.
    return {layout.metadata: json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"}


def _vm(vm: VmData, mac: str | None) -> dict[str, object]:
    entry: dict[str, object] = {"meta-data": dict(vm.metadata), "public-keys": list(vm.public_keys), "mac": mac}
    if vm.user_data is not None:
        entry["user-data"] = base64.b64encode(vm.user_data).decode()
    if vm.password is not None:
        entry["password"] = vm.password
    return entry


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    """Nothing to check: the file is JSON this module just wrote from validated data."""


def activate(change: "Activation") -> str | None:
    services = change.services
    listening = [g.gateway for g in change.new.interfaces.guests]
    if not listening:
        return services.stop(SERVICE) if services.is_active(SERVICE) else None
    if listening != [g.gateway for g in change.old.interfaces.guests] or not services.is_active(SERVICE):
        return services.restart(SERVICE)
    return None
