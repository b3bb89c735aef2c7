"""Records every frame seen on some interfaces for a while (a raw AF_PACKET socket, so no tcpdump is
needed): `frame_capture.py SECONDS OUT IFACE...` writes one hex line per frame to OUT. A bridge's own
device sees only what is addressed to it, so name its ports to see what crosses it."""

import socket
import sys
import time

ETH_P_ALL = 0x0003


def capture(seconds: float, out: str, interfaces: set[str]) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    with open(out, "w") as frames:
        print("ready", flush=True)
        while time.monotonic() < deadline:
            try:
                frame, (interface, *_) = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if interface in interfaces:
                frames.write(frame.hex() + "\n")


if __name__ == "__main__":
    capture(float(sys.argv[1]), sys.argv[2], set(sys.argv[3:]))
