"""DHCP and DNS for the guest networks with dnsmasq: a main config (changes need a restart) and the hosts,
options and names files that dnsmasq re-reads on SIGHUP, which is all a per-VM change touches.
The lease file stays where it is across applies and restarts.
"""

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout
from .model import DhcpEntry, RouterState
from .render import Lines
from .render import render as render_template
from .run import run

NAME = "dnsmasq"
SERVICE = "dnsmasq"

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    guests = state.interfaces.guests
    domains = {g.gateway.network: g.domain for g in guests}
    upstream = sorted({str(ip) for g in guests for ip in g.dns})
    return {
        layout.dnsmasq_conf: render_template("dnsmasq.conf.j2", guests=guests, upstream=upstream, layout=layout),
        layout.dhcp_hosts: _hosts(state.dhcp),
        layout.dhcp_options: _options(state.dhcp),
        layout.dns_hosts: _names(state.dhcp, tuple(domains.items())),
    }


def _tag(entry: DhcpEntry) -> str:
    return "vm" + entry.mac.replace(":", "")


def _host_line(entry: DhcpEntry, _: object) -> str:
    tag = f"set:{_tag(entry)}," if entry.options else ""
    return f"{entry.mac},{tag}{entry.ip},{entry.hostname}\n"


def _option_lines(entry: DhcpEntry, _: object) -> str:
    return "".join(
        f"tag:{_tag(entry)},option:{name},{','.join(values)}\n" for name, values in sorted(entry.options.items())
    )


def _name_line(entry: DhcpEntry, domains: tuple[tuple[ipaddress.IPv4Network, str], ...]) -> str:
    domain = next((d for net, d in domains if entry.ip in net), None)
    names = f"{entry.hostname}.{domain} {entry.hostname}" if domain else entry.hostname
    return f"{entry.ip} {names}\n"


_hosts, _options, _names = Lines(_host_line), Lines(_option_lines), Lines(_name_line)


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    """`dnsmasq --test` reads the main config only, not the hosts, options and names files (written from
    validated data): a change to those alone has nothing for it to check."""
    if change.layout.dnsmasq_conf in change.changed:
        run(["dnsmasq", "--test", f"--conf-file={staged[change.layout.dnsmasq_conf]}"])


def activate(change: "Activation") -> str | None:
    """Restart for a new main config (or when not running); otherwise SIGHUP when a data file changed."""
    layout, services = change.layout, change.services
    if not change.new.interfaces.guests:
        return services.stop(SERVICE) if services.is_active(SERVICE) else None
    data_files = {layout.dhcp_hosts, layout.dhcp_options, layout.dns_hosts}
    if layout.dnsmasq_conf in change.changed or not services.is_active(SERVICE):
        return services.restart(SERVICE)
    if data_files & change.changed:
        return services.reload(SERVICE)
    return None
