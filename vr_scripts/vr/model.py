"""The router's desired state as typed, frozen dataclasses, and the table of sections that drives parsing,
batch commands (add/remove by key) and which subsystem each section feeds.
Each `parse_*` reads one JSON object through `fields.Fields` and returns None when it was invalid.
"""

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .fields import DEVICE, DOMAIN, HOSTNAME, NAME, Fields, PortRange, Problem, integer, text
from .fields import address as _address
from .fields import interface as _interface
from .fields import network as _network
from .vpn_model import (
    IpsecSettings,
    RemoteAccess,
    VpnGateway,
    VpnUser,
    parse_gateway,
    parse_ipsec,
    parse_remote_access,
    parse_user,
)

T = TypeVar("T")
PROTOCOLS = ("tcp", "udp")
FIREWALL_PROTOCOLS = ("tcp", "udp", "icmp", "all")
USER_DATA_MAX = 32 * 1024
MAX_ACL_NUMBER = 65535  # rule numbers of a network ACL list
MAX_ACL_RULES = 5000  # rules in one list
METADATA_KEY = HOSTNAME  # instance-id, local-hostname, availability-zone, ...
DHCP_OPTION_NAMES = {
    # dnsmasq option name -> kind of value, so nothing but checked addresses and names reaches its files
    "router": "addresses",
    "dns-server": "addresses",
    "ntp-server": "addresses",
    "domain-name": "domain",
    "domain-search": "domains",
    "mtu": "mtu",
}


@dataclass(frozen=True)
class ControlInterface:
    device: str
    address: ipaddress.IPv4Interface


@dataclass(frozen=True)
class GuestNetwork:
    device: str
    gateway: ipaddress.IPv4Interface  # the router's address on the guest network, with its prefix
    dns: tuple[ipaddress.IPv4Address, ...] = ()  # upstream resolvers dnsmasq forwards to
    domain: str = "cloud.internal"
    lease_seconds: int = 86400
    acl: str | None = None  # the network ACL list of a VPC tier; None: a guest network of a non-VPC router


@dataclass(frozen=True)
class PublicInterface:
    device: str
    addresses: tuple[ipaddress.IPv4Interface, ...]
    gateway: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class Interfaces:
    control: ControlInterface | None = None
    guests: tuple[GuestNetwork, ...] = ()
    public: tuple[PublicInterface, ...] = ()

    @property
    def public_addresses(self) -> set[ipaddress.IPv4Address]:
        return {a.ip for p in self.public for a in p.addresses}


@dataclass(frozen=True)
class EgressPolicy:
    default: str = "allow"  # rules in the firewall section with direction egress are the exceptions


@dataclass(frozen=True)
class SourceNat:
    guest_cidr: ipaddress.IPv4Network
    public_ip: ipaddress.IPv4Address


@dataclass(frozen=True)
class FirewallRule:
    direction: str  # ingress: to a public address; egress: from guests outwards
    protocol: str
    cidrs: tuple[ipaddress.IPv4Network, ...]  # ingress: sources; egress: destinations
    ports: PortRange | None = None
    public_ip: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class PortForward:
    public_ip: ipaddress.IPv4Address
    protocol: str
    public_ports: PortRange
    vm_ip: ipaddress.IPv4Address
    vm_ports: PortRange


@dataclass(frozen=True)
class StaticNat:
    public_ip: ipaddress.IPv4Address
    vm_ip: ipaddress.IPv4Address


@dataclass(frozen=True)
class DhcpEntry:
    mac: str
    ip: ipaddress.IPv4Address
    hostname: str
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dnsmasq option name -> tuple of checked values


@dataclass(frozen=True)
class VmData:
    vm_ip: ipaddress.IPv4Address
    metadata: dict[str, str] = field(default_factory=dict)  # key -> value, served under /latest/meta-data/
    public_keys: tuple[str, ...] = ()
    user_data: bytes | None = None
    password: str | None = None


@dataclass(frozen=True)
class Backend:
    ip: ipaddress.IPv4Address
    port: int


