"""Load balancing with haproxy in master-worker mode: haproxy.cfg rendered whole from the state's load
balancers, checked with `haproxy -c`, and taken into use with a seamless reload so no connection is refused.
haproxy runs only while there is something to balance.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout
from .model import RouterState
from .render import render as render_template
from .run import run

NAME = "haproxy"
SERVICE = "haproxy"

if TYPE_CHECKING:
    from .apply import Activation  # apply imports this module


def render(state: RouterState, layout: Layout) -> dict[Path, str]:
    config = render_template("haproxy.cfg.j2", balancers=state.load_balancer, stats_socket=layout.haproxy_socket)
    return {layout.haproxy_cfg: config}


def check(staged: Mapping[Path, Path], change: "Activation") -> None:
    run(["haproxy", "-c", "-q", "-f", str(staged[change.layout.haproxy_cfg])])


def activate(change: "Activation") -> str | None:
    services = change.services
    if not change.new.load_balancer:
        return services.stop(SERVICE) if services.is_active(SERVICE) else None
    if not services.is_active(SERVICE):
        return services.start(SERVICE)
    if change.layout.haproxy_cfg in change.changed:
        return services.reload(SERVICE)
    return None
