"""vr-metrics: the router's metrics over HTTP in Prometheus's format (python3-prometheus-client), bound to
the control address only (the persisted state's control interface; re-bound when it changes). The
router's firewall opens the port on the control interface alone, so guests and the outside never reach it.
"""

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, NoReturn

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder

from . import contract, persist, services
from .layout import Layout
from .metrics import ApplyLog, collect

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("vr.metrics")
REBIND_SECONDS = 5  # how soon a new or changed control address is served
KINDS = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}


class RouterCollector:
    """A prometheus_client collector: reads every family afresh on each scrape."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.services = services.for_layout(layout)
        self.apply_log = ApplyLog(layout.log)

    def collect(self) -> "Iterator[Metric]":
        for family in collect(self.layout, self.services, persist.read(self.layout), self.apply_log):
            if family.kind == "histogram":
                metric: Metric = HistogramMetricFamily(family.name, family.help, buckets=family.buckets,
                                               sum_value=family.total)
            else:
                metric = KINDS[family.kind](family.name, family.help, labels=family.labels)
                for labels, value in family.samples:
                    metric.add_metric(list(labels), value)
            yield metric


def handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?")[0] not in ("/", "/metrics"):
                self.send_error(404, "the metrics are at /metrics")
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(registry)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    return Handler


def control_address(layout: Layout) -> str | None:
    """The router's control address from the persisted state, or None before the first apply."""
    if not layout.state.exists():
        return None
    control = persist.read(layout).interfaces.control
    return str(control.address.ip) if control else None


def serve(layout: Layout, port: int) -> NoReturn:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(layout))
    bound: str | None
    server: ThreadingHTTPServer | None
    state_mtime: int | None
    bound, server, state_mtime = None, None, None
    while True:
        mtime = layout.state.stat().st_mtime_ns if layout.state.exists() else None
        address = control_address(layout) if mtime != state_mtime else bound
        state_mtime = mtime
        if address != bound:
            if server is not None:
                server.shutdown()
                server.server_close()
                server = None
            if address is not None:
                try:
                    server = ThreadingHTTPServer((address, port), handler(registry))
                except OSError as err:  # the address is not up yet: try again
                    log.warning("cannot listen on %s:%d: %s", address, port, err)
                    state_mtime, address = None, None
                else:
                    threading.Thread(target=server.serve_forever, daemon=True).start()
                    log.warning("serving metrics on http://%s:%d/metrics", address, port)
            bound = address
        time.sleep(REBIND_SECONDS)


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="vr-metrics", description=__doc__)
    parser.add_argument("--port", type=int, default=contract.METRICS_PORT, help="TCP port on the control address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="vr-metrics: %(message)s")
    serve(Layout.from_env(), args.port)