@dataclass(frozen=True)
class HealthCheck:
    interval_ms: int = 2000
    rise: int = 2
    fall: int = 3
    http_path: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    name: str
    public_ip: ipaddress.IPv4Address
    port: int
    backends: tuple[Backend, ...]
    mode: str = "tcp"
    algorithm: str = "roundrobin"
    health_check: HealthCheck | None = None
    sticky: bool = False


@dataclass(frozen=True)
class AclRule:
    """One numbered rule of a network ACL list. Ingress is traffic into the network the list is attached
    to (cidrs are its sources), egress traffic out of it (cidrs are its destinations)."""

    number: int
    action: str  # allow or deny
    protocol: str
    traffic_type: str
    cidrs: tuple[ipaddress.IPv4Network, ...]
    ports: PortRange | None = None  # tcp/udp; None: every port
    icmp_type: int | None = None  # icmp; None: every type
    icmp_code: int | None = None  # icmp with a type; None: every code


@dataclass(frozen=True)
class NetworkAcl:
    name: str
    rules: tuple[AclRule, ...] = ()  # in number order


@dataclass(frozen=True)
class StaticRoute:
    cidr: ipaddress.IPv4Network
    next_hop: ipaddress.IPv4Address


@dataclass(frozen=True)
class PrivateGateway:
    """A VPC router's interface towards a customer's own network, filtered by its own ACL list."""

    device: str
    address: ipaddress.IPv4Interface
    acl: str
    source_nat: bool = False  # traffic from the tiers leaves with the gateway's address


@dataclass(frozen=True)
class Member:
    """One router of a redundant pair: its host name (how a router finds itself), its address on the sync
    link, and its VRRP priority."""

    name: str
    sync_address: ipaddress.IPv4Interface
    priority: int


@dataclass(frozen=True)
class Redundancy:
    """A redundant pair: both members run the same state; the guest gateways and public addresses are
    VRRP virtual addresses held by the MASTER alone (see vr/redundancy.py)."""

    router_id: int  # the VRRP virtual router id, unique among pairs sharing a link
    sync_device: str  # the link between the two members: VRRP adverts and conntrackd sync
    members: tuple[Member, Member]
    advert_ms: int = 500

    @property
    def master_address(self) -> ipaddress.IPv4Interface:
        """The MASTER's address on the sync link: its highest host. keepalived holds it (it wants at least
        one address of its own); the addresses that carry traffic are moved by vr-vrrp."""
        network = self.members[0].sync_address.network
        return ipaddress.IPv4Interface(f"{network.broadcast_address - 1}/{network.prefixlen}")


@dataclass(frozen=True)
class RouterState:
    interfaces: Interfaces = Interfaces()
    egress_policy: EgressPolicy = EgressPolicy()
    source_nat: tuple[SourceNat, ...] = ()
    firewall: tuple[FirewallRule, ...] = ()
    port_forwarding: tuple[PortForward, ...] = ()
    static_nat: tuple[StaticNat, ...] = ()
    dhcp: tuple[DhcpEntry, ...] = ()
    vm_data: tuple[VmData, ...] = ()
    load_balancer: tuple[LoadBalancer, ...] = ()
    network_acls: tuple[NetworkAcl, ...] = ()
    static_routes: tuple[StaticRoute, ...] = ()
    private_gateways: tuple[PrivateGateway, ...] = ()
    redundancy: Redundancy | None = None
    ipsec: IpsecSettings = IpsecSettings()
    vpn_gateways: tuple[VpnGateway, ...] = ()
    remote_access: RemoteAccess = RemoteAccess()
    vpn_users: tuple[VpnUser, ...] = ()

    def connected(self) -> list[tuple[str, ipaddress.IPv4Network]]:
        """(device, network) of every network the router has an address in: where a next hop may be."""
        networks = [(g.device, g.gateway.network) for g in self.interfaces.guests]
        networks += [(p.device, a.network) for p in self.interfaces.public for a in p.addresses]
        return networks + [(g.device, g.address.network) for g in self.private_gateways]


