"""DHCP and DNS for the guest networks with dnsmasq: a main config (changes need a restart) and the hosts,
options and names files that dnsmasq re-reads on SIGHUP, which is all a per-VM change touches.
The lease file stays where it is across applies and restarts.
"""

from .render import Lines
from .render import render as render_template
from .run import run

NAME = "dnsmasq"
SERVICE = "dnsmasq"


def render(state, layout):
    guests = state.interfaces.guests
    domains = {g.gateway.network: g.domain for g in guests}
    upstream = sorted({str(ip) for g in guests for ip in g.dns})
    return {
        layout.dnsmasq_conf: render_template("dnsmasq.conf.j2", guests=guests, upstream=upstream, layout=layout),
        layout.dhcp_hosts: _hosts(state.dhcp),
        layout.dhcp_options: _options(state.dhcp),
        layout.dns_hosts: _names(state.dhcp, tuple(domains.items())),
    }


def _tag(entry):
    return "vm" + entry.mac.replace(":", "")


def _host_line(entry, _):
    tag = f"set:{_tag(entry)}," if entry.options else ""
    return f"{entry.mac},{tag}{entry.ip},{entry.hostname}\n"


def _option_lines(entry, _):
    return "".join(
        f"tag:{_tag(entry)},option:{name},{','.join(values)}\n" for name, values in sorted(entry.options.items())
    )


def _name_line(entry, domains):
    domain = next((d for net, d in domains if entry.ip in net), None)
    names = f"{entry.hostname}.{domain} {entry.hostname}" if domain else entry.hostname
    return f"{entry.ip} {names}\n"


_hosts, _options, _names = Lines(_host_line), Lines(_option_lines), Lines(_name_line)


def check(staged, change):
    """`dnsmasq --test` reads the main config only, not the hosts, options and names files (written from
    validated data): a change to those alone has nothing for it to check."""
    if change.layout.dnsmasq_conf in change.changed:
        run(["dnsmasq", "--test", f"--conf-file={staged[change.layout.dnsmasq_conf]}"])


def activate(change):
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
