"""A tiny TCP peer for traffic tests: `tcp_answer.py PORT TEXT` answers every connection with TEXT and the
client's address; `tcp_answer.py --connect HOST PORT TIMEOUT` prints what the server answered."""

import socket
import sys


def serve(port, text):
    server = socket.create_server(("0.0.0.0", port))
    while True:
        conn, (peer, _) = server.accept()
        with conn:
            conn.sendall(f"{text} from {peer}\n".encode())


def connect(host, port, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            print(conn.recv(200).decode().strip())
    except OSError as err:
        print(f"connect failed: {err}", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1] == "--connect":
        connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        serve(int(sys.argv[1]), sys.argv[2])
