#!/usr/bin/env python3
"""A real HTTP upstream with one behaviour per listener, for the balancer's verify.

Every request the server reads to the end of its headers is counted (that is
the moment an app would have incremented a counter), then answered according
to the listener's mode:

  answer  200 {"served_by": ADDR, "count": N}
  drop    close the connection without a response (an app that crashed mid-request)
  hang    keep the connection open and never answer (an app stuck past the read timeout)

GET /__count on any listener returns {"ADDR": N, ...}: the requests each listener
read, the control endpoint itself excluded. Stops by itself after --lifetime seconds.
"""
import argparse
import json
import socket
import threading
import time

counts = {}
counts_lock = threading.Lock()


def read_request_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def respond(conn, body):
    payload = json.dumps(body).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )


def handle(conn, addr, mode, hang_seconds):
    with conn:
        while True:
            request_line = read_request_head(conn)
            if request_line is None:
                return
            if request_line.startswith("GET /__count "):
                with counts_lock:
                    respond(conn, dict(counts))
                continue
            with counts_lock:
                counts[addr] += 1
                count = counts[addr]
            if mode == "drop":
                return
            if mode == "hang":
                time.sleep(hang_seconds)
                return
            respond(conn, {"served_by": addr, "count": count})


def serve(listener, addr, mode, hang_seconds):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn, addr, mode, hang_seconds), daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listeners", nargs="+", metavar="HOST:PORT=MODE")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args()
    for spec in args.listeners:
        addr, mode = spec.split("=")
        if mode not in ("answer", "drop", "hang"):
            parser.error(f"unknown mode {mode!r} in {spec!r}")
        host, port = addr.rsplit(":", 1)
        listener = socket.create_server((host, int(port)), reuse_port=False)
        counts[addr] = 0
        threading.Thread(target=serve, args=(listener, addr, mode, args.hang_seconds), daemon=True).start()
    time.sleep(args.lifetime)


if __name__ == "__main__":
    main()
