"""The router's boot-time set-up (vr-boot.service): read the boot parameters (a file for containers, qemu
fw_cfg for VMs booted from their own disk, or `vr.`-prefixed words of the kernel command line), set the
hostname, the addresses and the manager's SSH key, re-apply the persisted state, then mark it ready.

Parameters are `key=value` words separated by blanks or `;`. The SSH key travels base64-encoded
(`authorized_key=`) since a key line has blanks; `format_params()` writes what `parse_params()` reads.
"""

import base64
import binascii
import ipaddress
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import __version__, contract
from .layout import Layout
from .run import CommandFailed, run

log = logging.getLogger("vr-boot")

PARAM_FILE = Path("etc/vr/boot-params")
FW_CFG = Path("sys/firmware/qemu_fw_cfg/by_name") / contract.FW_CFG_NAME / "raw"
KERNEL_CMDLINE = Path("proc/cmdline")
CMDLINE_PREFIX = "vr."
READY = Path("run/vr/ready")
BOOT_JSON = Path("run/vr/boot.json")

HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")  # all four: fullmatch
INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
ROLE = re.compile(r"[a-z][a-z0-9-]{0,31}")
KEY_LINE = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( [^\n]*)?")


class ReapplyFailed(RuntimeError):
    """The persisted state could not be applied at boot; the previous files and rules were put back."""


class BadParams(ValueError):
    """A boot parameter is missing or malformed; the message names it."""


@dataclass(frozen=True)
class BootParams:
    hostname: str
    role: str = "router"
    control: str = ""  # address/prefix on control_if: where the manager reaches SSH port 3922
    control_if: str = "eth0"
    public: str = ""
    public_if: str = "eth1"
    guest: str = ""
    guest_if: str = "eth2"
    gateway: str = ""
    authorized_key: str = ""  # the manager's public key line (decoded)

    def addresses(self) -> list[tuple[str, str]]:
        """(interface, address/prefix) for every address given."""
        pairs = [(self.control_if, self.control), (self.public_if, self.public), (self.guest_if, self.guest)]
        return [(interface, address) for interface, address in pairs if address]


