"""IPsec VPN with strongSwan: site-to-site tunnels and IKEv2 remote access, rendered to one swanctl file
(plus certificate files) and loaded with `swanctl --load-all --clear`, so a change never restarts charon;
only a change of backend (kernel XFRM or userspace libipsec) does. Also the VPN checks of the state,
the nftables pieces for tunnel traffic, and the health of each tunnel.
"""

import base64
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout
from .model import RouterState
from .render import render as render_template
from .run import CommandFailed, run
from .vpn_model import RemoteAccess, VpnGateway

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module
    from .checks import Report

NAME = "vpn"
SERVICE = "strongswan"  # Debian's charon-systemd unit
SWANCTL = "etc/swanctl/conf.d/vr.conf"
STRONGSWAN = "etc/strongswan.d/vr.conf"
CHARON_LOG = "var/log/vr/charon.log"
CERT_DIRS = {"cert": "etc/swanctl/x509", "key": "etc/swanctl/private", "ca": "etc/swanctl/x509ca"}
REMOTE_ACCESS = "remote-access"  # its connection's name; gateways' connections are gw-NAME
LIBIPSEC_DEVICE = "ipsec0"  # the TUN device kernel-libipsec moves tunnel traffic through
SWANCTL_TIMEOUT = 30


def needed(state: RouterState) -> bool:
    return bool(state.vpn_gateways) or state.remote_access.enabled


def conn_name(gateway: VpnGateway) -> str:
    return f"gw-{gateway.name}"


# ---- checks of the whole state (called from checks.check_state) -------------------------------------


def check_state(state: RouterState, report: "Report") -> None:
    """Addresses and tiers the VPN sections name must exist, and no remote network may overlap a tier,
    the remote-access pool or another gateway's networks (routing would be ambiguous)."""
    tiers = {g.device: g.gateway.network for g in state.interfaces.guests}
    public = state.interfaces.public_addresses
    claimed: list[tuple[ipaddress.IPv4Network, str, object]] = []  # (network, section, item)
    for gw in state.vpn_gateways:
        _check_common(report, "vpn_gateways", gw, gw.local_address, gw.local_tiers, "local_tiers", tiers, public)
        for cidr in gw.remote_cidrs:
            for device, net in tiers.items():
                if cidr.overlaps(net):
                    report("vpn_gateways", gw, f"{cidr} overlaps tier {device} ({net})", "remote_cidrs")
            for earlier, section, item in claimed:
                if cidr.overlaps(earlier):
                    report("vpn_gateways", gw, f"{cidr} overlaps {earlier}", "remote_cidrs", (section, item))
            claimed.append((cidr, "vpn_gateways", gw))
    access = state.remote_access
    if access.enabled and access.pool is not None and access.local_address is not None:
        _check_common(report, "remote_access", access, access.local_address, access.tiers, "tiers", tiers, public)
        for net, section, item in [(n, "interfaces", None) for n in tiers.values()] + claimed:
            if access.pool.overlaps(net):
                other = (section, item) if item else None
                report("remote_access", access, f"{access.pool} overlaps {net}", "pool", other)


def _check_common(
    report: "Report",
    section: str,
    item: object,
    local: ipaddress.IPv4Address,
    devices: Sequence[str],
    field: str,
    tiers: Mapping[str, ipaddress.IPv4Network],
    public: Iterable[ipaddress.IPv4Address],
) -> None:
    if local not in public:
        report(section, item, f"{local} is not one of the router's public addresses", "local_address")
    for device in devices:
        if device not in tiers:
            report(section, item, f"{device} is not a tier (guest network) of this router", field)


# ---- render ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gateway:
    """What the template needs of one gateway, beyond its fields."""

    item: VpnGateway
    conn: str
    auth: str
    local_id: str
    remote_id: str
    local_ts: list[str]
    psk: str | None
    cert: str | None
    cacert: str | None


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    if not needed(state):
        return {}
    tiers = {g.device: str(g.gateway.network) for g in state.interfaces.guests}
    files: dict[Path, str] = {}
    gateways = [_gateway(gw, tiers, layout, files) for gw in state.vpn_gateways]
    access = _remote_access(state.remote_access, tiers, layout, files) if state.remote_access.enabled else None
    users = [{"name": u.name, "secret": _b64(u.password)} for u in state.vpn_users]
    encap = "yes" if state.ipsec.backend == "libipsec" else "no"  # libipsec speaks ESP in UDP only
    swanctl = render_template("swanctl.conf.j2", gateways=gateways, remote_access=access, users=users, encap=encap)
    files[layout.root / SWANCTL] = swanctl
    backend = render_template("strongswan-vr.conf.j2", backend=state.ipsec.backend, log=f"/{CHARON_LOG}")
    files[layout.root / STRONGSWAN] = backend
    return files


def _b64(secret: str) -> str:
    return base64.b64encode(secret.encode()).decode()


