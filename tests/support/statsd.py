"""What a StatsD server would receive: lines on a UDP listener, counters summed."""

import socket
import time


def udp_listener(timeout, host="127.0.0.1"):
    """A UDP socket on a free port of `host` (IPv4 or IPv6), as a StatsD server would
    listen; recv() gives up after `timeout` seconds."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(timeout)
    return sock


def received_lines(listener, at_least, within=5.0):
    """StatsD lines on a UDP listener until at least `at_least` came (the service sends
    once a second), then one more second and a half for the last packets."""
    lines = []
    end = time.monotonic() + within
    while time.monotonic() < end and len(lines) < at_least:
        try:
            lines += listener.recv(65536).decode().splitlines()
        except socket.timeout:
            pass
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            lines += listener.recv(65536).decode().splitlines()
        except socket.timeout:
            pass
    return lines


def counters_from(lines):
    """StatsD counter lines summed by name."""
    counters = {}
    for line in lines:
        name, _, rest = line.partition(":")
        value, _, kind = rest.partition("|")
        if kind == "c":
            counters[name] = counters.get(name, 0) + int(value)
    return counters
