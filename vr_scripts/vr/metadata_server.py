"""The metadata HTTP service: listens on each guest gateway address, port 80, and answers a VM's
/latest/meta-data/..., /latest/user-data and /latest/password with that VM's own data, chosen by the
request's source address (and, where DHCP knows the VM, checked against its MAC in the neighbour table).
"""

import argparse
import base64
import hashlib
import json
import logging
import os
import signal
import socket
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
LISTEN_FDS_START = 3  # the first file descriptor systemd hands over (sd_listen_fds)


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
        timeout = 10  # seconds a client may take to send its request: a stop waits for no idle connection

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
    daemon_threads = False  # server_close() waits for the requests being answered: a stop cuts none short
    request_queue_size = 128  # connections waiting while the service restarts (on the socket systemd keeps)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the address's DNS name: a query to a resolver the router may
        # not reach, which stalls start-up. The name is never used, so bind without it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = cast(tuple[str, int], self.server_address)[:2]  # an AF_INET server's


def kept_sockets() -> dict[tuple[str, int], socket.socket]:
    """The listening sockets systemd kept for this service across its restart (its file descriptor store,
    handed back as LISTEN_FDS), by address: connections made meanwhile wait in them instead of being refused."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    kept = {}
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(os.environ.get("LISTEN_FDS", "0"))):
        sock = socket.socket(fileno=fd)
        kept[cast(tuple[str, int], sock.getsockname())[:2]] = sock
    return kept


def notify(message: str, fds: list[int] | None = None) -> None:
    """A message to systemd (sd_notify), with file descriptors for its store; nothing outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect("\0" + address[1:] if address[0] == "@" else address)  # "@": an abstract address
            socket.send_fds(sock, [message.encode()], fds or [])
    except OSError as err:  # without the store a restart refuses requests for a moment; serving goes on
        log.warning("could not tell systemd %r: %s", message.replace("\n", " "), err)


def _fd_name(address: tuple[str, int]) -> str:
    return f"listen-{address[0]}-{address[1]}"


def listeners(addresses: list[str], port: int, handler: type[BaseHTTPRequestHandler]) -> list[Server]:
    """A server per address, on the socket systemd kept where there is one; a new socket goes into its
    store, and a kept one no longer wanted is closed and dropped from it."""
    kept, servers = kept_sockets(), []
    for address in ((a, port) for a in addresses):
        sock = kept.pop(address, None)
        if sock is None:
            server = Server(address, handler)
            notify(f"FDSTORE=1\nFDNAME={_fd_name(address)}", [server.socket.fileno()])
        else:
            server = Server(address, handler, bind_and_activate=False)
            server.socket.close()
            server.socket, (server.server_name, server.server_port) = sock, address
        servers.append(server)
    for address, sock in kept.items():
        notify(f"FDSTOREREMOVE=1\nFDNAME={_fd_name(address)}")
        sock.close()
    return servers


def serve(layout: Layout, port: int) -> None:
    store = MetadataStore(layout)
    servers = listeners(store.current()["listen"], port, make_handler(store))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    notify("READY=1")  # Type=notify: `systemctl start` returns once every address listens
    log.info("serving metadata on %s port %d", ", ".join(store.current()["listen"]) or "nothing", port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    for server in servers:  # requests not yet taken wait in the sockets systemd keeps, for the next process
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vr-metadata", description="Serve VM metadata on the guest gateways.")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vr-metadata %(message)s")
    serve(Layout.from_env(), args.port)


if __name__ == "__main__":
    main()