def _gateway(gw: VpnGateway, tiers: Mapping[str, str], layout: Layout, files: dict[Path, str]) -> _Gateway:
    conn = conn_name(gw)
    local_ts = [tiers[d] for d in gw.local_tiers]
    if gw.psk is not None:
        local_id, remote_id = gw.local_id or str(gw.local_address), gw.remote_id or str(gw.remote_address)
        return _Gateway(gw, conn, "psk", local_id, remote_id, local_ts, _b64(gw.psk), None, None)
    assert gw.certificate and gw.private_key and gw.ca_certificate  # the parser saw to it
    cert = _cert_files(conn, gw.certificate, gw.private_key, layout, files)
    files[layout.root / CERT_DIRS["ca"] / f"vr-{conn}.pem"] = gw.ca_certificate.decode()
    local_id = gw.local_id or "%any"  # the subject of our certificate
    return _Gateway(gw, conn, "pubkey", local_id, gw.remote_id or "%any", local_ts, None, cert, f"vr-{conn}.pem")


def _cert_files(conn: str, cert: bytes, key: bytes, layout: Layout, files: dict[Path, str]) -> str:
    name = f"vr-{conn}.pem"
    files[layout.root / CERT_DIRS["cert"] / name] = cert.decode()
    files[layout.root / CERT_DIRS["key"] / name] = key.decode()  # the directory is root's only (0700)
    return name


def _remote_access(
    access: RemoteAccess, tiers: Mapping[str, str], layout: Layout, files: dict[Path, str]
) -> dict[str, object]:
    assert access.certificate and access.private_key
    cert = _cert_files(REMOTE_ACCESS, access.certificate, access.private_key, layout, files)
    return {"item": access, "conn": REMOTE_ACCESS, "cert": cert, "local_ts": [tiers[d] for d in access.tiers]}


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    """Nothing to check with a tool: swanctl has no offline check, and every value was validated; a load
    that charon refuses fails the activation, which puts the previous files back."""


def activate(change: "Activation") -> str | None:
    services, layout, new = change.services, change.layout, change.new
    if not needed(new):
        _remove_stale(layout, set())
        return services.stop(SERVICE) if services.is_active(SERVICE) else None
    ours = set(render(new, layout))
    _remove_stale(layout, ours)
    if not services.is_active(SERVICE) or layout.root / STRONGSWAN in change.changed:
        return services.restart(SERVICE)  # the unit loads swanctl's files as it starts
    if not (ours & change.changed) and not change.force:
        return None
    run(["swanctl", "--load-all", "--clear", "--noprompt"], timeout=SWANCTL_TIMEOUT)
    _end_sessions(change.old, new)
    return "loaded"


def _remove_stale(layout: Layout, keep: set[Path]) -> None:
    """Certificate files of gateways that are gone (swanctl would load whatever lies in its folders)."""
    for folder in CERT_DIRS.values():
        for path in (layout.root / folder).glob("vr-*.pem"):
            if path not in keep:
                path.unlink()
    if not keep:
        (layout.root / SWANCTL).unlink(missing_ok=True)


def _end_sessions(old: RouterState, new: RouterState) -> None:
    """Close what the new state no longer allows: tunnels of removed gateways, and the sessions of
    removed users (or users whose password changed). A changed gateway is closed and started again:
    charon keeps an established tunnel when only its key changed, and a new key must be proven."""
    kept = {conn_name(gw): gw for gw in new.vpn_gateways}
    for gw in old.vpn_gateways:
        now = kept.get(conn_name(gw))
        if now != gw:
            _terminate(["--ike", conn_name(gw)])
        if now is not None and now != gw:
            # --timeout: return soon, the negotiation goes on in charon (its outcome shows in vr-health)
            run(["swanctl", "--initiate", "--child", conn_name(gw), "--timeout", "1"], check=False)
    users = set(new.vpn_users) if new.remote_access.enabled else set()
    gone = {u.name for u in old.vpn_users if u not in users}
    if gone:
        listing = run(["swanctl", "--list-sas", "--ike", REMOTE_ACCESS], timeout=SWANCTL_TIMEOUT)
        for ike_id, user in sessions(listing).items():
            if user in gone:
                _terminate(["--ike-id", str(ike_id)])


def _terminate(which: list[str]) -> None:
    # --force: do not wait for the peer's answer; a peer that is gone must not hold up the apply
    run(["swanctl", "--terminate", *which, "--force", "--timeout", "2"], check=False, timeout=SWANCTL_TIMEOUT)