def _parsed(fields: Fields, build: Callable[..., T], *values: object) -> T | None:
    """Finish reading an object; build the dataclass from `values` only when every field was valid (a field
    that was not is None, which the dataclass's types do not allow: hence the untyped `build`)."""
    return build(*values) if fields.finish() else None


def parse_control(data: object, where: str, problems: list[Problem]) -> ControlInterface | None:
    f = Fields(data, where, problems)
    device, address = f.text("device", pattern=DEVICE, what="device name"), f.interface("address")
    return _parsed(f, ControlInterface, device, address)


def parse_guest(data: object, where: str, problems: list[Problem]) -> GuestNetwork | None:
    f = Fields(data, where, problems)
    device = f.text("device", pattern=DEVICE, what="device name")
    gateway = f.interface("gateway")
    dns = f.values("dns", _address, max_items=4)
    domain = f.text("domain", pattern=DOMAIN, what="domain", default="cloud.internal")
    lease = f.integer("lease_seconds", 120, 365 * 86400, default=86400)
    acl = f.text("acl", pattern=NAME, what="ACL list name", default=None)
    return _parsed(f, GuestNetwork, device, gateway, dns, domain, lease, acl)


def parse_public(data: object, where: str, problems: list[Problem]) -> PublicInterface | None:
    f = Fields(data, where, problems)
    device = f.text("device", pattern=DEVICE, what="device name")
    addresses = f.values("addresses", _interface, default=None, max_items=256)
    gateway = f.address("gateway", default=None)
    if addresses == ():
        f.problem(f"{where}.addresses", "needs at least one address")
    return _parsed(f, PublicInterface, device, addresses, gateway)


def parse_interfaces(data: object, where: str, problems: list[Problem]) -> Interfaces | None:
    f = Fields(data, where, problems)
    control = f.object("control", parse_control)
    guests = f.items("guests", parse_guest, max_items=64)
    public = f.items("public", parse_public, max_items=16)
    return _parsed(f, Interfaces, control, guests, public)


def parse_egress_policy(data: object, where: str, problems: list[Problem]) -> EgressPolicy | None:
    f = Fields(data, where, problems)
    default = f.choice("default", ("allow", "deny"))
    return _parsed(f, EgressPolicy, default)


def parse_source_nat(data: object, where: str, problems: list[Problem]) -> SourceNat | None:
    f = Fields(data, where, problems)
    cidr, public_ip = f.network("guest_cidr"), f.address("public_ip")
    return _parsed(f, SourceNat, cidr, public_ip)


def parse_firewall(data: object, where: str, problems: list[Problem]) -> FirewallRule | None:
    f = Fields(data, where, problems)
    direction = f.choice("direction", ("ingress", "egress"))
    protocol = f.choice("protocol", FIREWALL_PROTOCOLS)
    cidrs = f.values("cidrs", _network, default=None, max_items=256)
    ports = f.ports("ports", default=None)
    public_ip = f.address("public_ip", default=None)
    if direction == "ingress" and public_ip is None and f.ok:
        f.problem(f"{where}.public_ip", "is required for an ingress rule")
    if direction == "egress" and public_ip is not None:
        f.problem(f"{where}.public_ip", "applies to ingress rules only")
    if protocol in ("tcp", "udp") and ports is None and f.ok:
        f.problem(f"{where}.ports", f"is required for protocol {protocol}")
    if protocol in ("icmp", "all") and ports is not None:
        f.problem(f"{where}.ports", f"does not apply to protocol {protocol}")
    return _parsed(f, FirewallRule, direction, protocol, cidrs, ports, public_ip)


def parse_port_forward(data: object, where: str, problems: list[Problem]) -> PortForward | None:
    f = Fields(data, where, problems)
    public_ip, protocol = f.address("public_ip"), f.choice("protocol", PROTOCOLS)
    public_ports, vm_ip, vm_ports = f.ports("public_ports"), f.address("vm_ip"), f.ports("vm_ports")
    if public_ports and vm_ports and len(public_ports) != len(vm_ports):
        f.problem(f"{where}.vm_ports", f"range {vm_ports} is not as long as public_ports {public_ports}")
    return _parsed(f, PortForward, public_ip, protocol, public_ports, vm_ip, vm_ports)


