"""Redundant pairs: keepalived elects the MASTER with unicast VRRP over the sync link, conntrackd (FTFW, same
link) keeps each member's copy of the other's connection table, and vr-vrrp (vr/vrrp.py) takes or gives up
the virtual addresses when keepalived says the role changed. This module renders their files and runs them.
"""

import contextlib
import fcntl
import ipaddress
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import contract
from .layout import Layout
from .model import Member, Redundancy, RouterState
from .render import render as render_template
from .run import run

NAME = "redundancy"
KEEPALIVED, CONNTRACKD = "vr-keepalived", "vr-conntrackd"
SERVICES = (CONNTRACKD, KEEPALIVED)  # conntrackd first: a new MASTER commits its cache before anything else
SYNC_PORT = 3780  # conntrackd's UDP port on the sync link
MASTER, BACKUP = "MASTER", "BACKUP"

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def virtual_addresses(state: RouterState) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """What moves with the MASTER: every guest gateway, public and private gateway address (the control
    and sync addresses are each member's own)."""
    interfaces = state.interfaces
    pairs = [(g.device, g.gateway) for g in interfaces.guests]
    pairs += [(p.device, a) for p in interfaces.public for a in p.addresses]
    return pairs + [(g.device, g.address) for g in state.private_gateways]


def this_member(redundancy: Redundancy, layout: Layout) -> Member | None:
    """The member this router is, by its host name; None when it is neither."""
    try:
        hostname = layout.hostname.read_text().strip()
    except FileNotFoundError:
        return None
    return next((m for m in redundancy.members if m.name == hostname), None)


def peer(redundancy: Redundancy, member: Member) -> Member:
    return next(m for m in redundancy.members if m is not member)


def role(layout: Layout) -> str:
    """MASTER or BACKUP, as vr-vrrp last left this router (BACKUP before keepalived ever said)."""
    try:
        return layout.vrrp_state.read_text().strip() or BACKUP
    except FileNotFoundError:
        return BACKUP


@contextlib.contextmanager
def role_locked(layout: Layout) -> Iterator[None]:
    """One role change at a time (vr-vrrp), and none while an apply sets the addresses (interfaces.py)."""
    layout.vrrp_lock.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.vrrp_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def holds_virtual_addresses(state: RouterState, layout: Layout) -> bool:
    """A single router always holds its addresses; a member of a pair only while it is MASTER."""
    return state.redundancy is None or role(layout) == MASTER


def own_addresses(state: RouterState, layout: Layout) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """This member's address on the sync link (none on a single router, or on one that is no member)."""
    member = this_member(state.redundancy, layout) if state.redundancy else None
    return [(state.redundancy.sync_device, member.sync_address)] if state.redundancy and member else []


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    redundancy = state.redundancy
    if redundancy is None:
        return {}
    # A router that is no member renders as the first one: check() refuses it before anything is swapped.
    member = this_member(redundancy, layout) or redundancy.members[0]
    other = peer(redundancy, member)
    keepalived = render_template(
        "keepalived.conf.j2",
        redundancy=redundancy,
        member=member,
        peer=other,
        advert_s=f"{redundancy.advert_ms / 1000:.2f}",
        layout=layout,
        # keepalived resolves the vr-vrrp link to the launcher, which then takes the command's name first
        notify=f"{contract.command('vr')} vr-vrrp",
    )
    control = state.interfaces.control
    ignored = ["127.0.0.1", member.sync_address.ip, other.sync_address.ip, *([control.address.ip] if control else [])]
    conntrackd = render_template(
        "conntrackd.conf.j2",
        redundancy=redundancy,
        member=member,
        peer=other,
        port=SYNC_PORT,
        layout=layout,
        ignored=ignored,
    )
    moving = [[device, str(address)] for device, address in virtual_addresses(state)]
    addresses = json.dumps({"addresses": moving}, indent=1) + "\n"
    return {layout.keepalived_conf: keepalived, layout.conntrackd_conf: conntrackd, layout.vrrp_addresses: addresses}


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    redundancy = change.new.redundancy
    if redundancy is None:
        return
    if this_member(redundancy, change.layout) is None:
        names = " or ".join(m.name for m in redundancy.members)
        raise ValueError(f"this router's host name is not {names}: it is no member of this pair")
    run(["keepalived", "--config-test", "-f", str(staged[change.layout.keepalived_conf])])


def activate(change: "Activation") -> str | None:
    """Start or renew conntrackd, then keepalived (whose reload keeps the VRRP role); stop both when the
    state no longer names a pair."""
    services, layout = change.services, change.layout
    if change.new.redundancy is None:
        # Without its file vr-vrrp gives up nothing as keepalived stops: a single router keeps the addresses.
        layout.vrrp_addresses.unlink(missing_ok=True)
        layout.vrrp_state.unlink(missing_ok=True)
        stopped = [services.stop(name) for name in reversed(SERVICES) if services.is_active(name)]
        return "stopped" if stopped else None
    actions = []
    if layout.conntrackd_conf in change.changed or not services.is_active(CONNTRACKD):
        actions.append(services.restart(CONNTRACKD))
    if not services.is_active(KEEPALIVED):
        actions.append(services.start(KEEPALIVED))
    elif layout.keepalived_conf in change.changed:
        actions.append(services.reload(KEEPALIVED))
    return ", ".join(actions) or None
