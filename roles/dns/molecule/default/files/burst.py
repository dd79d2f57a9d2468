"""Sends COUNT queries for NAME (type A) to SERVER over UDP, one after the
other, as fast as the answers come, and prints how many got a full answer
(not truncated, at least one record) within 0.5 s. Standard library only.

    python3 burst.py SERVER NAME COUNT
"""

import socket
import struct
import sys


def query(query_id, name):
    header = struct.pack(">HHHHHH", query_id, 0, 1, 0, 0, 0)
    labels = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack(">HH", 1, 1)


def main():
    server, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    answered = 0
    for query_id in range(count):
        sock.sendto(query(query_id, name), (server, 53))
        try:
            while True:
                reply = sock.recv(4096)
                reply_id, flags, _, answers = struct.unpack(">HHHH", reply[:8])
                if reply_id == query_id:
                    break
        except socket.timeout:
            continue
        truncated = flags & 0x0200
        answered += bool(answers) and not truncated
    print(answered)


if __name__ == "__main__":
    main()