def parse_static_nat(data: object, where: str, problems: list[Problem]) -> StaticNat | None:
    f = Fields(data, where, problems)
    public_ip, vm_ip = f.address("public_ip"), f.address("vm_ip")
    return _parsed(f, StaticNat, public_ip, vm_ip)


def parse_dhcp(data: object, where: str, problems: list[Problem]) -> DhcpEntry | None:
    f = Fields(data, where, problems)
    mac, ip = f.mac("mac"), f.address("ip")
    hostname = f.text("hostname", pattern=HOSTNAME, what="hostname")
    options = f.mapping("options", HOSTNAME, lambda v: v, max_items=len(DHCP_OPTION_NAMES))
    options = {name: _dhcp_option(f, f"{where}.options.{name}", name, v) for name, v in options.items()}
    return _parsed(f, DhcpEntry, mac, ip, hostname, options)


def _dhcp_option(f: Fields, where: str, name: str, value: object) -> tuple[str, ...]:
    """Option values are kept as a tuple of checked strings, the form they are persisted in."""
    kind = DHCP_OPTION_NAMES.get(name, "")  # "": not a supported option
    values = value if isinstance(value, list) else [value]
    check = {
        "addresses": lambda v: str(_address(v)),
        "domain": lambda v: text(v, pattern=DOMAIN, what="domain"),
        "domains": lambda v: text(v, pattern=DOMAIN, what="domain"),
        "mtu": lambda v: str(integer(int(v) if isinstance(v, str) and v.isdigit() else v, 576, 9216)),
    }.get(kind)
    try:
        if check is None:
            raise ValueError(f"is not a supported option ({', '.join(sorted(DHCP_OPTION_NAMES))})")
        if not 1 <= len(values) <= (8 if kind in ("addresses", "domains") else 1):
            raise ValueError("has the wrong number of values")
        return tuple(check(v) for v in values)
    except (ValueError, TypeError) as err:
        f.problem(where, str(err))
        return ()


def parse_vm_data(data: object, where: str, problems: list[Problem]) -> VmData | None:
    f = Fields(data, where, problems)
    vm_ip = f.address("vm_ip")
    metadata = f.mapping("metadata", METADATA_KEY, lambda v: text(v, max_len=4096))
    keys = f.values("public_keys", lambda v: text(v, max_len=16384, what="public key"), max_items=32)
    user_data = f.base64("user_data", USER_DATA_MAX, default=None)
    password = f.text("password", max_len=128, default=None)
    return _parsed(f, VmData, vm_ip, metadata, keys, user_data, password)


def parse_backend(data: object, where: str, problems: list[Problem]) -> Backend | None:
    f = Fields(data, where, problems)
    ip, port = f.address("ip"), f.integer("port", 1, 65535)
    return _parsed(f, Backend, ip, port)


def parse_health_check(data: object, where: str, problems: list[Problem]) -> HealthCheck | None:
    f = Fields(data, where, problems)
    interval = f.integer("interval_ms", 100, 3_600_000, default=2000)
    rise, fall = f.integer("rise", 1, 100, default=2), f.integer("fall", 1, 100, default=3)
    path = f.text("http_path", max_len=1024, default=None)
    if path is not None and (not path.startswith("/") or any(c in path for c in " \t\"'\\#")):
        f.problem(f"{where}.http_path", "must start with / and contain no spaces, quotes, # or backslashes")
    return _parsed(f, HealthCheck, interval, rise, fall, path)


