"""Serves the published repository over HTTP (loopback by default). It serves through the `public`
symlink, resolved on every request, so each file comes whole from one tree, old or new.
"""

import functools
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vrpipe.errors import VrpipeError

from .config import listen_address

log = logging.getLogger("repo.serve")


class _Handler(SimpleHTTPRequestHandler):
    def send_head(self):  # noqa: ANN201 - the base class's signature
        # Two publishes within one second leave InRelease with the same mtime; answering
        # If-Modified-Since from it would hide the newer one, so always send the file.
        del self.headers["If-Modified-Since"]
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(directory: Path, address: str) -> ThreadingHTTPServer:
    """An HTTP server for directory bound to address (HOST:PORT; port 0 picks a free one)."""
    host, port = listen_address(address)
    if not directory.is_dir():
        raise VrpipeError(f"{directory} does not exist: publish the repository first")
    handler = functools.partial(_Handler, directory=str(directory))
    try:
        return (_Server6 if ":" in host else _Server)((host, port), handler)
    except OSError as e:
        raise VrpipeError(f"cannot listen on {address}: {e.strerror}") from e


@contextmanager
def serving(directory: Path, address: str = "127.0.0.1:0") -> Iterator[str]:
    """Serve directory from a background thread while the block runs; yields the base URL
    (loopback and a free port by default: what builds and tests need for a moment)."""
    server = make_server(directory, address)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = str(server.server_address[0]), server.server_address[1]
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(directory: Path, address: str) -> None:
    """Serve until interrupted (Ctrl-C, or SIGTERM from a service manager)."""
    signal.signal(signal.SIGTERM, _interrupt)
    server = make_server(directory, address)
    host, port = str(server.server_address[0]), server.server_address[1]
    log.info("serving %s on http://%s:%d/ (Ctrl-C stops)", directory, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")  # Ctrl-C and SIGTERM are the normal way to stop a server
    finally:
        server.server_close()