IKE_SA = re.compile(r"^(?P<conn>[^\s:]+): #(?P<id>\d+), (?P<state>[A-Z_]+),", re.MULTILINE)
CHILD_SA = re.compile(r"^\s+(?P<conn>[^\s:]+): #\d+, reqid \d+, (?P<state>[A-Z_]+),", re.MULTILINE)
# swanctl shows the EAP identity only where it differs from the IKE identity
REMOTE_ID = re.compile(r"^\s+remote '(?P<ike>[^']*)' @ \S+(?: EAP: '(?P<eap>[^']*)')?", re.MULTILINE)


def sessions(listing: str) -> dict[int, str]:
    """IKE SA id -> the user (EAP identity) of each session, from `swanctl --list-sas` output."""
    result: dict[int, str] = {}
    starts = list(IKE_SA.finditer(listing))
    for i, sa in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(listing)
        remote = REMOTE_ID.search(listing, sa.end(), end)
        if remote:
            result[int(sa["id"])] = remote["eap"] or remote["ike"]
    return result


def established(listing: str) -> set[str]:
    """Connections with an ESTABLISHED IKE SA and an INSTALLED child SA, from `swanctl --list-sas`."""
    ike = {m["conn"] for m in IKE_SA.finditer(listing) if m["state"] == "ESTABLISHED"}
    return ike & {m["conn"] for m in CHILD_SA.finditer(listing) if m["state"] == "INSTALLED"}


# ---- nftables --------------------------------------------------------------------------------------


def nft_context(state: RouterState) -> dict[str, object]:
    """The VPN part of the nftables template: (tier . remote network) pairs that tunnel traffic may
    have, and how a packet is known to come from or go into a tunnel on this backend."""
    tiers = {g.device: g.gateway.network for g in state.interfaces.guests}
    pairs = [(tiers[d], c) for gw in state.vpn_gateways for d in gw.local_tiers if d in tiers for c in gw.remote_cidrs]
    access = state.remote_access
    if access.enabled and access.pool is not None:
        pairs += [(tiers[d], access.pool) for d in access.tiers if d in tiers]
    addresses = {gw.local_address for gw in state.vpn_gateways}
    addresses |= {access.local_address} if access.enabled and access.local_address else set()
    libipsec = state.ipsec.backend == "libipsec"
    return {
        "vpn_addresses": sorted(map(str, addresses)),
        "vpn_kernel": not libipsec,
        "vpn_routes": sorted({f"{tier} . {remote}" for tier, remote in pairs}),
        # Policy matching: the kernel's IPsec marks decrypted packets (meta ipsec) and routes that
        # lead into a tunnel (rt ipsec); libipsec's tunnel traffic passes through its TUN device.
        "vpn_from_tunnel": f'iifname "{LIBIPSEC_DEVICE}"' if libipsec else "meta ipsec exists",
        "vpn_into_tunnel": f'oifname "{LIBIPSEC_DEVICE}"' if libipsec else "rt ipsec exists",
    }


# ---- health ----------------------------------------------------------------------------------------

FAILURES = (
    # what charon logs -> what the health report says
    (("AUTHENTICATION_FAILED", "MAC mismatched", "no shared key found", "constraint check failed"),
     "authentication failed: the pre-shared key or certificate does not match the peer's"),
    (("NO_PROPOSAL_CHOSEN", "no matching proposal", "no acceptable proposal"),
     "no cipher proposal in common with the peer"),
    (("TS_UNACCEPTABLE", "no acceptable traffic selectors"), "the peer does not accept these networks"),
    (("giving up after", "retransmit"), "the peer does not answer"),
)  # fmt: skip


NOT_YET = "not established yet"


def tunnel_status(layout: Layout, state: RouterState) -> list[tuple[str, str, str]]:
    """(gateway name, status, message) for each gateway: ok when up, warn while it has not come up yet
    (just started, say: a replay must not count that against the router), fail with the reason."""
    try:
        up = established(run(["swanctl", "--list-sas"], timeout=SWANCTL_TIMEOUT))
    except (CommandFailed, OSError) as err:
        return [(gw.name, "fail", f"charon does not answer ({err})") for gw in state.vpn_gateways]
    log = _log_tail(layout.root / CHARON_LOG)
    result = []
    for gw in state.vpn_gateways:
        conn = conn_name(gw)
        reason = failure_reason(log, conn)
        if conn in up:
            result.append((gw.name, "ok", f"up to {gw.remote_address}"))
        else:
            status = "warn" if reason == NOT_YET else "fail"
            result.append((gw.name, status, f"down to {gw.remote_address}: {reason}"))
    return result


def _log_tail(path: Path, size: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, 2) - size))
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def failure_reason(log: str, conn: str, recent: int = 50) -> str:
    """Why the connection's latest attempts failed, from charon's last log lines that name it (<conn|N>):
    the weightiest reason among them, since retransmits and a peer's own retries interleave with the cause."""
    lines = [line for line in log.splitlines() if f"<{conn}|" in line][-recent:]
    for signs, reason in FAILURES:
        if any(sign in line for line in lines for sign in signs):
            return reason
    return NOT_YET