def parse_load_balancer(data: object, where: str, problems: list[Problem]) -> LoadBalancer | None:
    f = Fields(data, where, problems)
    name = f.text("name", pattern=NAME, what="name (letters, digits, _ and -)")
    public_ip, port = f.address("public_ip"), f.integer("port", 1, 65535)
    backends = f.items("backends", parse_backend, default=None, max_items=1000)
    mode = f.choice("mode", ("tcp", "http"), default="tcp")
    algorithm = f.choice("algorithm", ("roundrobin", "leastconn", "source"), default="roundrobin")
    health = f.object("health_check", parse_health_check)
    sticky = f.boolean("sticky", default=False)
    if backends == ():
        f.problem(f"{where}.backends", "needs at least one backend")
    return _parsed(f, LoadBalancer, name, public_ip, port, backends, mode, algorithm, health, sticky)


def parse_acl_rule(data: object, where: str, problems: list[Problem]) -> AclRule | None:
    f = Fields(data, where, problems)
    number = f.integer("number", 1, MAX_ACL_NUMBER)
    action = f.choice("action", ("allow", "deny"))
    protocol = f.choice("protocol", FIREWALL_PROTOCOLS)
    traffic_type = f.choice("traffic_type", ("ingress", "egress"))
    cidrs = f.values("cidrs", _network, default=None, max_items=256)
    ports = f.ports("ports", default=None)
    icmp_type = f.integer("icmp_type", 0, 255, default=None)
    icmp_code = f.integer("icmp_code", 0, 255, default=None)
    if ports is not None and protocol not in PROTOCOLS:
        f.problem(f"{where}.ports", f"does not apply to protocol {protocol}")
    for name, value in (("icmp_type", icmp_type), ("icmp_code", icmp_code)):
        if value is not None and protocol != "icmp":
            f.problem(f"{where}.{name}", f"does not apply to protocol {protocol}")
    if icmp_code is not None and icmp_type is None:
        f.problem(f"{where}.icmp_code", "needs an icmp_type")
    if cidrs == () and f.ok:
        f.problem(f"{where}.cidrs", "needs at least one CIDR (0.0.0.0/0 for any)")
    return _parsed(f, AclRule, number, action, protocol, traffic_type, cidrs, ports, icmp_type, icmp_code)


def parse_network_acl(data: object, where: str, problems: list[Problem]) -> NetworkAcl | None:
    f = Fields(data, where, problems)
    name = f.text("name", pattern=NAME, what="name (letters, digits, _ and -)")
    rules = f.items("rules", parse_acl_rule, max_items=MAX_ACL_RULES)
    first: dict[int, int] = {}  # rule number -> index of the rule that has it
    for i, rule in enumerate(rules):
        if rule.number in first:
            error = f"{rule.number} is already the number of rules[{first[rule.number]}]"
            f.problem(f"{where}.rules[{i}].number", error)
        first.setdefault(rule.number, i)
    return _parsed(f, NetworkAcl, name, tuple(sorted(rules, key=lambda r: r.number)))


def parse_static_route(data: object, where: str, problems: list[Problem]) -> StaticRoute | None:
    f = Fields(data, where, problems)
    cidr, next_hop = f.network("cidr"), f.address("next_hop")
    return _parsed(f, StaticRoute, cidr, next_hop)


def parse_private_gateway(data: object, where: str, problems: list[Problem]) -> PrivateGateway | None:
    f = Fields(data, where, problems)
    device = f.text("device", pattern=DEVICE, what="device name")
    address = f.interface("address")
    acl = f.text("acl", pattern=NAME, what="ACL list name")
    source_nat = f.boolean("source_nat", default=False)
    return _parsed(f, PrivateGateway, device, address, acl, source_nat)


def parse_member(data: object, where: str, problems: list[Problem]) -> Member | None:
    f = Fields(data, where, problems)
    name = f.text("name", pattern=HOSTNAME, what="host name")
    sync_address, priority = f.interface("sync_address"), f.integer("priority", 1, 254)
    return _parsed(f, Member, name, sync_address, priority)


