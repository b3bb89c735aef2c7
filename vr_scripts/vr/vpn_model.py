"""The VPN sections of the state (site-to-site gateways, remote-access users and the remote-access
service, the IPsec backend) as typed dataclasses, and their parsers. Cipher proposals are checked
against the algorithm names strongSwan knows, so a typo is refused here rather than by charon later.
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .fields import DEVICE, MISSING, NAME, Fields, Problem
from .fields import address as _address
from .fields import network as _network
from .fields import text as _text

T = TypeVar("T")
PSK_MIN = 16
PASSWORD_MIN = 8
CERT_MAX = 16 * 1024  # one PEM certificate or key
IDENTITY = re.compile(r"[A-Za-z0-9 .,:=@_*-]{1,128}")  # an IKE identity: address, FQDN, email or DN
BACKENDS = ("kernel", "libipsec")  # kernel XFRM, or strongSwan's userspace ESP over a TUN device

# strongSwan's algorithm keywords by kind (a subset: the ones worth allowing on a router today).
AEAD = {f"aes{b}gcm{i}" for b in (128, 192, 256) for i in (8, 12, 16)} | {
    "aes128ccm16",
    "aes256ccm16",
    "chacha20poly1305",
}
ENCRYPTION = {"aes128", "aes192", "aes256", "aes128ctr", "aes256ctr", "camellia128", "camellia256", "3des"}
INTEGRITY = {"sha1", "sha256", "sha384", "sha512", "aesxcbc", "aescmac", "md5"}
PRF = {"prfsha1", "prfsha256", "prfsha384", "prfsha512", "prfaesxcbc", "prfaescmac"}
DH = {f"modp{b}" for b in (1024, 2048, 3072, 4096, 6144, 8192)}
DH |= {"ecp256", "ecp384", "ecp521", "ecp256bp", "ecp384bp", "ecp512bp", "curve25519", "x25519", "curve448", "x448"}
ESN = {"esn", "noesn"}
KNOWN = AEAD | ENCRYPTION | INTEGRITY | PRF | DH | ESN


@dataclass(frozen=True)
class IpsecSettings:
    backend: str = "kernel"


@dataclass(frozen=True)
class VpnGateway:
    """One customer gateway: an IKEv2 tunnel from a public address of the router to `remote_address`,
    joining the router's tiers (guest devices) with the customer's CIDRs."""

    name: str
    local_address: ipaddress.IPv4Address
    remote_address: ipaddress.IPv4Address
    remote_cidrs: tuple[ipaddress.IPv4Network, ...]
    local_tiers: tuple[str, ...]
    psk: str | None = None
    certificate: bytes | None = None  # PEM: the router's certificate for this gateway
    private_key: bytes | None = None  # PEM
    ca_certificate: bytes | None = None  # PEM: the CA the peer's certificate must chain to
    local_id: str | None = None
    remote_id: str | None = None
    ike_proposals: tuple[str, ...] = ("aes256-sha256-modp2048",)
    esp_proposals: tuple[str, ...] = ("aes256-sha256",)
    dpd_seconds: int = 30
    ike_rekey_seconds: int = 14400
    esp_rekey_seconds: int = 3600


@dataclass(frozen=True)
class VpnUser:
    name: str
    password: str  # EAP-MSCHAPv2 secret


@dataclass(frozen=True)
class RemoteAccess:
    """IKEv2 road-warrior access: clients authenticate with EAP-MSCHAPv2 as a VpnUser, the router with a
    certificate, and get an address from `pool`; they reach the `tiers` (guest devices) listed."""

    enabled: bool = False
    local_address: ipaddress.IPv4Address | None = None
    pool: ipaddress.IPv4Network | None = None
    tiers: tuple[str, ...] = ()
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    server_id: str | None = None
    certificate: bytes | None = None
    private_key: bytes | None = None
    proposals: tuple[str, ...] = ("aes256-sha256-modp2048",)


def proposal(value: object, ike: bool) -> str:
    """One strongSwan proposal such as aes256-sha256-modp2048, every algorithm known and the set complete."""
    text = _text(value, max_len=200, what="proposal")
    words = text.split("-")
    unknown = [w for w in words if w not in KNOWN]
    if unknown:
        raise ValueError(
            f"{text!r}: unknown algorithm {unknown[0]!r} (e.g. aes256-sha256-modp2048, aes256gcm16-ecp256)"
        )
    aead = any(w in AEAD for w in words)
    if not aead and not any(w in ENCRYPTION for w in words):
        raise ValueError(f"{text!r}: names no encryption algorithm")
    if not aead and not any(w in INTEGRITY for w in words):
        raise ValueError(f"{text!r}: needs an integrity algorithm (or an AEAD cipher such as aes256gcm16)")
    if ike and not any(w in DH for w in words):
        raise ValueError(f"{text!r}: an IKE proposal needs a key exchange group (e.g. modp2048, ecp256)")
    return text


def _pem_field(f: Fields, name: str, kind: str) -> bytes | None:
    data = f.base64(name, CERT_MAX, default=None)
    if data is None:
        return None
    if not data.lstrip().startswith(b"-----BEGIN ") or kind.encode() not in data.split(b"\n", 1)[0]:
        f.problem(f"{f.where}.{name}", f"is not a PEM {kind.lower()} (give base64 of the PEM text)")
        return None
    return data


def _proposals(f: Fields, name: str, ike: bool, default: tuple[str, ...]) -> tuple[str, ...]:
    return f.values(name, lambda v: proposal(v, ike), default=default, max_items=8)


def parse_ipsec(data: object, where: str, problems: list[Problem]) -> IpsecSettings | None:
    f = Fields(data, where, problems)
    backend = f.choice("backend", BACKENDS, default="kernel")
    return IpsecSettings(backend) if f.finish() and backend else None


def parse_gateway(data: object, where: str, problems: list[Problem]) -> VpnGateway | None:
    f = Fields(data, where, problems)
    name = f.text("name", pattern=NAME, what="name (letters, digits, _ and -)")
    local, remote = f.address("local_address"), f.address("remote_address")
    cidrs = f.values("remote_cidrs", _network, default=None, max_items=64)
    tiers = f.values("local_tiers", lambda v: _text(v, pattern=DEVICE, what="device name"), default=None, max_items=16)
    psk = f.text("psk", max_len=256, default=None)
    certificate = _pem_field(f, "certificate", "CERTIFICATE")
    private_key = _pem_field(f, "private_key", "PRIVATE KEY")
    ca = _pem_field(f, "ca_certificate", "CERTIFICATE")
    local_id, remote_id = _identity(f, "local_id"), _identity(f, "remote_id")
    ike = _proposals(f, "ike_proposals", True, VpnGateway.ike_proposals)
    esp = _proposals(f, "esp_proposals", False, VpnGateway.esp_proposals)
    dpd = f.integer("dpd_seconds", 0, 3600, default=30)
    ike_rekey = f.integer("ike_rekey_seconds", 60, 7 * 86400, default=14400)
    esp_rekey = f.integer("esp_rekey_seconds", 60, 86400, default=3600)
    if cidrs == () or tiers == ():
        f.problem(f"{where}.{'remote_cidrs' if cidrs == () else 'local_tiers'}", "needs at least one entry")
    _check_auth(f, psk, (certificate, private_key, ca), remote_id)
    return _built(
        f, VpnGateway, name, local, remote, cidrs, tiers, psk, certificate, private_key, ca,
        local_id, remote_id, ike, esp, dpd, ike_rekey, esp_rekey,
    )  # fmt: skip


def _identity(f: Fields, name: str) -> str | None:
    return f.text(name, pattern=IDENTITY, max_len=128, what="IKE identity", default=None)


def _check_auth(f: Fields, psk: str | None, certs: tuple[bytes | None, ...], remote_id: str | None) -> None:
    """Exactly one way to authenticate: a pre-shared key, or certificate, private key and CA together."""
    given = [c is not None for c in certs]
    if psk is not None and len(psk) < PSK_MIN:
        f.problem(f"{f.where}.psk", f"is {len(psk)} characters long; a pre-shared key needs at least {PSK_MIN}")
    if psk is not None and any(given):
        f.problem(f"{f.where}.psk", "give either psk or certificate, private_key and ca_certificate, not both")
    elif psk is None and not all(given) and f.ok:
        f.problem(f"{f.where}.psk", "is required unless certificate, private_key and ca_certificate are all given")
    elif all(given) and not remote_id and f.ok:
        f.problem(f"{f.where}.remote_id", "is required with certificates (the peer certificate's subject)")


def _built(f: Fields, build: Callable[..., T], *values: object) -> T | None:
    """Like model._parsed: the dataclass only when every field was valid."""
    return build(*values) if f.finish() else None


def parse_user(data: object, where: str, problems: list[Problem]) -> VpnUser | None:
    f = Fields(data, where, problems)
    name = f.text("name", pattern=NAME, what="user name (letters, digits, _ and -)")
    password = f.text("password", max_len=128)
    if password is not None and len(password) < PASSWORD_MIN:
        f.problem(f"{where}.password", f"needs at least {PASSWORD_MIN} characters")
    return VpnUser(name, password) if f.finish() and name and password else None


def parse_remote_access(data: object, where: str, problems: list[Problem]) -> RemoteAccess | None:
    f = Fields(data, where, problems)
    enabled = f.boolean("enabled", default=True)
    required = MISSING if enabled else None
    local, pool = f.address("local_address", default=required), f.network("pool", default=required)
    tiers = f.values("tiers", lambda v: _text(v, pattern=DEVICE, what="device name"), max_items=16)
    dns = f.values("dns", _address, max_items=4)
    server_id = _identity(f, "server_id")
    certificate = _pem_field(f, "certificate", "CERTIFICATE")
    private_key = _pem_field(f, "private_key", "PRIVATE KEY")
    proposals = _proposals(f, "proposals", True, RemoteAccess.proposals)
    if enabled and f.ok:
        for name, value in (("server_id", server_id), ("certificate", certificate), ("private_key", private_key)):
            if not value:
                f.problem(f"{where}.{name}", "is required when remote access is enabled")
        if pool is not None and not 16 <= pool.prefixlen <= 30:
            f.problem(f"{where}.pool", "must be a /16 to /30")
        if not tiers:
            f.problem(f"{where}.tiers", "needs at least one tier")
    return _built(f, RemoteAccess, enabled, local, pool, tiers, dns, server_id, certificate, private_key, proposals)