def parse_params(text: str, prefix: str = "") -> BootParams:
    """Parse `key=value` words; with a prefix (the kernel command line) only words carrying it count."""
    words = [w for w in re.split(r"[\s;]+", text) if w and w.startswith(prefix)]
    values = {}
    for word in words:
        key, sep, value = word[len(prefix) :].partition("=")
        if not sep:
            raise BadParams(f"boot parameter {word!r} is not key=value")
        values[key] = value
    known = {f.name for f in fields(BootParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadParams(f"unknown boot parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "hostname" not in values:
        raise BadParams("boot parameter hostname is missing")
    if values.get("authorized_key"):
        values["authorized_key"] = _decode_key(values["authorized_key"])
    return _validated(BootParams(**values))


def format_params(params: BootParams, prefix: str = "") -> str:
    """The words parse_params() reads back (prefix "vr." for a kernel command line)."""
    values = {k: v for k, v in asdict(params).items() if v}
    if params.authorized_key:
        values["authorized_key"] = base64.b64encode(params.authorized_key.encode()).decode()
    return " ".join(f"{prefix}{key}={value}" for key, value in values.items())


def _decode_key(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise BadParams("boot parameter authorized_key is not base64 of an SSH public key line") from e


def _validated(params: BootParams) -> BootParams:
    if not HOSTNAME.fullmatch(params.hostname):
        raise BadParams(f"hostname {params.hostname!r} is not a host name (a-z, 0-9, -; at most 63)")
    if not ROLE.fullmatch(params.role):
        raise BadParams(f"role {params.role!r} is not a role name like 'router'")
    for name in ("control_if", "public_if", "guest_if"):
        if not INTERFACE.fullmatch(getattr(params, name)):
            raise BadParams(f"{name} {getattr(params, name)!r} is not an interface name")
    for name in ("control", "public", "guest"):
        value = getattr(params, name)
        if value and "/" not in value:
            raise BadParams(f"{name} {value!r} needs a prefix length, like 169.254.3.4/16")
        _check(name, value, ipaddress.ip_interface)
    _check("gateway", params.gateway, ipaddress.ip_address)
    if params.authorized_key and not KEY_LINE.fullmatch(params.authorized_key):
        raise BadParams("authorized_key is not an SSH public key line (type, base64, comment)")
    return params


def _check(name: str, value: str, parse: Callable[[str], object]) -> None:
    try:
        if value:
            parse(value)
    except ValueError as e:
        raise BadParams(f"{name} {value!r}: {e}") from e


def read_params(root: Path) -> tuple[BootParams | None, str]:
    """The first source present: the file (containers), fw_cfg (VMs), the kernel command line."""
    if (root / PARAM_FILE).exists():
        return parse_params((root / PARAM_FILE).read_text()), str(PARAM_FILE)
    if (root / FW_CFG).exists():
        return parse_params((root / FW_CFG).read_text()), "fw_cfg"
    cmdline = (root / KERNEL_CMDLINE).read_text() if (root / KERNEL_CMDLINE).exists() else ""
    if CMDLINE_PREFIX + "hostname=" in cmdline:
        return parse_params(cmdline, CMDLINE_PREFIX), "kernel command line"
    return None, "nowhere"


def write_files(params: BootParams, root: Path) -> None:
    """Hostname, /etc/hosts and the manager's key: what survives in the root filesystem."""
    _write(root / "etc/hostname", f"{params.hostname}\n")
    hosts = root / "etc/hosts"
    kept = [line for line in _lines(hosts) if not line.startswith("127.0.1.1")]
    _write(hosts, "".join(f"{line}\n" for line in [*kept, f"127.0.1.1\t{params.hostname}"]))
    if params.authorized_key:
        ssh = root / "root/.ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(ssh / "authorized_keys", params.authorized_key + "\n", mode=0o600)
    _write(root / BOOT_JSON, json.dumps(asdict(params), indent=2) + "\n")


def configure_system(params: BootParams) -> None:
    """The running system: host name, links up, addresses, default route."""
    socket.sethostname(params.hostname)
    for interface, address in params.addresses():
        run(["ip", "link", "set", "dev", interface, "up"])
        run(["ip", "address", "replace", address, "dev", interface])
    if params.gateway:
        run(["ip", "route", "replace", "default", "via", params.gateway])


def reapply(layout: Layout) -> None:
    """Re-apply the persisted state, if this router has one, in this process: no resident engine runs yet,
    and a second interpreter loading the engine cost seconds of a TCG boot."""
    if layout.state.exists():
        from . import cli

        result = cli.reapply(layout)
        print(f"vr-boot: re-applied the persisted state: {json.dumps(result, indent=1)}", flush=True)
        if not result["ok"]:
            raise ReapplyFailed(f"the persisted state was not re-applied: {json.dumps(result.get('failed'))}")


def mark_ready(root: Path, params: BootParams | None) -> None:
    ready = {"version": __version__, "hostname": params.hostname if params else socket.gethostname()}
    _write(root / READY, json.dumps(ready) + "\n")
    print(f"vr-boot: ready: {ready['hostname']} runs vr-scripts {__version__}", flush=True)


def boot(root: Path) -> None:
    if root == Path("/") and not (root / PARAM_FILE).exists():
        # fw_cfg shows up in sysfs once its module is loaded; containers have no fw_cfg and no modules
        _try(["modprobe", "qemu_fw_cfg"])
    params, source = read_params(root)
    print(f"vr-boot: boot parameters from {source}", flush=True)
    if params:
        write_files(params, root)
        if root == Path("/"):
            configure_system(params)
    reapply(Layout(root))
    mark_ready(root, params)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="vr-boot: %(message)s")
    try:
        boot(Path(os.environ.get("VR_ROOT", "/")))
    except (BadParams, CommandFailed, ReapplyFailed, OSError) as e:
        print(f"vr-boot: failed: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def _try(argv: list[str]) -> None:
    try:
        run(argv)
    except CommandFailed as e:
        log.info("%s", e)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write-then-rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