def parse_redundancy(data: object, where: str, problems: list[Problem]) -> Redundancy | None:
    f = Fields(data, where, problems)
    router_id = f.integer("router_id", 1, 255)
    sync_device = f.text("sync_device", pattern=DEVICE, what="device name")
    members = f.items("members", parse_member, default=None)
    # keepalived counts adverts in centiseconds; below 100 ms a busy router misses them and flaps
    advert_ms = f.integer("advert_ms", 100, 10_000, default=500)
    if advert_ms is not None and advert_ms % 10:
        f.problem(f"{where}.advert_ms", f"{advert_ms} is not a multiple of 10 ms")
    if members is not None and len(members) != 2 and f.ok:
        f.problem(f"{where}.members", f"a pair has two members, got {len(members)}")
    if members and len(members) == 2 and f.ok:
        _check_members(f, f"{where}.members[1]", *members)
    return _parsed(f, Redundancy, router_id, sync_device, members, advert_ms)


def _check_members(f: Fields, where: str, first: Member, second: Member) -> None:
    """The second member is the one named: it is the one that clashes with the first."""
    if first.name == second.name:
        f.problem(f"{where}.name", f"{second.name} is the name of both members")
    if first.sync_address.ip == second.sync_address.ip:
        f.problem(f"{where}.sync_address", f"{second.sync_address.ip} is the sync address of both members")
    elif first.sync_address.network != second.sync_address.network:
        f.problem(f"{where}.sync_address", f"{second.sync_address} is not in {first.sync_address.network}")
    for at, member in ((where.replace("[1]", "[0]"), first), (where, second)):
        if member.sync_address.ip >= member.sync_address.network.broadcast_address - 1:
            taken = "the highest host of the sync network is the MASTER's"
            f.problem(f"{at}.sync_address", f"{member.sync_address.ip} is taken: {taken}")
    if first.priority == second.priority:
        f.problem(f"{where}.priority", f"{second.priority} is the priority of both members (VRRP needs two)")


@dataclass(frozen=True)
class Section:
    """One kind of thing in the state: how to parse an item, which fields identify it for add/remove
    (none for a section that is one object rather than a list), and which subsystems it feeds."""

    name: str
    parse: Callable[[Any, str, list[Problem]], object]  # (JSON value, where, problems) -> item or None
    key_fields: tuple[str, ...]
    subsystems: tuple[str, ...]

    def key(self, item: object) -> tuple[object, ...]:
        return tuple(getattr(item, name) for name in self.key_fields)


ALL_SUBSYSTEMS = ("interfaces", "nftables", "redundancy", "dnsmasq", "haproxy", "metadata", "vpn")
SECTIONS = {
    s.name: s
    for s in (
        Section("interfaces", parse_interfaces, (), ALL_SUBSYSTEMS),
        Section("egress_policy", parse_egress_policy, (), ("nftables",)),
        Section("source_nat", parse_source_nat, ("guest_cidr",), ("nftables",)),
        Section("firewall", parse_firewall, ("direction", "public_ip", "protocol", "ports", "cidrs"), ("nftables",)),
        Section("port_forwarding", parse_port_forward, ("public_ip", "protocol", "public_ports"), ("nftables",)),
        Section("static_nat", parse_static_nat, ("public_ip",), ("nftables",)),
        Section("dhcp", parse_dhcp, ("mac",), ("dnsmasq",)),
        Section("vm_data", parse_vm_data, ("vm_ip",), ("metadata",)),
        Section("load_balancer", parse_load_balancer, ("name",), ("haproxy", "nftables")),
        Section("network_acls", parse_network_acl, ("name",), ("nftables",)),
        Section("static_routes", parse_static_route, ("cidr",), ("interfaces",)),
        Section("private_gateways", parse_private_gateway, ("device",), ("interfaces", "nftables")),
        Section("redundancy", parse_redundancy, (), ("interfaces", "nftables", "redundancy")),
        Section("ipsec", parse_ipsec, (), ("vpn", "nftables")),
        Section("vpn_gateways", parse_gateway, ("name",), ("vpn", "nftables")),
        Section("remote_access", parse_remote_access, (), ("vpn", "nftables")),
        Section("vpn_users", parse_user, ("name",), ("vpn",)),
    )
}
