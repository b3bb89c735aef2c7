"""The metadata HTTP service: listens on each guest gateway address, port 80, and answers a VM's
/latest/meta-data/..., /latest/user-data and /latest/password with that VM's own data, chosen by the
request's source address (and, where DHCP knows the VM, checked against its MAC in the neighbour table).
"""

import argparse
import base64
import hashlib
import json
import logging
import socketserver
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from . import persist
from .layout import Layout

log = logging.getLogger("vr.metadata")


class MetadataStore:
    """The rendered metadata file, re-read when its mtime changes, and the record of served passwords."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.lock = threading.Lock()
        self.mtime: int | None = None
        self.document: dict[str, Any] = {"listen": [], "vms": {}}

    def current(self) -> dict[str, Any]:
        with self.lock:
            try:
                mtime = self.layout.metadata.stat().st_mtime_ns
            except FileNotFoundError:
                return self.document
            if mtime != self.mtime:
                self.document = json.loads(self.layout.metadata.read_text())
                self.mtime = mtime
            return self.document

    def take_password(self, vm_ip: str, password: str) -> str | None:
        """The password the first time it is asked for; None once it has been served."""
        digest = hashlib.sha256(f"{vm_ip}\0{password}".encode()).hexdigest()
        with self.lock:
            path = self.layout.passwords_served
            served = json.loads(path.read_text()) if path.exists() else {}
            if served.get(vm_ip) == digest:
                return None
            served[vm_ip] = digest
            persist.write_atomically(path, json.dumps(served))
            return password


def neighbour_mac(ip: str) -> str | None:
    """The MAC the kernel has learnt for `ip`, from the ARP table of this network namespace."""
    for line in Path("/proc/net/arp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == ip and fields[2] != "0x0":  # 0x0: an incomplete entry, no MAC yet
            return fields[3].lower()
    return None


def answer(vm: Mapping[str, Any], path: str, store: MetadataStore, vm_ip: str) -> tuple[HTTPStatus, bytes]:
    """(status, body) for one request of a known VM."""
    meta = vm["meta-data"]
    if path in ("/latest/meta-data", "/latest/meta-data/"):
        names = sorted(meta) + (["public-keys"] if vm["public-keys"] else [])
        return HTTPStatus.OK, "\n".join(names).encode()
    if path == "/latest/meta-data/public-keys" and vm["public-keys"]:
        return HTTPStatus.OK, "\n".join(vm["public-keys"]).encode()
    if path.startswith("/latest/meta-data/") and path.removeprefix("/latest/meta-data/") in meta:
        return HTTPStatus.OK, meta[path.removeprefix("/latest/meta-data/")].encode()
    if path == "/latest/user-data" and "user-data" in vm:
        return HTTPStatus.OK, base64.b64decode(vm["user-data"])
    if path == "/latest/password" and "password" in vm:
        password = store.take_password(vm_ip, vm["password"])
        return HTTPStatus.OK, (password if password is not None else "saved_password").encode()
    return HTTPStatus.NOT_FOUND, b"not found\n"


def make_handler(store: MetadataStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "vr-metadata"

        def do_GET(self) -> None:
            vm_ip = self.client_address[0]
            vm = store.current()["vms"].get(vm_ip)
            if vm is None:
                status, body = HTTPStatus.NOT_FOUND, b"no metadata for this address\n"
            elif vm.get("mac") and neighbour_mac(vm_ip) not in (None, vm["mac"]):
                status, body = HTTPStatus.FORBIDDEN, b"address does not belong to this machine\n"
            else:
                status, body = answer(vm, self.path.split("?", 1)[0], store, vm_ip)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            log.info("%s %s", self.client_address[0], fmt % args)

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the address's DNS name: a query to a resolver the router may
        # not reach, which stalls start-up. The name is never used, so bind without it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = cast(tuple[str, int], self.server_address)[:2]  # an AF_INET server's


def serve(layout: Layout, port: int) -> None:
    store = MetadataStore(layout)
    handler = make_handler(store)
    servers = [Server((address, port), handler) for address in store.current()["listen"]]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    log.info("serving metadata on %s port %d", ", ".join(store.current()["listen"]) or "nothing", port)
    threading.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vr-metadata", description="Serve VM metadata on the guest gateways.")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vr-metadata %(message)s")
    serve(Layout.from_env(), args.port)


if __name__ == "__main__":
    main()
