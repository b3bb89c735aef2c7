"""The router's health report (vr-health): engine version, the persisted state's size, which services
run that the state needs, and how many elements each nftables set and map holds. "ok" is the verdict.
"""

from . import __version__, dnsmasq, haproxy, metadata, nftables
from .model import SECTIONS
from .run import CommandFailed, run


def report(layout, services, state):
    needed = {
        dnsmasq.SERVICE: bool(state.interfaces.guests),
        metadata.SERVICE: bool(state.interfaces.guests),
        haproxy.SERVICE: bool(state.load_balancer),
    }
    running = {name: services.is_active(name) for name in needed}
    try:
        elements, table = nftables.counts(), True
    except CommandFailed:
        elements, table = {}, False
    persisted = layout.state.exists()
    problems = [f"{name} is not running" for name, needed_ in needed.items() if needed_ and not running[name]]
    if persisted and not table:
        problems.append("the router's nftables table is missing")
    return {
        "ok": not problems,
        "problems": problems,
        "version": __version__,
        "versions": tool_versions(),
        "services": {name: "active" if running[name] else "inactive" for name in needed},
        "state": {name: len(getattr(state, name)) for name, s in SECTIONS.items() if s.key_fields},
        "nftables": elements,
    }


def tool_versions():
    """The engine's version and the first line each tool prints about its own version."""
    versions = {"vr-scripts": __version__}
    for name, argv in (
        ("nftables", ["nft", "--version"]),
        ("dnsmasq", ["dnsmasq", "--version"]),
        ("haproxy", ["haproxy", "-v"]),
    ):
        try:
            versions[name] = run(argv, timeout=10).splitlines()[0].strip()
        except (CommandFailed, OSError, IndexError):
            versions[name] = None
    return versions
