"""What a StatsD server would receive: lines on a UDP listener, counters summed."""

import socket
import time


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
